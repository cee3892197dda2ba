//! The one place that knows how to turn the device crate into PTX, in the role of
//! `cuda_builder::CudaBuilder`; used by the host's `build.rs` and by `cargo xtask build-ptx`.
//!
//! The device crate is compiled by stock rustc's `nvptx64-nvidia-cuda` backend with the nightly
//! pinned in `kernel-gpu/rust-toolchain.toml` and `-Zbuild-std=core`. When that toolchain or one
//! of its components is missing it is installed with `rustup toolchain install --no-self-update`,
//! after saying so. [`check_resources`] runs `ptxas` over the PTX and rejects spills and stack frames;
//! [`sass::check_wait_order`] rejects kernels whose machine code touches memory before it waits
//! for the kernel before it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub mod sass;

/// Failures of the PTX build, each saying what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a usable rust-toolchain.toml: {reason}")]
    Toolchain { path: PathBuf, reason: String },
    #[error("`{command}` could not be started ({source}); is rustup installed and on PATH? See https://rustup.rs")]
    Spawn { command: String, source: std::io::Error },
    #[error("`{command}` failed ({status}){}", if .stderr.is_empty() { String::new() } else { format!(":\n{}", .stderr) })]
    Command { command: String, status: String, stderr: String },
    #[error("the device build finished but wrote no PTX at {0}")]
    MissingPtx(PathBuf),
    #[error("unknown architecture `{0}`; expected one of sm_80, sm_90, sm_90a")]
    UnknownArch(String),
    #[error("ptxas was not found and could not be installed: {0}")]
    NoPtxas(String),
    #[error("nvdisasm was not found and could not be installed: {0}")]
    NoNvdisasm(String),
    #[error("ptxas reported kernels that spill, use a stack frame or serialise wgmma:\n{0}")]
    Resources(String),
    #[error(
        "kernels touch memory before they wait for the kernel before them (see ptx-builder's `sass` module):\n{0}"
    )]
    WaitOrder(String),
}

/// A GPU architecture the PTX is built for (`-C target-cpu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Ampere and later (mma.sync, cp.async, bf16 conversions).
    Sm80,
    /// Hopper.
    Sm90,
    /// Hopper with its arch-specific instructions (wgmma, setmaxnreg); runs only on sm_90.
    Sm90a,
}

impl Arch {
    /// Every architecture, in the order `--arch` lists them.
    pub const ALL: [Arch; 3] = [Arch::Sm80, Arch::Sm90, Arch::Sm90a];

    /// The name rustc and ptxas use.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Sm80 => "sm_80",
            Arch::Sm90 => "sm_90",
            Arch::Sm90a => "sm_90a",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Arch {
    type Err = BuildError;
    fn from_str(s: &str) -> Result<Self, BuildError> {
        Arch::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| BuildError::UnknownArch(s.to_string()))
    }
}

/// How to build the device crate: plain data, as in `cuda_builder::CudaBuilder`.
#[derive(Clone, Debug)]
pub struct PtxBuilder {
    /// The device crate (holds `Cargo.toml` and `rust-toolchain.toml`).
    pub kernel_dir: PathBuf,
    /// Where cargo's build of the device crate and the finished PTX go (`<dir>/<arch>/...`).
    pub target_dir: PathBuf,
    /// Architectures to build, one PTX file each.
    pub archs: Vec<Arch>,
    /// Cargo features of the device crate (e.g. `tile-sweep`); builds with features go to their
    /// own directory (`<dir>/<arch>-<features>/`), so both kinds of PTX can coexist.
    pub features: Vec<String>,
}

/// The pinned device toolchain, as `kernel-gpu/rust-toolchain.toml` states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceToolchain {
    pub channel: String,
    pub components: Vec<String>,
}

impl DeviceToolchain {
    /// Reads `rust-toolchain.toml` in `kernel_dir`.
    pub fn read(kernel_dir: &Path) -> Result<Self, BuildError> {
        let path = kernel_dir.join("rust-toolchain.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| BuildError::Io { path: path.clone(), source })?;
        Self::parse(&text, &path)
    }

    /// Parses the text of a `rust-toolchain.toml` (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, BuildError> {
        let bad = |reason: &str| BuildError::Toolchain { path: path.to_path_buf(), reason: reason.to_string() };
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| bad(&e.to_string()))?;
        let toolchain = table.get("toolchain").and_then(|t| t.as_table()).ok_or_else(|| bad("no [toolchain] table"))?;
        let channel = toolchain.get("channel").and_then(|c| c.as_str()).ok_or_else(|| bad("no channel"))?;
        let components = match toolchain.get("components") {
            None => Vec::new(),
            Some(list) => list
                .as_array()
                .ok_or_else(|| bad("components is not a list"))?
                .iter()
                .map(|c| c.as_str().map(str::to_string).ok_or_else(|| bad("a component is not a string")))
                .collect::<Result<_, _>>()?,
        };
        Ok(DeviceToolchain { channel: channel.to_string(), components })
    }

    /// Installs the toolchain or its missing components, calling `say` first with what it does.
    pub fn ensure_installed(&self, say: &mut dyn FnMut(&str)) -> Result<(), BuildError> {
        let installed = run_capture(rustup().args(["component", "list", "--installed", "--toolchain", &self.channel]));
        let missing: Vec<&String> = match &installed {
            Ok(list) => self
                .components
                .iter()
                .filter(|c| !list.lines().any(|l| l == c.as_str() || l.starts_with(&format!("{c}-"))))
                .collect(),
            Err(_) => self.components.iter().collect(),
        };
        if installed.is_ok() && missing.is_empty() {
            return Ok(());
        }
        let what = if installed.is_err() {
            format!("the device toolchain {} is not installed", self.channel)
        } else {
            format!("the device toolchain {} lacks {:?}", self.channel, missing)
        };
        say(&format!(
            "{what}; installing it with `rustup toolchain install {} --no-self-update` (about 1 minute, once)",
            self.channel
        ));
        let mut cmd = rustup();
        cmd.args(["toolchain", "install", &self.channel, "--no-self-update", "--profile", "minimal"]);
        if !self.components.is_empty() {
            cmd.args(["--component", &self.components.join(",")]);
        }
        run_capture(&mut cmd).map(|_| ())
    }
}

/// A finished PTX file.
#[derive(Clone, Debug)]
pub struct BuiltPtx {
    pub arch: Arch,
    pub path: PathBuf,
}

impl PtxBuilder {
    /// The default layout: device crate `<root>/kernel-gpu`, output under `<target>/ptx`.
    pub fn new(workspace_root: &Path, cargo_target_dir: &Path, archs: Vec<Arch>) -> Self {
        PtxBuilder {
            kernel_dir: workspace_root.join("kernel-gpu"),
            target_dir: cargo_target_dir.join("ptx"),
            archs,
            features: Vec::new(),
        }
    }

    /// Files whose change must rebuild the PTX (for `cargo:rerun-if-changed`): the device crate
    /// and the kernel ABI crate it shares with the host.
    pub fn inputs(&self) -> Vec<PathBuf> {
        let mut inputs: Vec<PathBuf> = ["src", "Cargo.toml", "Cargo.lock", "rust-toolchain.toml"]
            .iter()
            .map(|p| self.kernel_dir.join(p))
            .collect();
        inputs.extend(["src", "Cargo.toml"].iter().map(|p| self.kernel_dir.join("../kernel-abi").join(p)));
        inputs
    }

    /// The directory cargo builds `arch` in.
    fn arch_dir(&self, arch: Arch) -> PathBuf {
        if self.features.is_empty() {
            self.target_dir.join(arch.name())
        } else {
            self.target_dir.join(format!("{}-{}", arch.name(), self.features.join("-")))
        }
    }

    /// Builds every requested architecture; cargo's own fingerprints make an up-to-date build a
    /// no-op. `say` receives progress and installation messages.
    pub fn build(&self, say: &mut dyn FnMut(&str)) -> Result<Vec<BuiltPtx>, BuildError> {
        let toolchain = DeviceToolchain::read(&self.kernel_dir)?;
        toolchain.ensure_installed(say)?;
        self.archs.iter().map(|&arch| self.build_arch(&toolchain, arch)).collect()
    }

    fn build_arch(&self, toolchain: &DeviceToolchain, arch: Arch) -> Result<BuiltPtx, BuildError> {
        let cargo_dir = self.arch_dir(arch);
        let mut cmd = rustup();
        cmd.args(["run", &toolchain.channel, "cargo", "build", "--release", "--locked"])
            .args(["--target", "nvptx64-nvidia-cuda", "-Zbuild-std=core"])
            .arg("--manifest-path")
            .arg(self.kernel_dir.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&cargo_dir);
        if !self.features.is_empty() {
            cmd.args(["--features", &self.features.join(",")]);
        }
        // A build script runs with the outer cargo's environment; none of it may leak into the
        // device build (toolchain, flags, wrappers, target dir).
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let outer = (key.starts_with("CARGO") && key != "CARGO_HOME")
                || key.starts_with("RUSTC")
                || key.starts_with("RUSTDOC")
                || key == "RUSTUP_TOOLCHAIN"
                || key == "RUSTFLAGS";
            if outer {
                cmd.env_remove(key.as_ref());
            }
        }
        // wgmma needs PTX ISA 8.0 and st.async 8.1; rustc's default for sm_90a is older.
        let flags = match arch {
            Arch::Sm90a => format!("-C target-cpu={} -C target-feature=+ptx81", arch.name()),
            _ => format!("-C target-cpu={}", arch.name()),
        };
        cmd.env("RUSTFLAGS", flags);
        run_capture(&mut cmd)?;
        let built = cargo_dir.join("nvptx64-nvidia-cuda/release/kernel_gpu.ptx");
        if !built.is_file() {
            return Err(BuildError::MissingPtx(built));
        }
        let ptx = std::fs::read_to_string(&built).map_err(|source| BuildError::Io { path: built.clone(), source })?;
        let fixed = bound_block_threads(&align_tma_params(&ptx));
        if fixed != ptx {
            std::fs::write(&built, fixed).map_err(|source| BuildError::Io { path: built.clone(), source })?;
        }
        Ok(BuiltPtx { arch, path: built })
    }
}

fn rustup() -> Command {
    // Prefer the rustup that manages the running toolchain; fall back to PATH.
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    match home.map(|h| h.join("bin/rustup")).filter(|p| p.is_file()) {
        Some(path) => Command::new(path),
        None => Command::new("rustup"),
    }
}

fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `cmd`, returning its stdout, or an error carrying its stderr.
fn run_capture(cmd: &mut Command) -> Result<String, BuildError> {
    let output = cmd.output().map_err(|source| BuildError::Spawn { command: describe(cmd), source })?;
    if !output.status.success() {
        return Err(BuildError::Command {
            command: describe(cmd),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim_end().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Declares every TMA kernel's parameter ([`kernel_abi::TmaParams`], recognised by its size)
/// 64-byte aligned, as the copy engine requires of the tensor maps inside it. rustc's PTX kernel
/// ABI aborts on parameters aligned above 16 bytes, so the device crate declares 16 and this
/// raises it; the maps sit at multiples of 64 bytes in the struct, and the kernels only take
/// their addresses, so nothing else changes.
pub fn align_tma_params(ptx: &str) -> String {
    let suffix = format!("[{}]", kernel_abi::TmaParams::BYTES);
    let raised = format!(".param .align {} ", kernel_abi::TmaParams::PARAM_ALIGN);
    let mut out = String::with_capacity(ptx.len());
    for line in ptx.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', ',']).trim();
        if body.starts_with(".param .align 16 .b8 ") && body.ends_with(&suffix) {
            out.push_str(&line.replacen(".param .align 16 ", &raised, 1));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Declares `.maxntid` (the most threads per block) on every kernel of the list launched with
/// more than 256 threads (the persistent `wgmma` tiles: 288; 192-row tiles: 384), so that ptxas,
/// and the driver's JIT at module load, keep its registers within what the register file holds
/// for one block: each of the four sub-partitions has 16384, and 9 warps put 3 on one, so 168 a
/// thread (not 65536 / 288). rustc emits no launch bounds; without them the JIT gave such a kernel more and
/// every launch failed with CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES (H200). Idempotent: a kernel that
/// has its bound keeps it.
pub fn bound_block_threads(ptx: &str) -> String {
    let bound = |name: &str| {
        kernel_abi::KERNELS.iter().find(|k| k.name == name).and_then(|k| match k.tile {
            kernel_abi::Tile::Wgmma(t) if t.threads() > kernel_abi::wgmma::THREADS => Some(t.threads()),
            _ => None,
        })
    };
    let mut out = String::with_capacity(ptx.len());
    let mut pending = None;
    for line in ptx.split_inclusive('\n') {
        let body = line.trim();
        if let Some(rest) = body.strip_prefix(".visible .entry ").or_else(|| body.strip_prefix(".entry ")) {
            pending = bound(rest.split('(').next().unwrap_or_default().trim());
        } else if body.starts_with(".maxntid ") {
            // Bounded already: the PTX file is rewritten in place, and a build that finds it
            // up to date hands it over again.
            pending = None;
        } else if body == "{" {
            if let Some(threads) = pending.take() {
                out.push_str(&format!(".maxntid {threads}, 1, 1\n"));
            }
        }
        out.push_str(line);
    }
    out
}

/// What ptxas reports for one kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelResources {
    pub name: String,
    pub arch: String,
    pub registers: u32,
    pub shared_bytes: u32,
    pub stack_bytes: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
    /// ptxas serialised the kernel's `wgmma` instructions (warning C7515): the tensor cores then
    /// wait for each MMA before the next.
    pub wgmma_serialized: bool,
}

impl KernelResources {
    /// Spills or a stack frame: local-memory traffic the kernels are written to avoid.
    pub fn uses_local_memory(&self) -> bool {
        self.stack_bytes > 0 || self.spill_store_bytes > 0 || self.spill_load_bytes > 0
    }

    /// Local memory or serialised `wgmma`: what `check_resources` rejects.
    pub fn is_bad(&self) -> bool {
        self.uses_local_memory() || self.wgmma_serialized
    }
}

/// Parses `ptxas -v` output (its info lines go to stderr).
pub fn parse_ptxas_report(text: &str) -> Vec<KernelResources> {
    fn number_before(line: &str, unit: &str) -> Option<u32> {
        let end = line.find(unit)?;
        line[..end].trim_end().rsplit([' ', ',']).next()?.parse().ok()
    }
    let mut kernels: Vec<KernelResources> = Vec::new();
    let mut serialized: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.contains("(C7515)") {
            if let Some(name) = line.rsplit("in the function '").next().and_then(|r| r.split('\'').next()) {
                serialized.push(name.to_string());
            }
            continue;
        }
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let mut parts = rest.split('\'');
            let name = parts.next().unwrap_or_default().to_string();
            let arch = parts.nth(1).unwrap_or_default().to_string();
            kernels.push(KernelResources { name, arch, ..Default::default() });
        } else if let Some(k) = kernels.last_mut() {
            if line.contains("stack frame") {
                k.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
                k.spill_store_bytes = number_before(line, "bytes spill stores").unwrap_or(0);
                k.spill_load_bytes = number_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("Used") && line.contains("registers") {
                k.registers = number_before(line, "registers").unwrap_or(0);
                k.shared_bytes = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    for k in &mut kernels {
        k.wgmma_serialized = serialized.contains(&k.name);
    }
    kernels
}

/// Finds `ptxas`: `$PTXAS`, PATH, `/usr/local/cuda/bin`, or the PyPI `nvidia-cuda-nvcc` package
/// installed under `tools_dir` (installed there with pip, after saying so, when nothing else is found).
pub fn find_or_install_ptxas(tools_dir: &Path, say: &mut dyn FnMut(&str)) -> Result<PathBuf, BuildError> {
    let mut first: Vec<PathBuf> = std::env::var_os("PTXAS").map(PathBuf::from).into_iter().collect();
    first.extend(on_path("ptxas"));
    first.push(PathBuf::from("/usr/local/cuda/bin/ptxas"));
    find_or_install_tool("ptxas", "nvidia-cuda-nvcc", first, tools_dir, say).map_err(BuildError::NoPtxas)
}

/// `name` in each directory of PATH.
pub(crate) fn on_path(name: &str) -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|d| d.join(name)).collect())
        .unwrap_or_default()
}

/// The first of `candidates` that exists, else CUDA tool `name` from PyPI package `package`
/// under `tools_dir` (installed there with pip, after saying so, if it is not there yet).
/// Errors are the reason, for the caller's error variant.
pub(crate) fn find_or_install_tool(
    name: &str,
    package: &str,
    candidates: Vec<PathBuf>,
    tools_dir: &Path,
    say: &mut dyn FnMut(&str),
) -> Result<PathBuf, String> {
    let pip_dir = tools_dir.join(package);
    let from_pip =
        || ["cu13", "cu12"].iter().map(|v| pip_dir.join(format!("nvidia/{v}/bin/{name}"))).find(|p| p.is_file());
    if let Some(found) = candidates.into_iter().find(|p| p.is_file()).or_else(from_pip) {
        return Ok(found);
    }
    say(&format!("{name} not found; installing PyPI {package} into {} (once)", pip_dir.display()));
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"]).arg(&pip_dir).arg(package);
    run_capture(&mut cmd).map_err(|e| e.to_string())?;
    from_pip().ok_or_else(|| format!("pip finished but no {name} under {}", pip_dir.display()))
}

/// Assembles `ptx` for `arch` with `ptxas -v` and returns each kernel's resources.
pub fn ptxas_resources(ptxas: &Path, ptx: &Path, arch: Arch) -> Result<Vec<KernelResources>, BuildError> {
    let mut cmd = Command::new(ptxas);
    cmd.arg(format!("-arch={}", arch.name())).arg("-v").arg(ptx).args(["-o", "/dev/null"]);
    let output = cmd.output().map_err(|source| BuildError::Spawn { command: describe(&cmd), source })?;
    let text = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(BuildError::Command { command: describe(&cmd), status: output.status.to_string(), stderr: text });
    }
    Ok(parse_ptxas_report(&text))
}

/// Fails when any kernel spills or has a stack frame.
pub fn check_resources(kernels: &[KernelResources]) -> Result<(), BuildError> {
    let bad: Vec<String> = kernels
        .iter()
        .filter(|k| k.is_bad())
        .map(|k| {
            format!(
                "  {} ({}): {} B stack, {} B spill stores, {} B spill loads{}",
                k.name,
                k.arch,
                k.stack_bytes,
                k.spill_store_bytes,
                k.spill_load_bytes,
                if k.wgmma_serialized { ", wgmma serialised (C7515)" } else { "" }
            )
        })
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(BuildError::Resources(bad.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'k_good' for 'sm_90'\n\
ptxas info    : Function properties for k_good\n    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 76 registers, used 1 barriers, 128 bytes smem\n\
ptxas info    : Compiling entry function 'k_bad' for 'sm_80'\n\
ptxas info    : Function properties for k_bad\n    64 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n\
ptxas info    : Used 255 registers, used 1 barriers, 64 bytes cumulative stack size, 0 bytes smem\n\
ptxas info    : Compiling entry function 'k_serial' for 'sm_90a'\n\
ptxas info    : (C7515) Potential Performance Loss: wgmma.mma_async instructions are serialized due to non wgmma instructions defining accumulator registers of a wgmma between start and end of the pipeline stage in the function 'k_serial'\n\
ptxas info    : Function properties for k_serial\n    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 90 registers, used 1 barriers, 0 bytes smem\n";

    #[test]
    fn parses_ptxas_report() {
        let k = parse_ptxas_report(REPORT);
        assert_eq!(k.len(), 3);
        assert!(k[2].wgmma_serialized && !k[2].uses_local_memory() && !k[0].wgmma_serialized);
        assert_eq!(
            k[0],
            KernelResources {
                name: "k_good".into(),
                arch: "sm_90".into(),
                registers: 76,
                shared_bytes: 128,
                ..Default::default()
            }
        );
        assert_eq!((k[1].stack_bytes, k[1].spill_store_bytes, k[1].spill_load_bytes, k[1].registers), (64, 8, 4, 255));
        assert!(!k[0].uses_local_memory() && k[1].uses_local_memory());
    }

    #[test]
    fn check_rejects_spills_and_names_the_kernel() {
        let k = parse_ptxas_report(REPORT);
        assert!(check_resources(&k[..1]).is_ok());
        let err = check_resources(&k).unwrap_err().to_string();
        assert!(err.contains("k_bad") && err.contains("k_serial (sm_90a)") && !err.contains("k_good"), "{err}");
    }

    #[test]
    fn tma_params_get_64_byte_alignment() {
        let n = kernel_abi::TmaParams::BYTES;
        let ptx = format!(
            ".entry k(\n\t.param .align 16 .b8 k_param_0[{n}]\n)\n.entry j(\n\t.param .align 8 .b8 j_param_0[72]\n)\n\t.param .align 16 .b8 other[16]\n"
        );
        let fixed = bound_block_threads(&align_tma_params(&ptx));
        assert_eq!(fixed.matches(".param .align 64 .b8 k_param_0").count(), 1, "{fixed}");
        assert!(
            fixed.contains(".param .align 16 .b8 other[16]") && fixed.contains(".param .align 8 .b8 j_param_0[72]")
        );
        assert_eq!(fixed.len(), ptx.len());
    }

    #[test]
    fn persistent_kernels_get_their_block_bound() {
        let persistent = kernel_abi::KERNELS
            .iter()
            .find(|k| matches!(k.tile, kernel_abi::Tile::Wgmma(t) if t.is_persistent()))
            .expect("a persistent kernel in the list");
        let plain = kernel_abi::KERNELS.iter().find(|k| !matches!(k.tile, kernel_abi::Tile::Wgmma(_))).unwrap();
        let entry =
            |name: &str| format!(".visible .entry {name}(\n\t.param .b8 p[8]\n)   // @{name}\n{{\n\tret;\n}}\n");
        let ptx = entry(persistent.name) + &entry(plain.name);
        let out = bound_block_threads(&ptx);
        let bounded = format!(")   // @{}\n.maxntid 288, 1, 1\n{{", persistent.name);
        assert!(out.contains(&bounded), "{out}");
        assert_eq!(out.matches(".maxntid").count(), 1, "{out}");
        // The builder rewrites the PTX file in place and may see it again unchanged.
        assert_eq!(bound_block_threads(&out), out);
    }

    #[test]
    fn arch_names_round_trip() {
        for a in Arch::ALL {
            assert_eq!(a.name().parse::<Arch>().unwrap(), a);
        }
        assert!(matches!("sm_75".parse::<Arch>(), Err(BuildError::UnknownArch(_))));
    }

    #[test]
    fn reads_the_pinned_device_toolchain() {
        // Embedded at compile time: the test binary may run on a machine without the source tree.
        let text = include_str!("../../kernel-gpu/rust-toolchain.toml");
        let t = DeviceToolchain::parse(text, Path::new("kernel-gpu/rust-toolchain.toml")).unwrap();
        assert!(t.channel.starts_with("nightly-"), "{t:?}");
        assert!(t.components.iter().any(|c| c == "rust-src"), "{t:?}");
    }
}
