//! Builds the device crate into PTX (through ptx-builder, the same helper `cargo xtask build-ptx`
//! uses) and hands its paths to `include_str!` in `src/gpu/mod.rs`. With the `tile-sweep` or
//! `timeline` feature the device crate is built with its feature of that name (the
//! measurement-only tiles; the per-tile clock stamps).

use std::path::{Path, PathBuf};

use ptx_builder::{Arch, PtxBuilder};

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    // Share one device build between profiles and with xtask: <target>/ptx/<arch>/.
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let target = if target.is_relative() { root.join(target) } else { target };
    let mut builder = PtxBuilder::new(&root, &target, vec![Arch::Sm80, Arch::Sm90a]);
    for (env, feature) in [("CARGO_FEATURE_TILE_SWEEP", "tile-sweep"), ("CARGO_FEATURE_TIMELINE", "timeline")] {
        if std::env::var_os(env).is_some() {
            builder.features.push(feature.into());
        }
    }
    for input in builder.inputs() {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let mut say = |msg: &str| println!("cargo:warning={msg}");
    match builder.build(&mut say) {
        Ok(built) => {
            for ptx in built {
                let var = format!("FUSED_QKV_PTX_{}", ptx.arch.name().to_uppercase());
                println!("cargo:rustc-env={var}={}", display(&ptx.path));
            }
        }
        Err(e) => {
            eprintln!("error: building the device crate to PTX failed:\n{e}");
            std::process::exit(1);
        }
    }
}

fn display(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
