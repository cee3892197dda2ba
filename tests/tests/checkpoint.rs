//! The safetensors loader: round trips for every dtype, layer selection, and every error path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use fused_qkv::checkpoint::{layer_from_bytes, load_layer, tensor_names, ModelDir};
use fused_qkv::{Dtype, DtypeKind, Error, QkvConfig, QkvWeights};
use half::{bf16, f16};
use safetensors::tensor::TensorView;
use safetensors::Dtype as FileDtype;

fn config(bias: bool) -> QkvConfig {
    QkvConfig { hidden: 16, num_heads: 4, num_kv_heads: 2, head_dim: 4, eps: 1e-6, bias }
}

/// A fresh file path under the system temp dir, unique per process and call, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("fused-qkv-checkpoint-{}-{n}-{label}.safetensors", std::process::id());
        TempFile(std::env::temp_dir().join(name))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Little-endian bytes of a dtype's values, as safetensors stores them.
trait LeBytes: Dtype {
    fn le_bytes(values: &[Self]) -> Vec<u8>;
}

impl LeBytes for bf16 {
    fn le_bytes(values: &[Self]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect()
    }
}

impl LeBytes for f16 {
    fn le_bytes(values: &[Self]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect()
    }
}

impl LeBytes for f32 {
    fn le_bytes(values: &[Self]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}

fn file_dtype(kind: DtypeKind) -> FileDtype {
    match kind {
        DtypeKind::Bf16 => FileDtype::BF16,
        DtypeKind::F16 => FileDtype::F16,
        DtypeKind::F32 => FileDtype::F32,
    }
}

/// One tensor to write: its file dtype, shape and raw bytes.
#[derive(Clone)]
struct RawTensor {
    dtype: FileDtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// Tensors by name, to be edited by a test and then serialized.
#[derive(Clone, Default)]
struct Checkpoint(HashMap<String, RawTensor>);

impl Checkpoint {
    /// Adds layer `layer` of `weights` under the Hugging Face names, split back into q, k and v.
    fn with_layer<T: LeBytes>(mut self, layer: usize, weights: &QkvWeights<T>) -> Self {
        let c = &weights.config;
        let (q_rows, kv_rows) = (c.q_cols(), c.kv_cols());
        let names = tensor_names(layer, c.bias);
        let weight = |rows: std::ops::Range<usize>| &weights.qkv_weight[rows.start * c.hidden..rows.end * c.hidden];
        let mut put = |name: &str, shape: Vec<usize>, values: &[T]| {
            let tensor = RawTensor { dtype: file_dtype(T::KIND), shape, bytes: T::le_bytes(values) };
            self.0.insert(name.to_string(), tensor);
        };
        put(&names[0], vec![c.hidden], &weights.gamma);
        put(&names[1], vec![q_rows, c.hidden], weight(0..q_rows));
        put(&names[2], vec![kv_rows, c.hidden], weight(q_rows..q_rows + kv_rows));
        put(&names[3], vec![kv_rows, c.hidden], weight(q_rows + kv_rows..q_rows + 2 * kv_rows));
        if let Some(bias) = &weights.bias {
            put(&names[4], vec![q_rows], &bias[..q_rows]);
            put(&names[5], vec![kv_rows], &bias[q_rows..q_rows + kv_rows]);
            put(&names[6], vec![kv_rows], &bias[q_rows + kv_rows..]);
        }
        self
    }

    fn without(mut self, name: &str) -> Self {
        assert!(self.0.remove(name).is_some(), "test bug: no tensor {name}");
        self
    }

    fn edit(mut self, name: &str, change: impl FnOnce(&mut RawTensor)) -> Self {
        change(self.0.get_mut(name).expect("test bug: no such tensor"));
        self
    }

    fn to_bytes(&self) -> Vec<u8> {
        let views = self.0.iter().map(|(name, t)| {
            (name.clone(), TensorView::new(t.dtype, t.shape.clone(), &t.bytes).expect("consistent test tensor"))
        });
        safetensors::serialize(views, &None).expect("serialize")
    }

    fn write(&self, label: &str) -> TempFile {
        let file = TempFile::new(label);
        std::fs::write(&file.0, self.to_bytes()).expect("write temp checkpoint");
        file
    }
}

fn random<T: Dtype>(config: QkvConfig, seed: u64) -> QkvWeights<T> {
    QkvWeights::random(config, seed).expect("valid test config")
}

/// Loads layer `layer` from `checkpoint` in memory; the path only appears in messages.
fn load<T: Dtype>(checkpoint: &Checkpoint, config: &QkvConfig, layer: usize) -> Result<QkvWeights<T>, Error> {
    layer_from_bytes(&checkpoint.to_bytes(), Path::new("test.safetensors"), config, layer)
}

/// Asserts `result` is `Error::Checkpoint` whose reason contains every one of `needles`.
fn assert_checkpoint_error<T: std::fmt::Debug>(result: Result<T, Error>, needles: &[&str]) {
    match result {
        Err(Error::Checkpoint { reason, .. }) => {
            for needle in needles {
                assert!(reason.contains(needle), "reason {reason:?} does not mention {needle:?}");
            }
        }
        other => panic!("expected Error::Checkpoint mentioning {needles:?}, got {other:?}"),
    }
}

fn assert_bitwise_eq<T: LeBytes>(loaded: &QkvWeights<T>, expected: &QkvWeights<T>) {
    assert_eq!(loaded.config, expected.config);
    assert_eq!(T::le_bytes(&loaded.gamma), T::le_bytes(&expected.gamma), "gamma");
    assert_eq!(T::le_bytes(&loaded.qkv_weight), T::le_bytes(&expected.qkv_weight), "qkv_weight");
    assert_eq!(loaded.bias.as_deref().map(T::le_bytes), expected.bias.as_deref().map(T::le_bytes), "bias");
}

fn round_trip_through_file<T: LeBytes>() {
    for bias in [false, true] {
        let config = config(bias);
        let weights = random::<T>(config, 7);
        let file = Checkpoint::default().with_layer(0, &weights).write(T::KIND.name());
        let loaded = load_layer::<T>(&file.0, &config, 0).expect("load");
        assert_bitwise_eq(&loaded, &weights);
    }
}

#[test]
fn round_trip_bf16() {
    round_trip_through_file::<bf16>();
}

#[test]
fn round_trip_f16() {
    round_trip_through_file::<f16>();
}

#[test]
fn round_trip_f32() {
    round_trip_through_file::<f32>();
}

#[test]
fn round_trip_keeps_special_values_bit_for_bit() {
    let config = config(false);
    let mut weights = random::<bf16>(config, 1);
    let specials = [0x7FC1, 0x7F81, 0xFF80, 0x8000, 0x0001].map(bf16::from_bits);
    weights.qkv_weight[..specials.len()].copy_from_slice(&specials);
    let loaded = load::<bf16>(&Checkpoint::default().with_layer(0, &weights), &config, 0).expect("load");
    assert_bitwise_eq(&loaded, &weights);
}

fn selects_layer_by_index<T: LeBytes>() {
    let config = config(true);
    let (layer0, layer1) = (random::<T>(config, 10), random::<T>(config, 11));
    let checkpoint = Checkpoint::default().with_layer(0, &layer0).with_layer(1, &layer1);
    assert_bitwise_eq(&load::<T>(&checkpoint, &config, 0).expect("layer 0"), &layer0);
    assert_bitwise_eq(&load::<T>(&checkpoint, &config, 1).expect("layer 1"), &layer1);
}

#[test]
fn selects_layer_by_index_for_every_dtype() {
    selects_layer_by_index::<bf16>();
    selects_layer_by_index::<f16>();
    selects_layer_by_index::<f32>();
}

#[test]
fn missing_tensor_is_named() {
    let config = config(false);
    let k_name = "model.layers.0.self_attn.k_proj.weight";
    let checkpoint = Checkpoint::default().with_layer(0, &random::<f16>(config, 2)).without(k_name);
    assert_checkpoint_error(load::<f16>(&checkpoint, &config, 0), &[k_name]);
}

#[test]
fn every_missing_tensor_is_listed() {
    let config = config(false);
    let [norm, q, ..] = <[String; 4]>::try_from(tensor_names(0, false)).expect("four names");
    let checkpoint = Checkpoint::default().with_layer(0, &random::<f32>(config, 2)).without(&norm).without(&q);
    assert_checkpoint_error(load::<f32>(&checkpoint, &config, 0), &[&norm, &q]);
}

#[test]
fn missing_layer_says_how_many_layers_the_file_has() {
    let config = config(false);
    let weights = random::<bf16>(config, 3);
    let checkpoint = Checkpoint::default().with_layer(0, &weights).with_layer(1, &weights);
    assert_checkpoint_error(load::<bf16>(&checkpoint, &config, 5), &["layer 5", "2 layers"]);
}

#[test]
fn missing_layer_in_a_file_without_layers() {
    let config = config(false);
    let mut checkpoint = Checkpoint::default();
    let bytes = vec![0u8; 4];
    checkpoint.0.insert("lm_head.weight".into(), RawTensor { dtype: FileDtype::F32, shape: vec![1], bytes });
    assert_checkpoint_error(load::<f32>(&checkpoint, &config, 0), &["layer 0", "no model.layers."]);
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let config = config(false);
    let k_name = "model.layers.0.self_attn.k_proj.weight";
    // Same element count, transposed: only the shape check can catch it.
    let checkpoint = Checkpoint::default()
        .with_layer(0, &random::<bf16>(config, 4))
        .edit(k_name, |t| t.shape = vec![config.hidden, config.kv_cols()]);
    assert_checkpoint_error(load::<bf16>(&checkpoint, &config, 0), &[k_name, "[8, 16]", "[16, 8]"]);

    let norm_name = "model.layers.0.input_layernorm.weight";
    let checkpoint = Checkpoint::default().with_layer(0, &random::<bf16>(config, 4)).edit(norm_name, |t| {
        t.shape = vec![8];
        t.bytes.truncate(16);
    });
    assert_checkpoint_error(load::<bf16>(&checkpoint, &config, 0), &[norm_name, "[16]", "[8]"]);
}

#[test]
fn wrong_dtype_is_named_with_both_dtypes() {
    let config = config(false);
    let checkpoint = Checkpoint::default().with_layer(0, &random::<f32>(config, 5));
    let gamma = "model.layers.0.input_layernorm.weight";
    assert_checkpoint_error(load::<bf16>(&checkpoint, &config, 0), &[gamma, "F32", "BF16"]);
    assert_checkpoint_error(load::<f16>(&checkpoint, &config, 0), &[gamma, "F32", "F16"]);

    // One stray tensor in another dtype is caught too; nothing is converted.
    let v_name = "model.layers.0.self_attn.v_proj.weight";
    let weights = random::<f16>(config, 5);
    let checkpoint = Checkpoint::default().with_layer(0, &weights).edit(v_name, |t| t.dtype = FileDtype::BF16);
    assert_checkpoint_error(load::<f16>(&checkpoint, &config, 0), &[v_name, "BF16", "F16"]);
}

#[test]
fn missing_bias_when_config_wants_one() {
    let weights = random::<f32>(config(false), 6);
    let checkpoint = Checkpoint::default().with_layer(0, &weights);
    assert_checkpoint_error(
        load::<f32>(&checkpoint, &config(true), 0),
        &["model.layers.0.self_attn.q_proj.bias", "model.layers.0.self_attn.v_proj.bias", "config.bias"],
    );

    let k_bias = "model.layers.0.self_attn.k_proj.bias";
    let checkpoint = Checkpoint::default().with_layer(0, &random::<f32>(config(true), 6)).without(k_bias);
    assert_checkpoint_error(load::<f32>(&checkpoint, &config(true), 0), &[k_bias]);
}

#[test]
fn bias_in_file_with_config_without_bias_is_an_error() {
    let checkpoint = Checkpoint::default().with_layer(0, &random::<bf16>(config(true), 8));
    assert_checkpoint_error(
        load::<bf16>(&checkpoint, &config(false), 0),
        &["model.layers.0.self_attn.q_proj.bias", "config.bias is false"],
    );
}

#[test]
fn garbage_bytes_are_not_safetensors() {
    let path = Path::new("garbage.safetensors");
    let config = config(false);
    let valid = Checkpoint::default().with_layer(0, &random::<bf16>(config, 9)).to_bytes();
    let header_too_long = [u64::MAX.to_le_bytes().as_slice(), b"{}"].concat();
    let truncated = &valid[..valid.len() - 1];
    let not_json = [8u64.to_le_bytes().as_slice(), b"not json"].concat();
    for bytes in
        [&b""[..], b"abc", b"garbage bytes, definitely not a checkpoint", &header_too_long, truncated, &not_json]
    {
        assert_checkpoint_error(layer_from_bytes::<bf16>(bytes, path, &config, 0), &["not a valid safetensors"]);
    }
}

#[test]
fn garbage_file_is_a_checkpoint_error_with_its_path() {
    let file = TempFile::new("garbage");
    std::fs::write(&file.0, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": garbage}").expect("write");
    match load_layer::<f32>(&file.0, &config(false), 0) {
        Err(Error::Checkpoint { path, .. }) => assert_eq!(path, file.0),
        other => panic!("expected Error::Checkpoint, got {other:?}"),
    }
}

#[test]
fn nonexistent_file_is_an_io_error() {
    let file = TempFile::new("never-written");
    match load_layer::<bf16>(&file.0, &config(false), 0) {
        Err(Error::Io { path, source }) => {
            assert_eq!(path, file.0);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
}

#[test]
fn invalid_config_is_rejected_before_reading_tensors() {
    let checkpoint = Checkpoint::default().with_layer(0, &random::<f32>(config(false), 12));
    let bad = QkvConfig { num_kv_heads: 3, ..config(false) };
    assert!(matches!(load::<f32>(&checkpoint, &bad, 0), Err(Error::InvalidConfig(_))));
}

/// A fresh directory under the system temp dir, removed (with its files) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fused-qkv-model-{}-{n}-{label}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp model dir");
        TempDir(dir)
    }

    fn put(&self, name: &str, bytes: impl AsRef<[u8]>) {
        std::fs::write(self.0.join(name), bytes).expect("write temp model file");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Hugging Face config.json for `config` with `layers` layers.
fn hf_config_json(model_type: &str, config: &QkvConfig, layers: usize) -> String {
    format!(
        r#"{{"model_type": "{model_type}", "hidden_size": {}, "num_attention_heads": {}, "num_key_value_heads": {},
            "head_dim": {}, "rms_norm_eps": {}, "attention_bias": {}, "num_hidden_layers": {layers},
            "max_position_embeddings": 4096, "rope_theta": 1000000.0, "torch_dtype": "bfloat16"}}"#,
        config.hidden, config.num_heads, config.num_kv_heads, config.head_dim, config.eps, config.bias
    )
}

/// A model directory of `layers` random layers in two shards and an index: shard 1 holds layer 0
/// and all of layer 1 but its v projection, shard 2 the rest (a layer split across shards).
fn sharded_model(model_type: &str, config: QkvConfig, layers: usize) -> (TempDir, Vec<QkvWeights<bf16>>) {
    let dir = TempDir::new(model_type);
    let weights: Vec<QkvWeights<bf16>> = (0..layers).map(|l| random(config, 100 + l as u64)).collect();
    let all = weights.iter().enumerate().fold(Checkpoint::default(), |c, (l, w)| c.with_layer(l, w));
    let in_first = |name: &str| {
        name.starts_with("model.layers.0.") || (name.starts_with("model.layers.1.") && !name.contains("v_proj"))
    };
    let mut shards = [Checkpoint::default(), Checkpoint::default()];
    let mut weight_map = serde_json::Map::new();
    for (name, tensor) in &all.0 {
        let (shard, file) = if in_first(name) {
            (0, "model-00001-of-00002.safetensors")
        } else {
            (1, "model-00002-of-00002.safetensors")
        };
        shards[shard].0.insert(name.clone(), tensor.clone());
        weight_map.insert(name.clone(), file.into());
    }
    dir.put("model-00001-of-00002.safetensors", shards[0].to_bytes());
    dir.put("model-00002-of-00002.safetensors", shards[1].to_bytes());
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    dir.put("model.safetensors.index.json", index.to_string());
    dir.put("config.json", hf_config_json(model_type, &config, layers));
    (dir, weights)
}

#[test]
fn sharded_model_dir_loads_every_layer_bit_for_bit() {
    for (model_type, bias) in [("qwen3", false), ("qwen2", true), ("llama", false)] {
        let (dir, weights) = sharded_model(model_type, config(bias), 3);
        let model = ModelDir::open(&dir.0).expect("open");
        assert_eq!(model.config().qkv, config(bias));
        assert_eq!(model.config().layers, 3);
        for (loaded, expected) in model.load_layers::<bf16>(0..3).expect("load").iter().zip(&weights) {
            assert_bitwise_eq(loaded, expected);
        }
        assert_checkpoint_error(model.load_layer::<bf16>(3), &["layer 3", "3 layers"]);
        // Prologue weights: Qwen3 needs its q/k norms, which this directory lacks.
        let prologue = model.load_prologue_layer::<bf16>(0);
        if model_type == "qwen3" {
            assert_checkpoint_error(prologue, &["model.layers.0.self_attn.q_norm.weight", "missing"]);
        } else {
            let prologue = prologue.expect("prologue weights");
            assert!(prologue.q_norm.is_none() && prologue.k_norm.is_none());
            assert_bitwise_eq(&prologue.qkv, &weights[0]);
        }
        // Tensor-parallel shards come from the same tensors.
        let shard = model.load_layer_shard::<bf16>(1, 1, 2).expect("shard");
        assert_bitwise_eq(&shard, &weights[1].shard(1, 2).unwrap());
        assert_checkpoint_error(model.load_layer::<f16>(0), &["BF16"]);
    }
}

#[test]
fn qwen3_prologue_layer_loads_its_q_and_k_norms() {
    let dir = TempDir::new("qk-norm");
    let weights: QkvWeights<bf16> = random(config(false), 9);
    let norm =
        |seed: u16| -> Vec<bf16> { (0..4).map(|i| bf16::from_f32(1.0 + f32::from(seed * 4 + i) / 16.0)).collect() };
    let (q_norm, k_norm) = (norm(1), norm(2));
    let mut checkpoint = Checkpoint::default().with_layer(0, &weights);
    for (name, values) in [("q_norm", &q_norm), ("k_norm", &k_norm)] {
        let tensor = RawTensor { dtype: FileDtype::BF16, shape: vec![4], bytes: bf16::le_bytes(values) };
        checkpoint.0.insert(format!("model.layers.0.self_attn.{name}.weight"), tensor);
    }
    dir.put("model.safetensors", checkpoint.to_bytes());
    dir.put("config.json", hf_config_json("qwen3", &config(false), 1));
    let loaded = ModelDir::open(&dir.0).unwrap().load_prologue_layer::<bf16>(0).expect("prologue weights");
    assert_bitwise_eq(&loaded.qkv, &weights);
    assert_eq!(loaded.q_norm.as_deref(), Some(q_norm.as_slice()));
    assert_eq!(loaded.k_norm.as_deref(), Some(k_norm.as_slice()));
    // A Llama config with q/k norms in the checkpoint: not silently ignored.
    dir.put("config.json", hf_config_json("llama", &config(false), 1));
    let error = ModelDir::open(&dir.0).unwrap().load_prologue_layer::<bf16>(0).unwrap_err().to_string();
    assert!(error.contains("q_norm.weight") && error.contains("no q/k norm"), "{error}");
}

#[test]
fn single_file_model_dir_loads() {
    let dir = TempDir::new("single");
    let weights: QkvWeights<bf16> = random(config(false), 5);
    dir.put("model.safetensors", Checkpoint::default().with_layer(0, &weights).to_bytes());
    dir.put("config.json", hf_config_json("qwen3", &config(false), 1));
    let model = ModelDir::open(&dir.0).expect("open");
    assert_bitwise_eq(&model.load_layer::<bf16>(0).unwrap(), &weights);
}

/// Opening fails with an error that names what is wrong.
fn assert_open_fails(dir: &TempDir, needles: &[&str]) {
    let error = match ModelDir::open(&dir.0) {
        Ok(_) => panic!("opened a broken model dir (expected {needles:?})"),
        Err(e) => e.to_string(),
    };
    for needle in needles {
        assert!(error.contains(needle), "error {error:?} does not mention {needle:?}");
    }
}

#[test]
fn broken_model_dirs_are_errors_naming_the_problem() {
    let shard = "model-00002-of-00002.safetensors";
    // Truncated shard: its header promises more bytes than the file has.
    let (dir, _) = sharded_model("qwen3", config(false), 3);
    let bytes = std::fs::read(dir.0.join(shard)).unwrap();
    dir.put(shard, &bytes[..bytes.len() - 7]);
    assert_open_fails(&dir, &[shard, "truncated or corrupt"]);
    // Garbage in place of a shard.
    dir.put(shard, b"not a safetensors file at all");
    assert_open_fails(&dir, &[shard, "not a valid safetensors file"]);
    // A shard the index names is missing.
    std::fs::remove_file(dir.0.join(shard)).unwrap();
    assert_open_fails(&dir, &[shard]);
    // The index places a tensor in a shard that lacks it.
    let (dir, _) = sharded_model("qwen3", config(false), 3);
    let first = Checkpoint(
        std::iter::once((
            "model.layers.9.input_layernorm.weight".to_string(),
            RawTensor { dtype: FileDtype::BF16, shape: vec![16], bytes: vec![0; 32] },
        ))
        .collect(),
    );
    dir.put("model-00001-of-00002.safetensors", first.to_bytes());
    assert_open_fails(&dir, &["model-00001-of-00002.safetensors", "model.layers.0.input_layernorm.weight", "lacks"]);
    // An index that is not JSON, or names a path outside the directory.
    let (dir, _) = sharded_model("qwen3", config(false), 3);
    dir.put("model.safetensors.index.json", "{ not json");
    assert_open_fails(&dir, &["model.safetensors.index.json", "not a safetensors index"]);
    dir.put("model.safetensors.index.json", r#"{"weight_map": {"a": "../elsewhere.safetensors"}}"#);
    assert_open_fails(&dir, &["../elsewhere.safetensors", "not a file name"]);
    // config.json without a field, with an unknown model type, or absent.
    let (dir, _) = sharded_model("qwen3", config(false), 3);
    dir.put("config.json", r#"{"model_type": "qwen3", "hidden_size": 16, "num_attention_heads": 4}"#);
    assert_open_fails(&dir, &["config.json", "`rms_norm_eps` is missing"]);
    dir.put("config.json", hf_config_json("gpt2", &config(false), 3));
    assert_open_fails(&dir, &["gpt2"]);
    std::fs::remove_file(dir.0.join("config.json")).unwrap();
    assert_open_fails(&dir, &["config.json"]);
    // Neither checkpoint form.
    let dir = TempDir::new("empty");
    dir.put("config.json", hf_config_json("qwen3", &config(false), 1));
    assert_open_fails(&dir, &["neither model.safetensors nor model.safetensors.index.json"]);
}
