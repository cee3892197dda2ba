//! `cargo xtask report`: merges benchmark JSON files (schema 1, written by `fused-qkv bench` and
//! `bench/peers.py`) into one markdown report (`REPORT.md`, also printed to stdout) and one PNG
//! plot per (dtype, model).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::register_font;
use serde::Deserialize;

use crate::Result;

/// The only schema version this report reads.
pub const SCHEMA: u64 = 1;

/// How the producers measure; printed in the report header.
pub const METHOD: &str = "device time, weights rotated through copies > 2x L2: `*-graph`/`*_graph`, one call per \
                          copy captured in a CUDA graph, CUDA events around each replay, median per replay / copies \
                          (how engines run decode); the others, CUDA events around batches of back-to-back \
                          launches, median over batches";

/// Environment variable naming a TrueType font for the plots (checked before the system paths).
pub const FONT_ENV: &str = "FUSED_QKV_FONT";

/// System places of DejaVu Sans, in the order they are tried after `FUSED_QKV_FONT`.
const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Impl {
    /// `fused-qkv bench --mode graph`: calls captured in a CUDA graph.
    #[serde(rename = "fused-qkv-graph")]
    FusedQkvGraph,
    /// `fused-qkv bench --mode launches`: calls launched from the host.
    #[serde(rename = "fused-qkv")]
    FusedQkv,
    #[serde(rename = "eager_graph")]
    EagerGraph,
    #[serde(rename = "linear_graph")]
    LinearGraph,
    #[serde(rename = "compiled_graph")]
    CompiledGraph,
    #[serde(rename = "eager")]
    Eager,
    #[serde(rename = "compiled")]
    Compiled,
    #[serde(rename = "seed")]
    Seed,
}

impl Impl {
    const ALL: [Impl; 8] = [
        Impl::FusedQkvGraph,
        Impl::FusedQkv,
        Impl::EagerGraph,
        Impl::LinearGraph,
        Impl::CompiledGraph,
        Impl::Eager,
        Impl::Compiled,
        Impl::Seed,
    ];
    const PEERS: [Impl; 6] =
        [Impl::EagerGraph, Impl::LinearGraph, Impl::CompiledGraph, Impl::Eager, Impl::Compiled, Impl::Seed];
    /// The peers the fused op's time is divided by, where present: the graph peers (how engines
    /// run) first.
    const RATIO_TO: [Impl; 4] = [Impl::EagerGraph, Impl::LinearGraph, Impl::Eager, Impl::Compiled];

    fn name(self) -> &'static str {
        match self {
            Impl::FusedQkvGraph => "fused-qkv-graph",
            Impl::FusedQkv => "fused-qkv",
            Impl::EagerGraph => "eager_graph",
            Impl::LinearGraph => "linear_graph",
            Impl::CompiledGraph => "compiled_graph",
            Impl::Eager => "eager",
            Impl::Compiled => "compiled",
            Impl::Seed => "seed",
        }
    }

    fn color(self) -> RGBColor {
        match self {
            Impl::FusedQkvGraph => RGBColor(214, 39, 40),
            Impl::FusedQkv => RGBColor(140, 20, 20),
            Impl::EagerGraph => RGBColor(31, 119, 180),
            Impl::LinearGraph => RGBColor(148, 103, 189),
            Impl::CompiledGraph => RGBColor(23, 190, 207),
            Impl::Eager => RGBColor(120, 170, 210),
            Impl::Compiled => RGBColor(44, 160, 44),
            Impl::Seed => RGBColor(255, 127, 14),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    Bf16,
    F16,
    F32,
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
            Dtype::F32 => "f32",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Tool {
    #[serde(rename = "fused-qkv bench")]
    FusedQkvBench,
    #[serde(rename = "peers.py")]
    Peers,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::FusedQkvBench => "fused-qkv bench",
            Tool::Peers => "peers.py",
        }
    }
}

/// One benchmark file, schema 1.
#[derive(Debug, Clone, Deserialize)]
pub struct BenchFile {
    /// Always `SCHEMA`: `parse` checks it before the other fields.
    #[allow(dead_code)]
    pub schema: u64,
    pub tool: Tool,
    pub device: String,
    pub date: String,
    pub dtype: Dtype,
    pub copy_gbs: f64,
    pub tensor_tflops: Option<f64>,
    pub l2_bytes: u64,
    pub rotation_copies: u64,
    pub rows: Vec<Row>,
}

/// One measurement: an implementation at one shape.
#[derive(Debug, Clone, Deserialize)]
pub struct Row {
    #[serde(rename = "impl")]
    pub imp: Impl,
    pub model: String,
    #[serde(rename = "M")]
    pub m: u64,
    #[serde(rename = "H")]
    pub h: u64,
    #[serde(rename = "N")]
    pub n: u64,
    pub bias: bool,
    // Part of the schema (so files without them are rejected) but not shown in the report.
    #[allow(dead_code)]
    pub bytes: u64,
    #[allow(dead_code)]
    pub flops: u64,
    pub floor_us: f64,
    pub device_us: Option<f64>,
    pub host_us: Option<f64>,
    #[allow(dead_code)]
    pub rel_err: Option<f64>,
    pub error: Option<String>,
}

/// A parsed file and where it came from.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub file: BenchFile,
}

/// All rows of one (dtype, model), by M and implementation.
#[derive(Debug, Clone)]
pub struct Group {
    pub dtype: Dtype,
    pub model: String,
    pub devices: BTreeSet<String>,
    pub points: BTreeMap<u64, Point>,
}

/// The rows of one M. The floor is the fused-qkv row's where there is one.
#[derive(Debug, Clone, Default)]
pub struct Point {
    pub floor_us: f64,
    pub rows: BTreeMap<Impl, Row>,
}

#[derive(Debug, Clone, Default)]
pub struct Merged {
    pub groups: BTreeMap<(Dtype, String), Group>,
    pub warnings: Vec<String>,
}

/// Runs the task: loads `files` (default: every `bench/results/*.json`), writes `REPORT.md` and one
/// `plot-<dtype>-<model>.png` per (dtype, model) into `out` (default: `bench/results`).
pub fn run(files: &[PathBuf], out: Option<&Path>) -> Result<()> {
    let results = crate::root().join("bench/results");
    let files = if files.is_empty() { default_files(&results)? } else { files.to_vec() };
    let sources = files.iter().map(|f| load(f)).collect::<Result<Vec<_>>>()?;
    let merged = merge(&sources);
    for w in &merged.warnings {
        eprintln!("warning: {w}");
    }
    let markdown = report(&sources, &merged);
    print!("{markdown}");

    let out = out.map(Path::to_path_buf).unwrap_or(results);
    std::fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let report_path = out.join("REPORT.md");
    std::fs::write(&report_path, &markdown).map_err(|e| format!("writing {}: {e}", report_path.display()))?;
    crate::say(&format!("wrote {}", report_path.display()));
    for group in merged.groups.values() {
        let path = out.join(plot_file_name(group));
        plot(group, &path)
            .map_err(|e| format!("plotting {}: {e} ({} was written)", path.display(), report_path.display()))?;
        crate::say(&format!("wrote {}", path.display()));
    }
    Ok(())
}

/// Every `*.json` in `dir`, sorted.
fn default_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(format!("no benchmark files (*.json) in {}; pass files to report", dir.display()).into());
    }
    Ok(files)
}

/// Reads and parses one file.
pub fn load(path: &Path) -> Result<Source> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {name}: {e}"))?;
    Ok(Source { file: parse(&text, &name)?, name })
}

/// Parses one file's text; `name` names it in errors. Files of another schema version are rejected
/// before their fields are looked at.
pub fn parse(text: &str, name: &str) -> Result<BenchFile> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("{name}: not valid JSON: {e}"))?;
    match value.get("schema") {
        Some(v) if v.as_u64() == Some(SCHEMA) => {}
        Some(v) => return Err(format!("{name}: schema version {v}, but this report reads schema {SCHEMA} only").into()),
        None => return Err(format!("{name}: no \"schema\" field (expected schema {SCHEMA})").into()),
    }
    let file: BenchFile = serde_json::from_value(value).map_err(|e| format!("{name}: {e}"))?;
    let date_ok = file.date.len() == 10
        && file.date.char_indices().all(|(i, c)| if i == 4 || i == 7 { c == '-' } else { c.is_ascii_digit() });
    if !date_ok {
        return Err(format!("{name}: date {:?} is not YYYY-MM-DD", file.date).into());
    }
    Ok(file)
}

/// Groups the rows of all files by (dtype, model) and M. A row repeated in a later file replaces
/// the earlier one (with a warning); files from different devices give a warning.
pub fn merge(sources: &[Source]) -> Merged {
    let mut merged = Merged::default();
    let mut devices: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for source in sources {
        devices.entry(&source.file.device).or_default().push(&source.name);
    }
    if devices.len() > 1 {
        let list: Vec<String> = devices.iter().map(|(d, files)| format!("{d} ({})", files.join(", "))).collect();
        merged.warnings.push(format!("files come from different devices: {}", list.join("; ")));
    }
    for source in sources {
        let file = &source.file;
        for row in &file.rows {
            let group = merged.groups.entry((file.dtype, row.model.clone())).or_insert_with(|| Group {
                dtype: file.dtype,
                model: row.model.clone(),
                devices: BTreeSet::new(),
                points: BTreeMap::new(),
            });
            group.devices.insert(file.device.clone());
            let point = group.points.entry(row.m).or_default();
            // The larger floor of the files: one may know the compute floor (its measured tensor
            // rate) where another has the memory floor only.
            point.floor_us = point.floor_us.max(row.floor_us);
            if point.rows.insert(row.imp, row.clone()).is_some() {
                merged.warnings.push(format!(
                    "{}: {} {} M={} {} is also in an earlier file; using this one",
                    source.name,
                    row.model,
                    file.dtype,
                    row.m,
                    row.imp.name()
                ));
            }
        }
    }
    merged
}

/// The whole report: header lines, then one table per (dtype, model).
pub fn report(sources: &[Source], merged: &Merged) -> String {
    let mut s = String::from("# fused-qkv benchmark report\n\n");
    let devices: BTreeSet<&str> = sources.iter().map(|s| s.file.device.as_str()).collect();
    let dates: BTreeSet<&str> = sources.iter().map(|s| s.file.date.as_str()).collect();
    let join = |set: BTreeSet<&str>| set.into_iter().collect::<Vec<_>>().join(", ");
    let _ = writeln!(s, "Device{}: {}  ", if devices.len() > 1 { "s" } else { "" }, join(devices));
    let _ = writeln!(s, "Date{}: {}  ", if dates.len() > 1 { "s" } else { "" }, join(dates));
    let _ = writeln!(s, "Method: {METHOD}.\n");
    s.push_str("Files:\n\n");
    for source in sources {
        let f = &source.file;
        let tensor = f.tensor_tflops.map_or("-".to_string(), |t| format!("{} TFLOP/s", fmt_sig(t, 0)));
        let _ = writeln!(
            s,
            "- {} ({}, {}, {}, {}): copy {} GB/s, tensor {tensor}, L2 {} MiB, weights rotated through {} copies",
            source.name,
            f.tool.name(),
            f.dtype,
            f.device,
            f.date,
            fmt_sig(f.copy_gbs, 0),
            fmt_sig(f.l2_bytes as f64 / 1048576.0, 0),
            f.rotation_copies
        );
    }
    for group in merged.groups.values() {
        s.push('\n');
        s.push_str(&table(group));
    }
    s
}

/// One (dtype, model) as a markdown table, one row per M, errors listed under it.
pub fn table(group: &Group) -> String {
    let present = |imp: Impl| group.points.values().any(|p| p.rows.contains_key(&imp));
    let peers: Vec<Impl> = Impl::PEERS.into_iter().filter(|&i| present(i)).collect();
    let ratio_to: Vec<Impl> = Impl::RATIO_TO.into_iter().filter(|&i| present(i)).collect();
    // The fused op as engines run it (graph mode) where measured, else its launches mode.
    let fused_impl = if present(Impl::FusedQkvGraph) { Impl::FusedQkvGraph } else { Impl::FusedQkv };

    let mut s = String::new();
    let shape = group.points.values().flat_map(|p| p.rows.values()).next();
    let _ = write!(s, "## {} {}", group.model, group.dtype);
    if let Some(r) = shape {
        let _ = write!(s, " (H {}, N {}, {})", r.h, r.n, if r.bias { "bias" } else { "no bias" });
    }
    s.push_str("\n\n");

    let mut header: Vec<String> = vec![
        "M".into(),
        "floor (us)".into(),
        format!("{} device (us)", fused_impl.name()),
        format!("{} host (us)", fused_impl.name()),
    ];
    header.extend(peers.iter().map(|p| format!("{} device (us)", p.name())));
    header.push("fused/floor".into());
    header.extend(ratio_to.iter().map(|p| format!("fused/{}", p.name())));
    let _ = writeln!(s, "| {} |", header.join(" | "));
    let _ = writeln!(s, "|{}", "---:|".repeat(header.len()));

    let mut errors = Vec::new();
    for (&m, point) in &group.points {
        let fused = point.rows.get(&fused_impl);
        let mut cells =
            vec![m.to_string(), fmt_us(point.floor_us), cell(fused, |r| r.device_us), cell(fused, |r| r.host_us)];
        cells.extend(peers.iter().map(|p| cell(point.rows.get(p), |r| r.device_us)));
        let fused_us = ok_device_us(fused);
        cells.push(ratio(fused_us, Some(point.floor_us)));
        cells.extend(ratio_to.iter().map(|p| ratio(fused_us, ok_device_us(point.rows.get(p)))));
        let _ = writeln!(s, "| {} |", cells.join(" | "));
        for row in point.rows.values() {
            if let Some(e) = &row.error {
                errors.push(format!("- M={m}, {}: {e}", row.imp.name()));
            }
        }
    }
    if !errors.is_empty() {
        s.push_str("\nErrors:\n\n");
        for e in errors {
            s.push_str(&e);
            s.push('\n');
        }
    }
    s
}

/// A row's value as a table cell: "-" where missing, "err" where the row is an error.
fn cell(row: Option<&Row>, value: impl Fn(&Row) -> Option<f64>) -> String {
    match row {
        None => "-".into(),
        Some(r) if r.error.is_some() => "err".into(),
        Some(r) => value(r).map_or("-".into(), fmt_us),
    }
}

fn ok_device_us(row: Option<&Row>) -> Option<f64> {
    row.filter(|r| r.error.is_none()).and_then(|r| r.device_us)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => fmt_sig(a / b, 0),
        _ => "-".into(),
    }
}

/// 3 significant figures, but at least `min_decimals` decimals (and none beyond 999).
fn fmt_sig(v: f64, min_decimals: usize) -> String {
    if !v.is_finite() || v == 0.0 {
        return format!("{v:.min_decimals$}");
    }
    let magnitude = v.abs().log10().floor() as i64;
    let decimals = (2 - magnitude).max(min_decimals as i64) as usize;
    format!("{v:.decimals$}")
}

/// Microseconds: 3 significant figures or 1 decimal, whichever shows more.
fn fmt_us(v: f64) -> String {
    fmt_sig(v, 1)
}

/// An axis tick: 3 significant figures without trailing zeros.
fn fmt_tick(v: f64) -> String {
    let s = fmt_sig(v, 0);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `plot-<dtype>-<model>.png`, with anything but letters, digits, '.', '-' and '_' in the model
/// name replaced by '_'.
pub fn plot_file_name(group: &Group) -> String {
    let model: String = group
        .model
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    format!("plot-{}-{model}.png", group.dtype)
}

/// The font for the plots: `$FUSED_QKV_FONT` if set, else the first DejaVu Sans that exists.
pub fn find_font() -> Option<PathBuf> {
    let from_env = std::env::var_os(FONT_ENV).map(PathBuf::from);
    from_env.into_iter().chain(FONT_PATHS.iter().map(PathBuf::from)).find(|p| p.is_file())
}

/// Registers the font with plotters as "sans-serif" (once per process).
fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let registered = REGISTERED.get_or_init(|| {
        let path = find_font().ok_or_else(|| {
            format!(
                "no TrueType font for the plots (looked for {} and in {}); set {FONT_ENV}=/path/to/font.ttf",
                FONT_ENV,
                FONT_PATHS.join(", ")
            )
        })?;
        let bytes = std::fs::read(&path).map_err(|e| format!("reading font {}: {e}", path.display()))?;
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a TrueType font; set {FONT_ENV} to one", path.display()))
    });
    registered.clone().map_err(Into::into)
}

/// Time (us) vs tokens M, both log scale: one line with markers per implementation, the floor
/// dashed. 900x600 PNG.
pub fn plot(group: &Group, path: &Path) -> Result<()> {
    ensure_font()?;
    let series: Vec<(Impl, Vec<(f64, f64)>)> = Impl::ALL
        .into_iter()
        .map(|imp| {
            let points = group
                .points
                .iter()
                .filter_map(|(&m, p)| Some((m as f64, ok_device_us(p.rows.get(&imp))?)))
                .filter(|&(m, us)| m > 0.0 && us > 0.0)
                .collect::<Vec<_>>();
            (imp, points)
        })
        .filter(|(_, points)| !points.is_empty())
        .collect();
    let floor: Vec<(f64, f64)> =
        group.points.iter().map(|(&m, p)| (m as f64, p.floor_us)).filter(|&(m, us)| m > 0.0 && us > 0.0).collect();
    let all = || series.iter().flat_map(|(_, p)| p.iter()).chain(floor.iter());
    if all().next().is_none() {
        return Err(format!("{} {}: nothing to plot (no M > 0 with a time)", group.model, group.dtype).into());
    }
    let (x_min, x_max) = all().fold((f64::MAX, f64::MIN), |(lo, hi), &(m, _)| (lo.min(m), hi.max(m)));
    let (y_min, y_max) = all().fold((f64::MAX, f64::MIN), |(lo, hi), &(_, us)| (lo.min(us), hi.max(us)));
    let devices = group.devices.iter().cloned().collect::<Vec<_>>().join(" + ");
    let title = format!("{} {} on {devices}", group.model, group.dtype);

    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((x_min / 1.5..x_max * 1.5).log_scale(), (y_min / 1.5..y_max * 1.5).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("tokens M")
        .y_desc("time (us)")
        .x_label_formatter(&|v| fmt_tick(*v))
        .y_label_formatter(&|v| fmt_tick(*v))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;

    for (imp, points) in &series {
        let color = imp.color();
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?
            .label(format!("{} (device)", imp.name()))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    let floor_style = BLACK.stroke_width(2);
    chart
        .draw_series(DashedLineSeries::new(floor.iter().copied(), 8, 6, floor_style))?
        .label("floor")
        .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 24, y)], 6, 4, floor_style));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(imp: &str, m: u64, device_us: Option<f64>, error: Option<&str>) -> serde_json::Value {
        json!({
            "impl": imp, "model": "qwen3-0.6b", "M": m, "H": 1024, "N": 4096, "bias": false,
            "bytes": 8_400_000 + m * 10_240, "flops": 2 * m * 4096 * 1024, "floor_us": 5.0 * m as f64,
            "device_us": device_us, "host_us": device_us.map(|d| d * 1.5), "rel_err": device_us.map(|_| 1e-3),
            "error": error,
        })
    }

    fn file_json(tool: &str, device: &str, rows: Vec<serde_json::Value>) -> String {
        json!({
            "schema": 1, "tool": tool, "device": device, "date": "2026-11-23", "dtype": "bf16",
            "copy_gbs": 3000.0, "tensor_tflops": 694.0, "l2_bytes": 52_428_800, "rotation_copies": 4,
            "rows": rows,
        })
        .to_string()
    }

    fn source(name: &str, text: &str) -> Source {
        Source { name: name.into(), file: parse(text, name).unwrap() }
    }

    fn fused_and_peers(peer_device: &str) -> Vec<Source> {
        let fused = file_json(
            "fused-qkv bench",
            "NVIDIA H100",
            vec![row("fused-qkv", 1, Some(10.0), None), row("fused-qkv", 8, None, Some("launch failed"))],
        );
        let peers = file_json(
            "peers.py",
            peer_device,
            vec![
                row("eager", 1, Some(20.0), None),
                row("compiled", 1, Some(8.0), None),
                row("eager", 8, Some(50.0), None),
            ],
        );
        vec![source("a.json", &fused), source("b.json", &peers)]
    }

    #[test]
    fn parses_a_sample() {
        let text = r#"{"schema": 1, "tool": "peers.py", "device": "NVIDIA H100 80GB HBM3", "date": "2026-11-23",
            "dtype": "f16", "copy_gbs": 2950.5, "tensor_tflops": null, "l2_bytes": 52428800, "rotation_copies": 3,
            "rows": [{"impl": "compiled", "model": "qwen3-8b", "M": 128, "H": 4096, "N": 6144, "bias": true,
                      "bytes": 1, "flops": 2, "floor_us": 17.8, "device_us": 40.25, "host_us": null,
                      "rel_err": 0.002, "error": null}]}"#;
        let f = parse(text, "sample.json").unwrap();
        assert_eq!(f.tool, Tool::Peers);
        assert_eq!(f.dtype, Dtype::F16);
        assert_eq!(f.tensor_tflops, None);
        assert_eq!(f.rows.len(), 1);
        let r = &f.rows[0];
        let shape = (r.imp, r.model.as_str(), r.m, r.h, r.n, r.bias);
        assert_eq!(shape, (Impl::Compiled, "qwen3-8b", 128, 4096, 6144, true));
        assert_eq!((r.device_us, r.host_us, r.error.as_deref()), (Some(40.25), None, None));
    }

    #[test]
    fn merges_and_tabulates_ratios() {
        let sources = fused_and_peers("NVIDIA H100");
        let merged = merge(&sources);
        assert!(merged.warnings.is_empty(), "{:?}", merged.warnings);
        assert_eq!(merged.groups.len(), 1);
        let t = table(&merged.groups[&(Dtype::Bf16, "qwen3-0.6b".to_string())]);
        // M=1: floor 5, fused 10 (host 15), eager 20, compiled 8: fused/floor 2, /eager 0.5, /compiled 1.25.
        let header = "| M | floor (us) | fused-qkv device (us) | fused-qkv host (us) | eager device (us) \
                      | compiled device (us) | fused/floor | fused/eager | fused/compiled |";
        assert!(t.contains(header), "{t}");
        assert!(t.contains("| 1 | 5.00 | 10.0 | 15.0 | 20.0 | 8.00 | 2.00 | 0.500 | 1.25 |"), "{t}");
        // M=8: the fused row is an error; compiled is missing.
        assert!(t.contains("| 8 | 40.0 | err | err | 50.0 | - | - | - | - |"), "{t}");
        assert!(t.contains("- M=8, fused-qkv: launch failed"), "{t}");
        assert!(!t.contains("seed"), "{t}");
        let full = report(&sources, &merged);
        assert!(full.contains(METHOD) && full.contains("copy 3000 GB/s, tensor 694 TFLOP/s"), "{full}");
    }

    #[test]
    fn warns_on_different_devices() {
        let merged = merge(&fused_and_peers("NVIDIA A100"));
        assert_eq!(merged.warnings.len(), 1);
        assert!(merged.warnings[0].contains("different devices"), "{:?}", merged.warnings);
    }

    #[test]
    fn rejects_another_schema() {
        let text = file_json("peers.py", "x", vec![]).replace("\"schema\":1", "\"schema\":2");
        let path = std::env::temp_dir().join(format!("xtask-report-schema2-{}.json", std::process::id()));
        std::fs::write(&path, text).unwrap();
        let err = load(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains(&path.display().to_string()) && err.contains("schema version 2"), "{err}");
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(fmt_us(866.8), "866.8");
        assert_eq!(fmt_us(2.834), "2.83");
        assert_eq!(fmt_us(0.07123), "0.0712");
        assert_eq!(fmt_sig(14.44, 0), "14.4");
        assert_eq!(fmt_sig(1234.5, 0), "1234");
        assert_eq!(fmt_tick(100.0), "100");
        assert_eq!(fmt_tick(0.5), "0.5");
    }

    #[test]
    fn writes_a_plot() {
        if find_font().is_none() {
            println!("note: no font found, skipping the plot test (set {FONT_ENV})");
            return;
        }
        let merged = merge(&fused_and_peers("NVIDIA H100"));
        let dir = std::env::temp_dir().join(format!("xtask-report-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let group = merged.groups.values().next().unwrap();
        let path = dir.join(plot_file_name(group));
        plot(group, &path).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(len > 0);
        assert_eq!(plot_file_name(group), "plot-bf16-qwen3-0.6b.png");
    }
}
