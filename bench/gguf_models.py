"""Random-weight GGUF files of real MoE shapes, written by llama.cpp's own converter, for
bench/gguf_bench.py.

Nothing is downloaded: transformers builds each model from its configuration (values from the
model's config.json on the Hugging Face hub, shared with bench/gpu_bench.py) with random weights
(`torch.manual_seed(0)`, transformers' own initialisation, bf16), `save_pretrained` writes it
with the repository's test tokenizer (tests/fixtures/tokenizer, 300 tokens; the converter pads the
vocabulary to the config's size with [PAD] tokens), then

    python tests/fixtures/gguf/generate.py _convert LLAMA_CPP HF_DIR --outtype bf16 --outfile NAME.BF16.gguf
      (llama.cpp's convert_hf_to_gguf.py main(), unmodified, with its vendored gguf-py, after the
      fixture generator's patch of its vocabulary code: the converter does not know the test
      tokenizer's hash and raises "BPE pre-tokenizer was not recognized"; the patch names it
      "gpt-2", which it is; tensors and hyper-parameters are the converter's own)
    llama-quantize NAME.BF16.gguf NAME.Q8_0.gguf Q8_0 2
    llama-quantize NAME.BF16.gguf NAME.Q4_K_M.gguf Q4_K_M 2

and the checkpoint and the BF16 file are deleted as soon as they have been used.

Models:
- olmoe-1b-7b: OLMoE-1B-7B, all 16 layers (64 experts, 8 used, norm_topk_prob false);
- qwen3-30b-a3b-5l: Qwen3-30B-A3B's configuration (128 experts, 8 used, expert width 768,
  32 query / 4 KV heads of 128, vocabulary 151,936, norm_topk_prob true, rope theta 1e6) with 5
  of its 48 layers. Why 5: disk, ~35 GB free here, must hold OLMoE's two files (11.6 GB) plus
  this model's bf16 checkpoint and BF16 file together (2 x 7.5 GB at 5 layers, 2 x 10 GB at 8)
  with 4 GB to spare, which allows at most 6; memory, 24 GiB: transformers dequantises a GGUF
  file to f32 (4 bytes a parameter, 15 GB at 5 layers) plus ~5 GB of temporaries for the largest
  tensor, which 6 layers (17.4 + 5 GB) would not leave room for. With so few layers the LM head
  (151,936 x 2,048) is about half the weights a decoded token reads (10% in the real model).

Files (Q8_0 / Q4_K_M): olmoe-1b-7b 7.36 / 4.21 GB, qwen3-30b-a3b-5l 3.98 / 2.30 GB; built in 16
and 10 minutes on 2 cores (with a compile running beside), Q4_K_M quantisation the longest step.
Peak disk use 2 x 13.8 GB (OLMoE's checkpoint and BF16 file): build OLMoE first (the default
order) and keep ~32 GB free for it.

Pinned versions (bench/requirements-cpu.txt): torch 2.15.0, transformers 5.24.0, safetensors
0.8.0, numpy 2.4.6; llama.cpp at commit 0c1e57098 (its gguf-py, the converter and
llama-quantize built from it, see bench/gguf_bench.py for the cmake commands).

    nice -n 19 /tmp/tfvenv/bin/python bench/gguf_models.py \\
        --llama-cpp /tmp/gguf-work/llama_cpp_python-0.3.36/vendor/llama.cpp \\
        --quantize /tmp/gguf-work/build-native/bin/llama-quantize --out /tmp/gguf-bench \\
        [--models olmoe-1b-7b,qwen3-30b-a3b-5l] [--quants Q8_0,Q4_K_M]

Existing files are kept (delete them to rebuild). `--layers N` overrides the layer count (for a
quick check of the pipeline; the name gets `-Nl`).
"""
import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from gpu_bench import CONFIGS, make_config  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TOKENIZER = REPO / "tests" / "fixtures" / "tokenizer"
GENERATE = REPO / "tests" / "fixtures" / "gguf" / "generate.py"
MODELS = {
    "olmoe-1b-7b": dict(config="olmoe-1b-7b"),
    "qwen3-30b-a3b-5l": dict(config="qwen3-30b-a3b", layers=5),
}
QUANTS = ("Q8_0", "Q4_K_M")
MIN_FREE = 4 << 30  # never leave less free disk than this


def free_bytes(path):
    return shutil.disk_usage(path).free


def need(path, nbytes, what):
    """Refuse a step that would leave less than MIN_FREE free."""
    free = free_bytes(path)
    if free - nbytes < MIN_FREE:
        raise SystemExit(f"not enough disk for {what}: {free / 1e9:.1f} GB free, it needs ~{nbytes / 1e9:.1f} GB "
                         f"and {MIN_FREE / 1e9:.1f} GB must stay free")
    print(f"  disk: {free / 1e9:.1f} GB free before {what} (~{nbytes / 1e9:.1f} GB)", flush=True)


def run(cmd, log):
    print("  $ " + " ".join(str(c) for c in cmd), flush=True)
    t = time.perf_counter()
    with open(log, "a") as f:
        f.write("$ " + " ".join(str(c) for c in cmd) + "\n")
        f.flush()
        r = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        raise SystemExit(f"failed ({r.returncode}), see {log}:\n" + Path(log).read_text()[-3000:])
    print(f"    {time.perf_counter() - t:.0f} s", flush=True)


def n_params(cfg):
    h, L, v = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    hd = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    attn = h * hd * (2 * cfg.num_attention_heads + 2 * cfg.num_key_value_heads)
    ff = getattr(cfg, "moe_intermediate_size", None) or cfg.intermediate_size
    experts = cfg.num_experts * 3 * h * ff + cfg.num_experts * h
    return L * (attn + experts) + 2 * v * h


def build(name, spec, out, args, log):
    c = dict(CONFIGS[spec["config"]])
    layers = args.layers or spec.get("layers")
    if layers:
        c["num_hidden_layers"] = layers
    if args.layers:
        name = f"{spec['config']}-{args.layers}l"
    targets = {q: out / f"{name}.{q}.gguf" for q in args.quants.split(",")}
    todo = [q for q, p in targets.items() if not p.exists()]
    if not todo:
        print(f"{name}: {', '.join(str(p) for p in targets.values())} exist", flush=True)
        return name, targets, None
    cfg = make_config(c)
    cfg.bos_token_id, cfg.eos_token_id = 0, 2
    bf16_bytes = 2 * n_params(cfg)
    bf16 = out / f"{name}.BF16.gguf"
    hf = out / f"{name}-hf"
    t0 = time.perf_counter()
    print(f"{name}: {n_params(cfg) / 1e9:.2f} B parameters, {cfg.num_hidden_layers} layers", flush=True)
    if not bf16.exists():
        need(out, 2 * bf16_bytes, "the bf16 checkpoint and the BF16 GGUF file")
        if hf.exists():
            shutil.rmtree(hf)
        from transformers import AutoModelForCausalLM
        torch.manual_seed(0)
        t = time.perf_counter()
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
        model.save_pretrained(hf, safe_serialization=True, max_shard_size="4GB")
        del model
        gc.collect()
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(TOKENIZER / f, hf / f)
        print(f"  checkpoint written: {time.perf_counter() - t:.0f} s", flush=True)
        # The converter's main(), unmodified, after tests/fixtures/gguf/generate.py's patch of its
        # vocabulary code (the test tokenizer's BPE pre-tokenizer is GPT-2's, not in its hash table).
        run([sys.executable, GENERATE, "_convert", args.llama_cpp, hf, "--outtype", "bf16", "--outfile", bf16], log)
        shutil.rmtree(hf)
    for q in todo:
        need(out, {"Q8_0": 0.54, "Q4_K_M": 0.31}.get(q, 0.6) * bf16_bytes, f"{targets[q].name}")
        tmp = targets[q].with_suffix(".gguf.part")
        run([args.quantize, bf16, tmp, q, "2"], log)
        tmp.rename(targets[q])
    bf16.unlink()
    return name, targets, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-cpp", type=Path, default=Path("/tmp/gguf-work/llama_cpp_python-0.3.36/vendor/llama.cpp"))
    ap.add_argument("--quantize", type=Path, default=Path("/tmp/gguf-work/build-native/bin/llama-quantize"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/gguf-bench"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--quants", default=",".join(QUANTS))
    ap.add_argument("--layers", type=int, help="override the layer count (pipeline check)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "gguf_models.log"
    manifest = args.out / "manifest.json"
    done = json.loads(manifest.read_text()) if manifest.exists() else {}
    import transformers
    for name in args.models.split(","):
        name, targets, secs = build(name, MODELS[name], args.out, args, log)
        for q, p in targets.items():
            old = done.get(p.name, {})
            done[p.name] = {**old, "model": name, "quant": q, "bytes": p.stat().st_size,
                            "torch": torch.__version__, "transformers": transformers.__version__,
                            "llama.cpp": "0c1e57098", "seed": 0, **({"build_seconds": round(secs)} if secs else {})}
            print(f"  {p}: {p.stat().st_size / 1e9:.2f} GB", flush=True)
        manifest.write_text(json.dumps(done, indent=1))


if __name__ == "__main__":
    sys.exit(main())
