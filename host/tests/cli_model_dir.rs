//! `fused-qkv run --model-dir`: the CLI reads a sharded Hugging Face model directory, and a broken
//! one is an error (exit status 2) naming the problem. Runs on the CPU path where there is no GPU.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fused_qkv::checkpoint::tensor_names;
use fused_qkv::half::bf16;
use fused_qkv::{QkvConfig, QkvWeights};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

const CONFIG: QkvConfig = QkvConfig { hidden: 32, num_heads: 4, num_kv_heads: 2, head_dim: 8, eps: 1e-6, bias: false };

/// A model directory under the temp dir, removed on drop.
struct ModelDir(PathBuf);

impl Drop for ModelDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bytes(values: &[bf16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_bits().to_le_bytes()).collect()
}

/// Two layers, one per shard, with an index and a Qwen3 config.json.
fn model_dir(label: &str) -> ModelDir {
    let dir = std::env::temp_dir().join(format!("fused-qkv-cli-{}-{label}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut weight_map = serde_json::Map::new();
    for layer in 0..2 {
        let w = QkvWeights::<bf16>::random(CONFIG, layer as u64).unwrap();
        let (h, q, kv) = (CONFIG.hidden, CONFIG.q_cols(), CONFIG.kv_cols());
        let names = tensor_names(layer, false);
        let parts: Vec<(Vec<usize>, Vec<u8>)> = vec![
            (vec![h], bytes(&w.gamma)),
            (vec![q, h], bytes(&w.qkv_weight[..q * h])),
            (vec![kv, h], bytes(&w.qkv_weight[q * h..(q + kv) * h])),
            (vec![kv, h], bytes(&w.qkv_weight[(q + kv) * h..])),
        ];
        let file = format!("model-0000{}-of-00002.safetensors", layer + 1);
        let views: Vec<(String, TensorView)> = names
            .iter()
            .zip(&parts)
            .map(|(name, (shape, data))| (name.clone(), TensorView::new(Dtype::BF16, shape.clone(), data).unwrap()))
            .collect();
        std::fs::write(dir.join(&file), safetensors::serialize(views, &None).unwrap()).unwrap();
        for name in names {
            weight_map.insert(name, file.clone().into());
        }
    }
    let index = serde_json::json!({ "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let config = serde_json::json!({
        "model_type": "qwen3", "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 8, "rms_norm_eps": 1e-6, "num_hidden_layers": 2, "max_position_embeddings": 128,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    ModelDir(dir)
}

fn run(dir: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fused-qkv"))
        .args(["run", "--model-dir", dir.to_str().unwrap(), "--tokens", "4", "--iters", "0"])
        .args(extra)
        .output()
        .expect("running fused-qkv")
}

#[test]
fn run_reads_a_sharded_model_dir() {
    let dir = model_dir("ok");
    let out = run(&dir.0, &["--layer", "1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("{}, layer 1", dir.0.display())), "{stdout}");
    assert!(stdout.contains("H = 32, N = 64") && stdout.contains("PASS"), "{stdout}");
}

#[test]
fn run_names_what_is_wrong_with_a_model_dir() {
    let dir = model_dir("broken");
    let error = |extra: &[&str]| {
        let out = run(&dir.0, extra);
        assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(error(&["--layer", "2"]).contains("layer 2 is past the model's 2 layers"));
    let shard = dir.0.join("model-00002-of-00002.safetensors");
    let full = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &full[..full.len() - 3]).unwrap();
    let message = error(&[]);
    assert!(message.contains("model-00002-of-00002.safetensors") && message.contains("truncated"), "{message}");
    std::fs::remove_file(dir.0.join("config.json")).unwrap();
    assert!(error(&[]).contains("config.json"));
}

#[test]
fn run_prologue_checks_the_cpu_prologue_on_a_model_dir() {
    let dir = model_dir("prologue");
    // This Qwen3 checkpoint lacks the q/k norm weights Qwen3 needs: an error naming them.
    let out = run(&dir.0, &["--prologue"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("self_attn.q_norm.weight"));
    // As a Llama model (no q/k norm) it runs and passes against the oracle.
    let config = std::fs::read_to_string(dir.0.join("config.json")).unwrap().replace("qwen3", "llama");
    std::fs::write(dir.0.join("config.json"), config).unwrap();
    let out = run(&dir.0, &["--prologue", "--layer", "1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("prologue: residual add, q/k norm no") && stdout.contains("PASS"), "{stdout}");
}
