#!/usr/bin/env python3
"""Builds the committed seed corpora (fuzz/corpus/<target>/seed-*) from the repository's
fixtures and assets. Standard library only; run from anywhere: python3 fuzz/make_corpus.py.

Seeds are small on purpose: real files cut down to what each reader parses (a GGUF's header
without its tensor data, a few tensors of a safetensors file, small configs and templates).
"""
import json
import re
import shutil
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
OUT = ROOT / "fuzz" / "corpus"


def put(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / f"seed-{name}").write_bytes(data)


def safetensors_bytes(header, data):
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds():
    raw = (FIX / "models" / "llama" / "model.safetensors").read_bytes()
    (n,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8 : 8 + n])
    start = 8 + n
    # The fixture's vectors (norms) with their real bytes, under their real names.
    kept, data = {"__metadata__": header.get("__metadata__", {"format": "pt"})}, b""
    for name, info in sorted(header.items()):
        if name == "__metadata__" or len(info["shape"]) != 1:
            continue
        a, b = info["data_offsets"]
        kept[name] = {"dtype": info["dtype"], "shape": info["shape"], "data_offsets": [len(data), len(data) + b - a]}
        data += raw[start + a : start + b]
        if len(kept) > 4:
            break
    put("safetensors", "llama-vectors", safetensors_bytes(kept, data))
    # The whole header, its data cut off: a truncated download.
    put("safetensors", "llama-truncated", raw[: 8 + n + 64])
    # One small tensor of each dtype the reader takes, and one it refuses.
    mixed, data = {}, b""
    for name, dtype, shape, size in [("a", "F32", [2, 2], 4), ("b", "F16", [4], 2), ("c", "BF16", [2, 1], 2), ("d", "U8", [3], 1), ("e", "I32", [1], 4)]:
        count = 1
        for s in shape:
            count *= s
        mixed[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + count * size]}
        data += bytes(range(count * size))
    put("safetensors", "dtypes", safetensors_bytes(mixed, data))


def index_seeds():
    shards = {"model.norm.weight": "model-00001-of-00002.safetensors", "lm_head.bias": "model-00002-of-00002.safetensors"}
    put("safetensors_index", "two-shards", json.dumps({"metadata": {"total_size": 16}, "weight_map": shards}, indent=2))
    put("safetensors_index", "missing-shard", json.dumps({"weight_map": {"x": "model-00003-of-00003.safetensors"}}))


def gguf_header_len(b):
    """Bytes of a GGUF file before its tensor data (header, metadata, tensor infos, padding)."""
    off = 8
    nt, nkv = struct.unpack_from("<QQ", b, off)
    off += 16
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    align = 32

    def string():
        nonlocal off
        (n,) = struct.unpack_from("<Q", b, off)
        off += 8 + n
        return b[off - n : off]

    def value(t):
        nonlocal off
        if t == 8:
            return string()
        if t == 9:
            (et,) = struct.unpack_from("<I", b, off)
            (n,) = struct.unpack_from("<Q", b, off + 4)
            off += 12
            return [value(et) for _ in range(n)]
        v = b[off : off + sizes[t]]
        off += sizes[t]
        return v

    for _ in range(nkv):
        key = string()
        (t,) = struct.unpack_from("<I", b, off)
        off += 4
        v = value(t)
        if key == b"general.alignment":
            align = int.from_bytes(v, "little")
    for _ in range(nt):
        string()
        (nd,) = struct.unpack_from("<I", b, off)
        off += 4 + 8 * nd + 4 + 8
    return -(-off // align) * align


def gguf_seeds():
    # Headers only: the fuzz target continues the file with zeros, where the tensors lie.
    for name in ["llama.q4_k_m", "mixtral.q4_k_m", "qwen3_moe.q4_k_m", "deepseek_v2.q8_0", "deepseek_v3.q4_k_m", "phimoe.q4_k_m", "dbrx.q4_k_m", "arctic.q4_k_m", "olmoe.q4_k_m", "phi3.q4_k_m"]:
        raw = (FIX / "gguf" / f"{name}.gguf").read_bytes()
        put("gguf", name, raw[: gguf_header_len(raw)])


def config_seeds():
    seen = set()
    for p in sorted((FIX / "models").glob("*/config.json")) + sorted((ROOT / "assets" / "models").glob("*/config.json")):
        text = p.read_bytes()
        if text not in seen:
            seen.add(text)
            put("config", f"{p.parent.name}", text)


def tokenizer_seeds():
    tok = json.loads((FIX / "tokenizer" / "tokenizer.json").read_text())
    put("tokenizer", "fixture", json.dumps(tok))
    # The same tokenizer cut to a small vocabulary (ids kept dense), and with its parts
    # (normalizer, pre-tokenizer, post-processor, decoder) one at a time left out.
    small = json.loads(json.dumps(tok))
    vocab = sorted(small["model"]["vocab"].items(), key=lambda kv: kv[1])[:40]
    small["model"]["vocab"] = {k: i for i, (k, _) in enumerate(vocab)}
    small["model"]["merges"] = [m for m in small["model"]["merges"] if all(part in small["model"]["vocab"] for part in (m.split(" ") if isinstance(m, str) else m))][:20]
    small["added_tokens"] = [dict(t, id=i) for i, t in enumerate(small["added_tokens"][:2])]
    put("tokenizer", "small-bpe", json.dumps(small))
    for part in ["normalizer", "pre_tokenizer", "post_processor", "decoder"]:
        put("tokenizer", f"small-no-{part}", json.dumps(dict(small, **{part: None})))
    wordlevel = {"version": "1.0", "added_tokens": [], "normalizer": {"type": "Lowercase"}, "pre_tokenizer": {"type": "Whitespace"},
                 "post_processor": None, "decoder": None, "truncation": None, "padding": None,
                 "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "hello": 1, "world": 2}, "unk_token": "[UNK]"}}
    put("tokenizer", "wordlevel", json.dumps(wordlevel))


def templates():
    """Every distinct chat template of the fixtures and assets."""
    found = {}
    for p in sorted(FIX.glob("models/*/tokenizer_config.json")) + sorted((ROOT / "assets" / "models").glob("*/tokenizer_config.json")) + [FIX / "tokenizer" / "tokenizer_config.json"]:
        t = json.loads(p.read_text()).get("chat_template")
        if t:
            found.setdefault(t, p.parent.name)
    smol = json.loads((FIX / "smollm2" / "reference.json").read_text())
    for v in smol.values() if isinstance(smol, dict) else []:
        if isinstance(v, dict):
            for key in ("chat_template", "tokenizer.chat_template"):
                if isinstance(v.get(key), str):
                    found.setdefault(v[key], "smollm2")
    text = (FIX / "smollm2" / "reference.json").read_text()
    for m in re.finditer(r'"(?:tokenizer\.)?chat_template": ("(?:[^"\\]|\\.)*")', text):
        found.setdefault(json.loads(m.group(1)), "smollm2")
    return [(name, t) for t, name in found.items()]


def template_seeds():
    for name, t in templates():
        put("chat_template", name, t)
    # The constructs real templates use beyond a loop: namespaces, slicing the system message
    # out, dates, raise_exception, Python string methods, macros, tojson.
    put("chat_template", "constructs", (
        "{%- set ns = namespace(system='') %}{%- if messages[0]['role'] == 'system' %}{%- set ns.system = messages[0]['content'] | trim %}"
        "{%- set messages = messages[1:] %}{%- endif %}{{ bos_token }}{{ 'Today: ' + strftime_now('%d %b %Y') }}{{ ns.system }}"
        "{%- macro turn(m) %}<|{{ m.role }}|>{{ m.content.split('</think>')[-1].strip() }}{{ eos_token }}{%- endmacro %}"
        "{%- for m in messages %}{%- if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('roles must alternate') }}{%- endif %}"
        "{{ turn(m) }}{%- endfor %}{{ messages | tojson }}{{ '{}-{}'.format('a', 'b').upper().replace('A', 'x') }}"
        "{%- if add_generation_prompt %}<|assistant|>{%- endif %}"))


def tokenizer_config_seeds():
    seen = set()
    for p in [FIX / "tokenizer" / "tokenizer_config.json", ROOT / "assets" / "models" / "tiny-moe" / "tokenizer_config.json"]:
        text = p.read_bytes()
        if text not in seen:
            seen.add(text)
            put("tokenizer_config", p.parent.name, text)
    cfg = json.loads((FIX / "tokenizer" / "tokenizer_config.json").read_text())
    cfg["chat_template"] = [{"name": "tool_use", "template": "{{ messages[0].content }}"}, {"name": "default", "template": cfg["chat_template"]}]
    cfg["bos_token"] = {"content": "<|endoftext|>", "lstrip": False, "special": True}
    put("tokenizer_config", "template-list", json.dumps(cfg, indent=1))


V1_TO_V2 = [(r"^router\.(\d+)\.(\w+)$", r"layers.\1.router.\2"), (r"^attn\.(\d+)\.(\w+)$", r"layers.\1.attn.\2"),
            (r"^hidden\.(\d+)$", r"layers.\1.hidden"), (r"^moe\.(\d+)\.(\w+)$", r"layers.\1.moe.\2")]


def trace_seeds():
    raw = (FIX / "traces" / "mixtral-v1.safetensors").read_bytes()
    put("trace", "mixtral-v1", raw)
    # The same trace in the current format: hook names, format routelab-trace/2, a pattern
    # capture spec.
    (n,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, info in header.items():
        if name != "__metadata__":
            for pat, rep in V1_TO_V2:
                name = re.sub(pat, rep, name)
        out[name] = info
    md = out["__metadata__"]
    md["format"] = "routelab-trace/2"
    md["capture"] = json.dumps({"hooks": ["layers.*.router.logits", "layers.*.router.experts", "layers.*.router.weights", "layers.*.attn.entropy", "logits"], "span": [1, 3]})
    md["interventions"] = json.dumps([{"target": "expert", "layer": 0, "expert": 1, "method": "drop"}, {"target": "head", "layer": 1, "head": 0, "method": "scale", "factor": 0.5}])
    body = json.dumps(out, separators=(",", ":")).encode()
    body += b" " * (-len(body) % 8)
    put("trace", "mixtral-v2", struct.pack("<Q", len(body)) + body + data)


def spec_seeds():
    put("intervention", "cli", "layers.3.experts.5:reroute\nlayers.0.experts.1:drop\nlayers.2.attn.head.7:scale(0.5)\nlayers.1.attn.head.2:scale=2\n"
        "layers.4.shared_expert:mute\nlayers.1.dense_residual:mute\nlayers.0.attn.head.0:uniform\nlayers.0.attn.head.1:mean\n3:5\n0:1:drop\n2:7:scale=0.5\n2:7\n")
    put("intervention", "json", json.dumps([{"target": "expert", "layer": 1, "expert": 2, "method": "drop"},
                                            {"target": "head", "layer": 0, "head": 3, "method": "scale", "factor": 0.5},
                                            {"target": "head", "layer": 0, "head": 1, "method": "mean", "reference": [0.25, -1.0]},
                                            {"target": "shared_expert", "layer": 4}]))
    put("capture", "cli", "default\nall\nnone,router,stats\nprobs:3,hidden:0-5\nprobs:1+4\nspan:2-7\nlayers.*.router.margin\nlogits,contributions,margin\n")
    put("capture", "json", json.dumps({"hooks": ["layers.*.router.*", "layers.3.attn.probs", "tokens"], "span": [4, 9]}))
    put("capture", "json-v1", json.dumps({"router": True, "attention_stats": True, "attention_span": [1, 2], "attention_probs": "all",
                                          "hidden": [0, 2], "logits": False, "contributions": True}))


def notebook_seeds():
    cells = [
        {"id": 1, "title": "notes", "kind": "markdown", "text": "# Routing\nwhich experts fire"},
        {"id": 2, "title": "prose", "kind": "prompt", "prompt": {"kind": "text", "text": "Once upon a time"}, "settings": {},
         "interventions": [{"target": "expert", "layer": 0, "expert": 1, "method": "reroute"}],
         "capture": {"hooks": ["layers.*.router.*"]}, "result": None},
        {"id": 3, "title": "chat", "kind": "prompt", "prompt": {"kind": "chat", "messages": [{"role": "user", "content": "hi"}]},
         "settings": {}, "interventions": [], "capture": {"hooks": []}, "result": {
             "trace": "traces/cell-3.safetensors", "generated_text": "hello", "prompt_tokens": 5, "generated_tokens": 1, "stop": "eos",
             "prefill_seconds": 0.1, "decode_seconds": 0.2, "model": "tiny-moe"}},
        {"id": 4, "title": "diff", "kind": "compare", "a": 2, "b": 3, "result": None},
        {"id": 5, "title": "scan", "kind": "retrieval_scan", "settings": {}, "result": None},
        {"id": 6, "title": "domains", "kind": "specialization", "settings": {}, "result": None},
    ]
    put("notebook", "cells", json.dumps({"format": "routelab-notebook", "version": 1, "model": "tiny-moe", "cells": cells, "next_id": 7}, indent=2))


if __name__ == "__main__":
    shutil.rmtree(OUT, ignore_errors=True)
    for make in [safetensors_seeds, index_seeds, gguf_seeds, config_seeds, tokenizer_seeds, template_seeds, tokenizer_config_seeds, trace_seeds, spec_seeds, notebook_seeds]:
        make()
    total = sum(p.stat().st_size for p in OUT.rglob("seed-*"))
    print(f"{sum(1 for _ in OUT.rglob('seed-*'))} seeds, {total} bytes, under {OUT.relative_to(ROOT)}")
