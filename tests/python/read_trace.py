#!/usr/bin/env python3
"""Read a RouteLab trace (routelab-trace/2, or /1 from earlier releases) with safetensors +
numpy and print the routing of every token: which experts each MoE layer picked, with their
weights.

    pip install safetensors numpy
    python3 tests/python/read_trace.py run.safetensors [--layer L]

A trace is a plain safetensors file whose tensors are named by hook point
(`layers.3.router.experts`; /1 files: `router.3.experts`); its __metadata__ holds the run's
settings as JSON.
"""
import argparse
import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--layer", type=int, default=None, help="only this layer")
    ap.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    args = ap.parse_args()

    tensors = load_file(args.trace)
    with safe_open(args.trace, "np") as f:
        meta = f.metadata()
    fmt = meta.get("format")
    if fmt == "routelab-trace/2":
        def name(l, what):
            return f"layers.{l}.router.{what}"
    elif fmt == "routelab-trace/1":
        def name(l, what):
            return f"router.{l}.{what}"
    else:
        print(f"{args.trace}: not a RouteLab trace (format={fmt!r})", file=sys.stderr)
        return 1
    tokens = tensors["tokens"]
    layer_of = {name(l, "experts"): l for l in range(1 + max((int(k.split(".")[1]) for k in tensors if k.count(".") >= 2), default=0))}
    moe_layers = sorted(layer_of[k] for k in tensors if k in layer_of)
    if args.layer is not None:
        moe_layers = [l for l in moe_layers if l == args.layer]
    summary = {
        "model": meta["model"],
        "architecture": meta["architecture"],
        "tokens": tokens.tolist(),
        "generated_from": int(meta["generated_from"]),
        "interventions": json.loads(meta["interventions"]),
        "routing": {},
    }
    for l in moe_layers:
        experts = tensors[name(l, "experts")]
        weights = tensors[name(l, "weights")]
        logits = tensors[name(l, "logits")]
        assert experts.shape == weights.shape and experts.shape[0] == tokens.shape[0]
        assert logits.shape[0] == tokens.shape[0]
        summary["routing"][l] = {"experts": experts.tolist(), "weights": np.round(weights, 6).tolist()}
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{meta['model']} ({meta['architecture']}), {len(tokens)} positions, generated from {meta['generated_from']}")
    if not moe_layers:
        print("no MoE layers in this trace")
    for l in moe_layers:
        print(f"layer {l}:")
        for t, tok in enumerate(tokens):
            picks = ", ".join(f"e{e}:{w:.3f}" for e, w in zip(summary["routing"][l]["experts"][t], summary["routing"][l]["weights"][t]))
            print(f"  {t:4d} token {int(tok):6d}  {picks}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
