//! A check on the machine code `ptxas` makes of the sm_90a PTX: every kernel waits for the
//! kernel before it (`griddepcontrol.wait`, SASS `ACQBULK`) before it touches memory another
//! kernel may write. Under programmatic dependent launch a kernel starts while its predecessor
//! still runs, and `ptxas` schedules loads across the wait as it likes where it may: it moved
//! `ld.global.nc` loads of x above it once (a race the PTX does not show). The kernels therefore
//! read x with coherent loads (kernel-gpu's `MaskedColumn::load_x`, `Element::load_x`), which this
//! check sees; read-only loads (`.CONSTANT`, the weights') and prefetches may come before the wait,
//! so an `.nc` load of x would pass it: that half is the source's rule.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{describe, find_or_install_tool, on_path, run_capture, Arch, BuildError};

/// SASS opcodes (before the first `.`) that read or write global memory, or might.
const MEMORY_OPCODES: [&str; 13] =
    ["LDG", "STG", "LD", "ST", "ATOM", "ATOMG", "RED", "REDG", "LDGSTS", "UTMALDG", "UTMASTG", "UBLKCP", "UTMAREDG"];

/// What a kernel does before its wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitOrder {
    pub kernel: String,
    /// The kernel waits for its predecessor at all.
    pub waits: bool,
    /// Memory instructions before the first wait, other than read-only loads (as disassembled).
    pub before_wait: Vec<String>,
}

impl WaitOrder {
    pub fn is_bad(&self) -> bool {
        !self.waits || !self.before_wait.is_empty()
    }
}

/// The opcode of one line of `nvdisasm` output (`/*0310*/  @!P0 LDG.E.128.CONSTANT R24, ...`).
fn opcode(line: &str) -> Option<&str> {
    let rest = line.trim_start().strip_prefix("/*")?;
    let (_, instruction) = rest.split_once("*/")?;
    instruction.split_whitespace().find(|token| !token.starts_with('@'))
}

/// Reads `nvdisasm` output: one [`WaitOrder`] per function whose name starts with `prefix`, in
/// the order of the code (a memory instruction at a lower address than the first wait counts as
/// before it).
pub fn parse_wait_order(sass: &str, prefix: &str) -> Vec<WaitOrder> {
    let mut kernels: Vec<WaitOrder> = Vec::new();
    let mut current: Option<usize> = None;
    for line in sass.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix(".text.").and_then(|s| s.strip_suffix(':')) {
            current = name.starts_with(prefix).then(|| {
                kernels.push(WaitOrder { kernel: name.to_string(), waits: false, before_wait: Vec::new() });
                kernels.len() - 1
            });
            continue;
        }
        let (Some(index), Some(op)) = (current, opcode(line)) else { continue };
        let kernel = &mut kernels[index];
        if kernel.waits {
            continue;
        }
        let base = op.split('.').next().unwrap_or(op);
        if base == "ACQBULK" {
            kernel.waits = true;
        } else if MEMORY_OPCODES.contains(&base) && !op.contains(".CONSTANT") {
            kernel.before_wait.push(trimmed.to_string());
        }
    }
    kernels
}

/// Finds `nvdisasm` beside `ptxas`, on PATH, or in the PyPI `nvidia-cuda-nvdisasm` package under
/// `tools_dir` (installed there with pip, after saying so, when nothing else is found).
pub fn find_or_install_nvdisasm(
    ptxas: &Path,
    tools_dir: &Path,
    say: &mut dyn FnMut(&str),
) -> Result<PathBuf, BuildError> {
    let mut first: Vec<PathBuf> = ptxas.parent().map(|d| d.join("nvdisasm")).into_iter().collect();
    first.extend(on_path("nvdisasm"));
    find_or_install_tool("nvdisasm", "nvidia-cuda-nvdisasm", first, tools_dir, say).map_err(BuildError::NoNvdisasm)
}

/// Assembles `ptx` for `arch` into `cubin` and returns `nvdisasm`'s listing of it.
pub fn disassemble(ptxas: &Path, nvdisasm: &Path, ptx: &Path, arch: Arch, cubin: &Path) -> Result<String, BuildError> {
    let mut assemble = Command::new(ptxas);
    assemble.arg(format!("-arch={}", arch.name())).arg(ptx).arg("-o").arg(cubin);
    run_capture(&mut assemble)?;
    let mut disassemble = Command::new(nvdisasm);
    disassemble.arg(cubin);
    run_capture(&mut disassemble).map_err(|e| match e {
        BuildError::Spawn { source, .. } => BuildError::Spawn { command: describe(&disassemble), source },
        other => other,
    })
}

/// Fails when a kernel has no wait or touches memory before it.
pub fn check_wait_order(kernels: &[WaitOrder]) -> Result<(), BuildError> {
    let bad: Vec<String> = kernels
        .iter()
        .filter(|k| k.is_bad())
        .map(|k| {
            if k.waits {
                let shown: Vec<&str> = k.before_wait.iter().take(3).map(|i| i.as_str()).collect();
                let more = k.before_wait.len().saturating_sub(shown.len());
                let more = if more > 0 { format!(" (and {more} more)") } else { String::new() };
                format!("  {}: before griddepcontrol.wait: {}{more}", k.kernel, shown.join(" | "))
            } else {
                format!("  {}: never waits (griddepcontrol.wait)", k.kernel)
            }
        })
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(BuildError::WaitOrder(bad.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SASS: &str = "\t.section\t.text.k_good,\"ax\",@progbits\n\
.text.k_good:\n\
        /*0000*/                   LDC R1, c[0x0][0x28] ;\n\
        /*0010*/                   LDG.E.128.CONSTANT R4, desc[UR6][R2.64] ;\n\
        /*0020*/              @!P0 UBLKPF.L2 [UR8], UR4 ;\n\
        /*0030*/                   ACQBULK ;\n\
        /*0040*/                   LDG.E.128 R8, desc[UR6][R6.64] ;\n\
        /*0050*/                   STG.E [R2.64], R8 ;\n\
\t.section\t.text.k_hoisted,\"ax\",@progbits\n\
.text.k_hoisted:\n\
        /*0000*/               @P1 LDG.E.128 R8, desc[UR6][R6.64] ;\n\
        /*0010*/                   ACQBULK ;\n\
.text.k_nowait:\n\
        /*0000*/                   STG.E [R2.64], R8 ;\n\
.text.other:\n\
        /*0000*/                   STG.E [R2.64], R8 ;\n";

    #[test]
    fn finds_memory_touched_before_the_wait() {
        let k = parse_wait_order(SASS, "k_");
        assert_eq!(k.len(), 3);
        assert!(k[0].waits && k[0].before_wait.is_empty(), "{k:?}");
        assert!(k[1].waits && k[1].before_wait.len() == 1 && k[1].before_wait[0].contains("LDG.E.128 R8"));
        assert!(!k[2].waits);
        let err = check_wait_order(&k).unwrap_err().to_string();
        assert!(err.contains("k_hoisted") && err.contains("k_nowait") && !err.contains("k_good"), "{err}");
        assert!(check_wait_order(&k[..1]).is_ok());
    }
}
