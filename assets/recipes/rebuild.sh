#!/usr/bin/env bash
# Rebuild RouteLab's bundled tiny models from scratch on a CPU-only machine of this kind:
#   corpus -> tokenizer -> tiny-moe, then tiny-dense (seven stages), two threads each
#   -> evaluation references (eval.json, examples.json).
#
# Needs: CPython 3.11.7 (the corpus includes that interpreter's standard library) with the pins
# in requirements.txt (PYTHON=/path/to/python, default: python3), the Rust toolchain 1.95.0
# with its rust-docs component (rustup's default profile), the crates of Cargo.lock in
# ~/.cargo/registry (this script runs `cargo fetch`), and apt-get (downloads Debian's
# python3.11-doc package; nothing is installed).
#
# The models are written to assets/models/tiny-moe and assets/models/tiny-dense; the corpus,
# token streams, tokenizer and intermediate checkpoints go to assets/recipes/build (ignored).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
cd "$HERE"

(cd "$ROOT" && cargo fetch --locked)
"$PYTHON" build_corpus.py
"$PYTHON" train_tokenizer.py
mkdir -p build
# One model after the other, two threads each (2 cores; about 40-47 minutes each). tiny-dense is
# seven stages, each starting from the previous one's checkpoint in build/ckpt: general text
# (stage 1), induction warm-up on repeated random sequences, mixed retrieval tasks, packed
# needles up to 240 tokens, packed needles up to 500 tokens, the same with head dropout in
# layers 0-2, growth from 4 to 6 layers (train.py's RECIPES say why each exists).
"$PYTHON" train.py --model moe --threads 2 > build/train-moe.log 2>&1
(
  "$PYTHON" train.py --model dense --threads 2 --out build/ckpt/tiny-dense-stage1
  "$PYTHON" train.py --model dense-induction --threads 2 --out build/ckpt/tiny-dense-induction
  "$PYTHON" train.py --model dense-retrieval --threads 2 --out build/ckpt/tiny-dense-retrieval
  "$PYTHON" train.py --model dense-needle --threads 2 --out build/ckpt/tiny-dense-needle
  "$PYTHON" train.py --model dense-needle-long --threads 2 --out build/ckpt/tiny-dense-long
  "$PYTHON" train.py --model dense-robust --threads 2 --out build/ckpt/tiny-dense-robust
  "$PYTHON" train.py --model dense-grow --threads 2
) > build/train-dense.log 2>&1
cp build/corpus/manifest.json corpus_manifest.json
"$PYTHON" evaluate.py | tee build/evaluate.log
