#!/usr/bin/env python3
"""Checks the model-directory loader against Hugging Face transformers itself (issue 12).

For a small random Qwen3 and Qwen2 model, transformers writes the model directory
(`save_pretrained`: config.json + safetensors) and computes layer i's q, k and v projections of
its input RMSNorm (`self_attn.{q,k,v}_proj(input_layernorm(x))`, bf16, as the model runs them) for
random rows x; then `fused-qkv run --model-dir DIR --layer I --input x --expect qkv` compares every
path of this library (and its float64 reference) with transformers' outputs, each within the bf16
bound. The norm weights and biases are randomised before saving, so a loader that dropped gamma or
a bias would fail.

Usage (on a machine with torch + transformers, e.g. the GPU machine, from the repository root):
    python3 bench/hf_check.py --bin .gpu/bin/fused-qkv --out bench/results/hf-check
Writes one fused-qkv report per model and layer (`<model>-layer<I>.txt`) and `summary.json`;
exits 1 if any comparison fails.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch


def small_config(model_type):
    import transformers

    common = dict(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        torch_dtype="bfloat16",
    )
    if model_type == "qwen3":
        return transformers.Qwen3Config(head_dim=64, **common)
    if model_type == "qwen2":
        return transformers.Qwen2Config(**common)
    raise ValueError(model_type)


def randomise(model, seed):
    """Norm weights and q/k/v biases away from their init (ones, zeros)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.model.layers:
            w = layer.input_layernorm.weight
            w.copy_((torch.rand(w.shape, generator=g) + 0.5).to(w.dtype))
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                if proj.bias is not None:
                    proj.bias.copy_((torch.randn(proj.bias.shape, generator=g) * 0.1).to(proj.bias.dtype))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True, help="the fused-qkv binary")
    p.add_argument("--out", required=True, help="directory for the reports")
    p.add_argument("--tokens", type=int, default=16)
    args = p.parse_args()
    from safetensors.torch import save_file
    import transformers

    os.makedirs(args.out, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    summary = {"transformers": transformers.__version__, "torch": torch.__version__, "device": device,
               "gpu": torch.cuda.get_device_name() if device == "cuda" else None, "cases": []}
    ok = True
    for seed, model_type in enumerate(["qwen3", "qwen2"]):
        try:
            config = small_config(model_type)
        except AttributeError as e:
            print(f"{model_type}: this transformers ({transformers.__version__}) lacks it: {e}")
            summary["cases"].append({"model": model_type, "skipped": str(e)})
            ok = False
            continue
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16)
        randomise(model, seed)
        model = model.to(device).eval()
        with tempfile.TemporaryDirectory() as work:
            model_dir = os.path.join(work, model_type)
            # Small shards: transformers writes an index and several files, as for real models.
            model.save_pretrained(model_dir, safe_serialization=True, max_shard_size="500KB")
            for index, layer in enumerate(model.model.layers):
                g = torch.Generator().manual_seed(100 + index)
                scales = 10 ** (torch.rand(args.tokens, 1, generator=g) * 2 - 1)
                x = (torch.randn(args.tokens, config.hidden_size, generator=g) * scales).to(torch.bfloat16)
                with torch.no_grad():
                    h = layer.input_layernorm(x.to(device))
                    qkv = {
                        name: getattr(layer.self_attn, f"{name}_proj")(h).float().cpu().contiguous()
                        for name in ("q", "k", "v")
                    }
                x_file, qkv_file = os.path.join(work, "x.safetensors"), os.path.join(work, "qkv.safetensors")
                save_file({"x": x.contiguous()}, x_file)
                save_file(qkv, qkv_file)
                cmd = [args.bin, "run", "--model-dir", model_dir, "--layer", str(index), "--input", x_file,
                       "--expect", qkv_file, "--dtype", "bf16", "--iters", "0"]
                run = subprocess.run(cmd, capture_output=True, text=True)
                report = os.path.join(args.out, f"{model_type}-layer{index}.txt")
                with open(report, "w") as f:
                    f.write(f"$ {' '.join(cmd)}\n{run.stdout}{run.stderr}exit status {run.returncode}\n")
                print(f"{model_type} layer {index}: exit {run.returncode}")
                print(run.stdout)
                summary["cases"].append({"model": model_type, "layer": index, "exit": run.returncode})
                ok &= run.returncode == 0
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
