#!/usr/bin/env python3
"""Read a RouteLab trace (format routelab-trace/1) with safetensors + numpy and print the
routing of every token: which experts each MoE layer picked, with their weights.

    pip install safetensors numpy
    python3 tests/python/read_trace.py run.safetensors [--layer L]

A trace is a plain safetensors file; its __metadata__ holds the run's settings as JSON.
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
    if meta.get("format") != "routelab-trace/1":
        print(f"{args.trace}: not a routelab-trace/1 file (format={meta.get('format')!r})", file=sys.stderr)
        return 1
    tokens = tensors["tokens"]
    moe_layers = sorted(int(k.split(".")[1]) for k in tensors if k.startswith("router.") and k.endswith(".experts"))
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
        experts = tensors[f"router.{l}.experts"]
        weights = tensors[f"router.{l}.weights"]
        logits = tensors[f"router.{l}.logits"]
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
