"""RouteLab vs Hugging Face transformers: batch-1 decode speed on the GPU, side by side.

Run on the GPU machine (README, "On a GPU"), from the repository root, with the carried binary:

    export LD_LIBRARY_PATH=/usr/local/cuda/lib64
    /opt/torch/.venv/bin/python3 bench/gpu_bench.py --routelab ./routelab [--models olmoe,llama3-8b]

For each real configuration below (random weights, bf16, 512-token prompt, 64 greedy steps):

- transformers, as researchers run it today (the peer figures this script prints were taken this
  way): plain decode with `set_experts_implementation("batched_mm")` after prefill (what
  `generate()` does); router capture = `output_router_logits=True` copied to host each step;
  router + attention capture = `attn_implementation="eager"` with `output_attentions=True` too,
  both copied to host each step;
- RouteLab: `routelab bench --json` on the same configuration (config.json plus
  random_weights.json, the tensor names and shapes transformers builds, weights drawn on the
  GPU): plain, router capture, full capture (router + per-head attention statistics +
  contributions);
- the memory-bandwidth limit: measured device-to-device copy bandwidth (bytes read + written per
  second) / bytes of weights read per decoded token (active parameters × 2: unselected experts
  and all but one embedding row excluded), KV cache excluded.

Prints one table with the ratios the project's goals are stated in (issue 7) and writes it as
JSON next to the models (--out).

`--dry-run` runs the whole script on the CPU with every configuration shrunk (2 layers, width
64, the real expert counts and routing), 16-token prompt, 4 steps, with a CPU build of
RouteLab: a check of the script itself (transformers' capture options, the weight names
RouteLab reads, the JSON and the table) before GPU time is spent on it. Its figures mean
nothing.
"""
import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

# Real configurations (values from each model's config.json on the Hugging Face hub).
CONFIGS = {
    "olmoe-1b-7b": dict(model_type="olmoe", vocab_size=50304, hidden_size=2048, intermediate_size=1024,
                        num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=16, num_experts=64,
                        num_experts_per_tok=8, norm_topk_prob=False, max_position_embeddings=4096,
                        rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False, clip_qkv=None),
    "qwen1.5-moe-a2.7b": dict(model_type="qwen2_moe", vocab_size=151936, hidden_size=2048, intermediate_size=5632,
                              moe_intermediate_size=1408, shared_expert_intermediate_size=5632,
                              num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16,
                              num_experts=60, num_experts_per_tok=4, norm_topk_prob=False,
                              max_position_embeddings=8192, rope_theta=1000000.0, rms_norm_eps=1e-6,
                              decoder_sparse_step=1, mlp_only_layers=[], tie_word_embeddings=False),
    "qwen3-30b-a3b": dict(model_type="qwen3_moe", vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                          moe_intermediate_size=768, num_hidden_layers=48, num_attention_heads=32,
                          num_key_value_heads=4, head_dim=128, num_experts=128, num_experts_per_tok=8,
                          norm_topk_prob=True, max_position_embeddings=40960, rope_theta=1000000.0,
                          rms_norm_eps=1e-6, decoder_sparse_step=1, mlp_only_layers=[], tie_word_embeddings=False),
    "mixtral-8x7b-16l": dict(model_type="mixtral", vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                             num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                             num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=32768,
                             rope_theta=1000000.0, rms_norm_eps=1e-5, sliding_window=None, tie_word_embeddings=False),
    "llama3-8b": dict(model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                      max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False),
}

PROMPT, STEPS, REPEATS = 512, 64, 3
DEVICE = "cuda"


def shrink(spec):
    """A configuration of the same family and routing, small enough for a CPU (--dry-run)."""
    s = dict(spec, vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, max_position_embeddings=256)
    s["num_key_value_heads"] = 4 if spec["num_key_value_heads"] == spec["num_attention_heads"] else 2
    if "head_dim" in s:
        s["head_dim"] = 16
    for k, v in (("moe_intermediate_size", 32), ("shared_expert_intermediate_size", 64)):
        if k in s:
            s[k] = v
    return s


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def make_config(spec):
    from transformers import AutoConfig
    spec = dict(spec)
    return AutoConfig.for_model(spec.pop("model_type"), **spec)


def active_params(model, cfg):
    """Parameters read per decoded token: everything but the unselected experts' weights and
    the embedding table (one row of it is read)."""
    total = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
    e = getattr(cfg, "num_experts", None) or getattr(cfg, "num_local_experts", None)
    if not e:
        return total
    k = cfg.num_experts_per_tok
    expert = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n or n.endswith(".experts.gate_up_proj") or n.endswith(".experts.down_proj"))
    return total - expert * (e - k) // e


def copy_bandwidth():
    x = torch.empty((2 << 30) if DEVICE == "cuda" else (64 << 20), dtype=torch.uint8, device=DEVICE)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    sync()
    t = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    sync()
    bw = 2 * 10 * x.numel() / (time.perf_counter() - t)  # read + write
    del x, y
    return bw


@torch.no_grad()
def hf_decode(model, ids, router, attn):
    """Median tok/s of STEPS greedy steps after prefill, capture copied to host each step."""
    rates = []
    for rep in range(REPEATS + 1):
        out = model(input_ids=ids, use_cache=True)
        if hasattr(model, "set_experts_implementation"):
            try:
                model.set_experts_implementation("batched_mm")
            except Exception:
                pass
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        sync()
        t = time.perf_counter()
        for _ in range(STEPS):
            kw = {}
            if router:
                kw["output_router_logits"] = True
            if attn:
                kw["output_attentions"] = True
            out = model(input_ids=tok, past_key_values=past, use_cache=True, **kw)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
            if router and getattr(out, "router_logits", None) is not None:
                _ = [r.float().cpu() for r in out.router_logits]
            if attn and out.attentions is not None:
                _ = [a.float().cpu() for a in out.attentions]
            _ = tok.cpu()
        sync()
        if rep:  # the first is a warm-up
            rates.append(STEPS / (time.perf_counter() - t))
    return statistics.median(rates)


def build_hf(cfg, attn_impl):
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    with torch.device(DEVICE):
        return AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation=attn_impl).eval()


def write_routelab_dir(name, cfg, out):
    """config.json + random_weights.json (names and shapes from a meta-device model) + a tokenizer."""
    from transformers import AutoModelForCausalLM
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(d)
    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(cfg)
    sd = m.state_dict()
    try:
        # The names and layout save_pretrained writes (what checkpoints on the hub hold; e.g.
        # Mixtral's per-expert block_sparse_moe.experts.{e}.w1), not transformers 5's fused
        # in-memory ones. Works on meta tensors: only shapes move.
        from transformers.core_model_loading import revert_weight_conversion
        sd = revert_weight_conversion(m, sd)
    except ImportError:
        pass
    (d / "random_weights.json").write_text(json.dumps({"seed": 0, "tensors": {k: list(v.shape) for k, v in sd.items()}}))
    tok = Path("tests/fixtures/tokenizer")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if (tok / f).exists():
            (d / f).write_bytes((tok / f).read_bytes())
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--routelab", default="./routelab")
    ap.add_argument("--models", default=",".join(CONFIGS))
    ap.add_argument("--out", type=Path, default=Path("/tmp/rl-bench"))
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="shrunk configurations on the CPU: checks the script, not speed")
    args = ap.parse_args()
    global DEVICE, PROMPT, STEPS, REPEATS
    if args.dry_run:
        DEVICE, PROMPT, STEPS, REPEATS = "cpu", 16, 4, 1
    bw = copy_bandwidth()
    gpu = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "CPU (dry run: figures mean nothing)"
    print(f"{gpu}: device copy bandwidth {bw / 1e12:.2f} TB/s; batch 1, bf16, {PROMPT}-token prompt, {STEPS} greedy steps, median of {REPEATS}", flush=True)
    rows = []
    for name in args.models.split(","):
        cfg = make_config(shrink(CONFIGS[name]) if args.dry_run else CONFIGS[name])
        d = write_routelab_dir(name, cfg, args.out)
        row = {"model": name}
        ids = torch.randint(0, cfg.vocab_size, (1, PROMPT), device=DEVICE)
        if not args.skip_hf:
            m = build_hf(cfg, "sdpa")
            act = active_params(m, cfg)
            row["active_params"] = act
            row["hf_plain"] = hf_decode(m, ids, False, False)
            row["hf_router"] = hf_decode(m, ids, True, False) if cfg.model_type != "llama" else None
            del m
            gc.collect()
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
            m = build_hf(cfg, "eager")
            row["hf_full"] = hf_decode(m, ids, cfg.model_type != "llama", True)
            del m
            gc.collect()
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
        else:
            with torch.device("meta"):
                from transformers import AutoModelForCausalLM
                row["active_params"] = active_params(AutoModelForCausalLM.from_config(cfg), cfg)
        row["bandwidth_limit"] = bw / (2 * row["active_params"])  # bf16: 2 bytes per parameter
        j = d / "routelab.json"
        cmd = [args.routelab, "bench", "--model", str(d), "--device", DEVICE, "--prompt-tokens", str(PROMPT),
               "--new-tokens", str(STEPS), "--repeats", str(REPEATS), "--json", str(j)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"{name}: routelab failed:\n{r.stderr[-3000:]}", flush=True)
        else:
            rl = json.loads(j.read_text())["configs"]
            row.update({f"rl_{k}": v["decode_tok_s"] for k, v in rl.items()})
        rows.append(row)
        print(json.dumps(row), flush=True)
    f = lambda x: "–" if x is None else f"{x:.1f}"
    print("\n| model | HF plain | HF router | HF attn+router | RouteLab plain | RouteLab router | RouteLab full | full vs HF attn+router | plain vs HF plain | full capture cost | plain / bandwidth limit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rp, rf = r.get("rl_plain"), r.get("rl_full")
        ratio = lambda a, b: f"{a / b:.2f}×" if a and b else "–"
        cost = f"{100 * (1 - rf / rp):.1f}%" if rp and rf else "–"
        share = f"{100 * rp / r['bandwidth_limit']:.0f}% of {r['bandwidth_limit']:.0f}" if rp else "–"
        print(f"| {r['model']} | {f(r.get('hf_plain'))} | {f(r.get('hf_router'))} | {f(r.get('hf_full'))} | {f(rp)} | "
              f"{f(r.get('rl_router'))} | {f(rf)} | {ratio(rf, r.get('hf_full'))} | {ratio(rp, r.get('hf_plain'))} | {cost} | {share} |")
    (args.out / "results.json").write_text(json.dumps({"gpu": gpu, "copy_bandwidth": bw, "rows": rows}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
