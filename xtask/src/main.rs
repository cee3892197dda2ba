//! Project tasks, run as `cargo xtask <task>`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};
use ptx_builder::{Arch, PtxBuilder};

mod report;

#[derive(Parser)]
#[command(about = "Project tasks for fused-qkv", long_about = None)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Prepare a fresh machine: the pinned device toolchain, ptxas, and (where no CUDA driver is
    /// installed) a libcuda stub so the host crate links. Idempotent.
    Setup,
    /// Build kernel-gpu to PTX (where the host embeds it: target/ptx/<arch>/).
    BuildPtx {
        /// Architectures to build.
        #[arg(long, value_delimiter = ',', default_values = ["sm_80", "sm_90a"])]
        arch: Vec<String>,
        /// Also run ptxas on each PTX, print registers / shared memory / stack per kernel, and fail
        /// on any spill, stack frame or serialised wgmma (ptxas warning C7515). Checks sm_80 and
        /// sm_90a (the PTX the host embeds) at least.
        #[arg(long)]
        check: bool,
        /// Device-crate features: `tile-sweep` adds the measurement-only tiles, `timeline` the
        /// per-tile clock stamps (each built apart, in target/ptx/<arch>-<features>/).
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
    },
    /// Merge benchmark JSON files (schema 1, from `fused-qkv bench` and bench/peers.py) into
    /// REPORT.md (also printed) and one plot-<dtype>-<model>.png per dtype and model. The plots
    /// need a TrueType font: DejaVu Sans from /usr/share/fonts, or the file named by FUSED_QKV_FONT.
    Report {
        /// Benchmark files to merge [default: every bench/results/*.json].
        files: Vec<PathBuf>,
        /// Where to write REPORT.md and the plots [default: bench/results].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup(),
        Task::BuildPtx { arch, check, features } => build_ptx(&arch, check, features),
        Task::Report { files, out } => report::run(&files, out.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn target_dir() -> PathBuf {
    let root = root();
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(t) if t.is_absolute() => t,
        Some(t) => root.join(t),
        None => root.join("target"),
    }
}

fn say(msg: &str) {
    eprintln!("xtask: {msg}");
}

fn build_ptx(arch_names: &[String], check: bool, features: Vec<String>) -> Result<()> {
    let mut archs: Vec<Arch> = arch_names.iter().map(|a| a.parse()).collect::<std::result::Result<_, _>>()?;
    if check {
        for required in [Arch::Sm80, Arch::Sm90a] {
            if !archs.contains(&required) {
                archs.push(required);
            }
        }
    }
    let builder = PtxBuilder { features, ..PtxBuilder::new(&root(), &target_dir(), archs) };
    let built = builder.build(&mut |m| say(m))?;
    for ptx in &built {
        println!("{}: {}", ptx.arch, ptx.path.display());
    }
    if !check {
        return Ok(());
    }
    let ptxas = ptx_builder::find_or_install_ptxas(&target_dir().join("tools"), &mut |m| say(m))?;
    let mut all = Vec::new();
    println!("{:<34} {:>7} {:>5} {:>9} {:>8} {:>7}", "kernel", "arch", "regs", "smem (B)", "stack", "spills");
    for ptx in &built {
        let kernels = ptx_builder::ptxas_resources(&ptxas, &ptx.path, ptx.arch)?;
        for k in &kernels {
            println!(
                "{:<34} {:>7} {:>5} {:>9} {:>8} {:>7}",
                k.name,
                k.arch,
                k.registers,
                k.shared_bytes,
                k.stack_bytes,
                k.spill_store_bytes + k.spill_load_bytes
            );
        }
        if kernels.is_empty() {
            return Err(format!("ptxas reported no kernels in {}", ptx.path.display()).into());
        }
        all.extend(kernels);
    }
    ptx_builder::check_resources(&all)?;
    println!(
        "ptxas check passed: {} kernels, no spills, no stack frames, no serialised wgmma ({})",
        all.len(),
        ptxas.display()
    );
    // The kernels that run as programmatic dependents (sm_90a): nothing but read-only loads of
    // the weights before the wait for the previous kernel, in the machine code ptxas makes.
    let nvdisasm = ptx_builder::sass::find_or_install_nvdisasm(&ptxas, &target_dir().join("tools"), &mut |m| say(m))?;
    for ptx in built.iter().filter(|p| p.arch == Arch::Sm90a) {
        let cubin = ptx.path.with_extension("cubin");
        let sass = ptx_builder::sass::disassemble(&ptxas, &nvdisasm, &ptx.path, ptx.arch, &cubin)?;
        let kernels = ptx_builder::sass::parse_wait_order(&sass, "fused_rmsnorm_qkv_");
        if kernels.is_empty() {
            return Err(format!("nvdisasm listed no kernels of {}", ptx.path.display()).into());
        }
        ptx_builder::sass::check_wait_order(&kernels)?;
        println!(
            "dependent-launch check passed: {} {} kernels wait before touching memory another kernel may write ({})",
            kernels.len(),
            ptx.arch,
            nvdisasm.display()
        );
    }
    Ok(())
}

fn setup() -> Result<()> {
    let builder = PtxBuilder::new(&root(), &target_dir(), vec![]);
    ptx_builder::DeviceToolchain::read(&builder.kernel_dir)?.ensure_installed(&mut |m| say(m))?;
    say("device toolchain ready");
    let ptxas = ptx_builder::find_or_install_ptxas(&target_dir().join("tools"), &mut |m| say(m))?;
    say(&format!("ptxas: {}", ptxas.display()));
    if has_cuda_driver() {
        // A stub left from before the driver was installed would shadow it (see .cargo/config.toml).
        let stub = target_dir().join("cuda-stub");
        if stub.exists() {
            std::fs::remove_dir_all(&stub)?;
        }
        say("a CUDA driver library is installed; no libcuda stub needed");
    } else {
        let dir = write_cuda_stub()?;
        say(&format!("no CUDA driver here: wrote a libcuda stub in {} (GPU calls report no device)", dir.display()));
    }
    Ok(())
}

/// A real libcuda is linkable: in the loader cache, in /usr/local/cuda, or at CUDA_LIBRARY_PATH.
fn has_cuda_driver() -> bool {
    let in_ldconfig = Command::new("ldconfig")
        .arg("-p")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("libcuda.so"))
        .unwrap_or(false);
    let stub_dir = target_dir().join("cuda-stub");
    let explicit = std::env::var_os("CUDA_LIBRARY_PATH")
        .map(PathBuf::from)
        .filter(|p| *p != stub_dir)
        .is_some_and(|p| p.join("lib64/libcuda.so").exists());
    in_ldconfig || explicit || Path::new("/usr/local/cuda/lib64/stubs/libcuda.so").exists()
}

/// Writes `target/cuda-stub/lib64/libcuda.so{,.1}`: every driver entry point cust declares, each
/// returning CUDA_ERROR_NO_DEVICE (100), so binaries link and run here and report "no GPU".
fn write_cuda_stub() -> Result<PathBuf> {
    let bindings = cust_raw_bindings()?;
    let text = std::fs::read_to_string(&bindings)?;
    let mut names: Vec<&str> = text
        .split("pub fn ")
        .skip(1)
        .filter_map(|rest| rest.split('(').next())
        .filter(|name| name.starts_with("cu") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    names.sort_unstable();
    names.dedup();
    if names.len() < 50 {
        return Err(format!("found only {} driver entry points in {}", names.len(), bindings.display()).into());
    }
    let dir = target_dir().join("cuda-stub/lib64");
    std::fs::create_dir_all(&dir)?;
    let source: String = names.iter().map(|n| format!("int {n}(void) {{ return 100; }}\n")).collect();
    let c_file = dir.join("libcuda_stub.c");
    std::fs::write(&c_file, source)?;
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-shared", "-fPIC", "-O1", "-Wl,-soname,libcuda.so.1", "-o"])
        .arg(dir.join("libcuda.so"))
        .arg(&c_file)
        .status()?;
    if !status.success() {
        return Err("compiling the libcuda stub failed (is a C compiler installed?)".into());
    }
    let so1 = dir.join("libcuda.so.1");
    let _ = std::fs::remove_file(&so1);
    std::fs::copy(dir.join("libcuda.so"), &so1)?;
    Ok(dir.parent().unwrap().to_path_buf())
}

/// The bindings file of the cust_raw crate the workspace resolves to (downloaded if needed).
fn cust_raw_bindings() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo).args(["metadata", "--format-version", "1"]).current_dir(root()).output()?;
    if !output.status.success() {
        return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let manifest = meta["packages"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "cust_raw"))
        .and_then(|p| p["manifest_path"].as_str())
        .ok_or("cust_raw is not in the dependency graph")?;
    Ok(Path::new(manifest).parent().unwrap().join("src/cuda.rs"))
}
