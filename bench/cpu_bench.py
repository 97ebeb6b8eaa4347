"""RouteLab vs Hugging Face transformers on the CPU: same machine, model, prompt and settings,
in one run, with the ratios the project's goals are stated in.

From the repository root, with a release build and a Python with the packages of
bench/requirements-cpu.txt (torch, transformers; accelerate and gguf for SmolLM2's GGUF file):

    cargo build --release
    python3 bench/cpu_bench.py --routelab target/release/routelab [--models smollm2,olmoe-1b-7b,llama3-8b-4l,tiny-moe]

Models:
- smollm2: SmolLM2-135M-Instruct, the GGUF file assets/fetch-smollm2.sh puts in
  assets/models (Q4_1, dequantized to f32 by both);
- olmoe-1b-7b: OLMoE-1B-7B's real configuration, all 16 layers, random weights, bf16;
- llama3-8b-4l: Llama-3-8B's configuration with 4 layers, random weights, bf16;
- tiny-moe: the bundled model, f32.
Random-weight models are built on the fly: transformers from the config, RouteLab from a
directory with the config and `random_weights.json` (tensor names and shapes; RouteLab draws
the values), so nothing is downloaded.

Per model: a 128-token prompt and 32 greedy tokens, then (`--long`, SmolLM2 only by default)
a 1,024-token prompt and 16 tokens; median of 3 after a warm-up, configurations interleaved.
- transformers "plain": default attention (sdpa), `logits_to_keep=1` in prefill as `generate`
  does; "capture": eager attention with `output_attentions` and (MoE) `output_router_logits`,
  every tensor copied to numpy at every step.
- RouteLab (`routelab bench --json`): "plain" captures nothing; "full" captures what the
  workbench records on every run: routing, per-head attention statistics, contribution norms.
- The bandwidth limit: bytes of weights one decoded token reads (RouteLab's count: every
  projection, the selected experts, the LM head) / the memory read bandwidth, the larger of two
  two-thread matrix-vector products over 1 GiB (RouteLab's kernel, torch.mv).
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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from gpu_bench import CONFIGS, make_config, write_routelab_dir  # noqa: E402

SMOLLM2 = Path("assets/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
TINY_MOE = Path("assets/models/tiny-moe")
MODELS = {
    "smollm2": dict(kind="gguf", dtype="f32"),
    "olmoe-1b-7b": dict(kind="random", config="olmoe-1b-7b", dtype="bf16"),
    "llama3-8b-4l": dict(kind="random", config="llama3-8b", layers=4, dtype="bf16"),
    "tiny-moe": dict(kind="dir", dtype="f32"),
}
TORCH_DTYPE = {"f32": torch.float32, "bf16": torch.bfloat16}


def read_bandwidth():
    """Bytes/s of torch.mv over a 1 GiB f32 matrix, best of 5."""
    w = torch.ones((1 << 28) // 4096, 4096)
    x = torch.ones(4096)
    best = float("inf")
    for _ in range(6):
        t = time.perf_counter()
        torch.mv(w, x)
        best = min(best, time.perf_counter() - t)
    n = w.numel() * 4
    del w
    return n / best


def grab(out, capture):
    """What a capture costs in transformers: every attention and router tensor to numpy."""
    if not capture:
        return
    for a in out.attentions or ():
        a.float().numpy()
    for r in getattr(out, "router_logits", None) or ():
        if r is not None:
            r.float().numpy()


@torch.inference_mode()
def hf_once(model, ids, new, capture, moe):
    kw = {"output_attentions": True} if capture else {}
    if capture and moe:
        kw["output_router_logits"] = True
    t0 = time.perf_counter()
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **kw)
    grab(out, capture)
    tok = out.logits[:, -1:].argmax(-1)
    tok.numpy()
    t1 = time.perf_counter()
    past = out.past_key_values
    for _ in range(new):
        out = model(input_ids=tok, past_key_values=past, use_cache=True, **kw)
        grab(out, capture)
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        tok.numpy()
    t2 = time.perf_counter()
    return ids.shape[1] / (t1 - t0), new / (t2 - t1)


def set_attention(model, impl):
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(impl)
    else:
        model.config._attn_implementation = impl


def hf_bench(model, ids, new, repeats, moe):
    """Medians of prefill and decode tok/s, plain (sdpa) and capture (eager), interleaved."""
    res = {"plain": ([], []), "capture": ([], [])}
    for rep in range(repeats + 1):
        for name, impl, capture in (("plain", "sdpa", False), ("capture", "eager", True)):
            set_attention(model, impl)
            p, d = hf_once(model, ids, 2 if rep == 0 else new, capture, moe)
            if rep:
                res[name][0].append(p)
                res[name][1].append(d)
    set_attention(model, "sdpa")
    return {k: {"prefill_tok_s": statistics.median(p), "decode_tok_s": statistics.median(d)} for k, (p, d) in res.items()}


def routelab_bench(binary, name, model, dtype, prompt, new, repeats, out, threads):
    j = out / f"routelab-{name}-{prompt}.json"
    cmd = [binary, "bench", "--model", str(model), "--dtype", dtype, "--prompt-tokens", str(prompt),
           "--new-tokens", str(new), "--repeats", str(repeats), "--json", str(j)]
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    sys.stderr.write(r.stdout)
    if r.returncode != 0:
        raise SystemExit(f"routelab bench failed on {model}:\n{r.stderr[-3000:]}")
    return json.loads(j.read_text())


def prepare(name, spec, out):
    """(what RouteLab loads, a function building the transformers model, its vocabulary size)."""
    dtype = TORCH_DTYPE[spec["dtype"]]
    if spec["kind"] == "gguf":
        if not SMOLLM2.exists():
            raise SystemExit(f"{SMOLLM2} is missing: run `bash assets/fetch-smollm2.sh` first")
        from transformers import AutoModelForCausalLM
        return SMOLLM2, lambda: AutoModelForCausalLM.from_pretrained(SMOLLM2.parent, gguf_file=SMOLLM2.name, dtype=dtype)
    if spec["kind"] == "dir":
        from transformers import AutoModelForCausalLM
        return TINY_MOE, lambda: AutoModelForCausalLM.from_pretrained(TINY_MOE, dtype=dtype)
    c = dict(CONFIGS[spec["config"]])
    if "layers" in spec:
        c["num_hidden_layers"] = spec["layers"]
    cfg = make_config(c)
    d = write_routelab_dir(name, cfg, out)

    def build():
        from transformers import AutoModelForCausalLM
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(cfg, dtype=dtype)

    return d, build


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--routelab", default="target/release/routelab")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--long", default="smollm2", help="models also measured with a 1,024-token prompt")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("target/cpu-bench"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    import transformers
    torch_bw = read_bandwidth()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} threads each; "
          f"torch.mv read bandwidth {torch_bw / 1e9:.1f} GB/s", flush=True)
    rows = []
    for name in args.models.split(","):
        spec = MODELS[name]
        target, build = prepare(name, spec, args.out)
        cases = [(128, 32)] + ([(1024, 16)] if name in args.long.split(",") else [])
        rl = {c: routelab_bench(args.routelab, name, target, spec["dtype"], c[0], c[1], args.repeats, args.out, args.threads) for c in cases}
        model = build().eval()
        moe = any(hasattr(model.config, a) and getattr(model.config, a) for a in ("num_experts", "num_local_experts"))
        vocab = model.config.vocab_size
        for (prompt, new) in cases:
            ids = torch.from_numpy(np.random.default_rng(0).integers(0, vocab, (1, prompt)))
            hf = hf_bench(model, ids, new, args.repeats, moe)
            r = rl[(prompt, new)]
            bw = max(torch_bw, r.get("read_bandwidth") or 0)
            row = {"model": name, "dtype": spec["dtype"], "prompt": prompt, "new": new, "routelab": r["configs"], "transformers": hf,
                   "active_weight_bytes": r["active_weight_bytes"], "read_bandwidth": bw, "bandwidth_limit": bw / r["active_weight_bytes"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
        del model
        gc.collect()
    table(rows)
    (args.out / "results.json").write_text(json.dumps({"torch_bandwidth": torch_bw, "rows": rows}, indent=1))


def table(rows):
    print("\n| model | prompt / new | RouteLab prefill plain / full | transformers prefill plain / capture | decode RouteLab plain / full "
          "| decode transformers plain / capture | prefill ratio plain / capture | decode ratio plain / capture | full capture cost (decode) | plain decode / bandwidth limit |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        a, h = r["routelab"], r["transformers"]
        ap, af, hp, hc = a["plain"], a["full"], h["plain"], h["capture"]
        f = lambda x: f"{x:.1f}" if x < 100 else f"{x:.0f}"
        q = lambda x, y: f"{x / y:.2f}x"
        share = ap["decode_tok_s"] / r["bandwidth_limit"]
        print(f"| {r['model']} ({r['dtype']}) | {r['prompt']} / {r['new']} "
              f"| {f(ap['prefill_tok_s'])} / {f(af['prefill_tok_s'])} | {f(hp['prefill_tok_s'])} / {f(hc['prefill_tok_s'])} "
              f"| {f(ap['decode_tok_s'])} / {f(af['decode_tok_s'])} | {f(hp['decode_tok_s'])} / {f(hc['decode_tok_s'])} "
              f"| {q(ap['prefill_tok_s'], hp['prefill_tok_s'])} / {q(af['prefill_tok_s'], hc['prefill_tok_s'])} "
              f"| {q(ap['decode_tok_s'], hp['decode_tok_s'])} / {q(af['decode_tok_s'], hc['decode_tok_s'])} "
              f"| {100 * (1 - af['decode_tok_s'] / ap['decode_tok_s']):.1f}% "
              f"| {100 * share:.0f}% of {r['bandwidth_limit']:.1f} tok/s |")


if __name__ == "__main__":
    sys.exit(main())
