"""Train tiny-moe (Mixtral) or tiny-dense (Llama) on the RouteLab corpus, CPU only.

    python train.py --model moe   [--steps N] [--out DIR]
    python train.py --model dense [--steps N] [--out DIR]

Fixed seeds, fixed step count (the default step counts were calibrated to take about 35-40
minutes on 2 CPU cores; ATTN=sdpa, the default, is the fastest attention on CPU). Every batch row is one domain (prose, rust, python, numbers or
retrieval tasks) so batches mix domains while sequences stay distinct. Writes a standard
transformers checkpoint (config.json, model.safetensors, generation_config.json,
tokenizer.json, tokenizer_config.json) plus train_log.json.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (EOT, IM_END, MODELS, TEXT_DOMAINS, TOKENIZER_DIR, TOKENS, VOCAB_SIZE,  # noqa: E402
                    needle_sequence_masked, repeated_random_sequence, retrieval_sequence, retrieval_sequence_masked)

import os
ATTN = os.environ.get("ATTN", "sdpa")

RECIPES = {
    "moe": dict(
        name="tiny-moe", seq_len=256, batch=16, steps=600, lr=2e-3, warmup=100, seed=1,
        mix={"prose": 0.30, "rust": 0.20, "python": 0.20, "numbers": 0.15, "retrieval": 0.15},
        config=dict(model_type="mixtral", vocab_size=VOCAB_SIZE, hidden_size=256, intermediate_size=160,
                    num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=4, head_dim=32,
                    num_local_experts=8, num_experts_per_tok=2, router_aux_loss_coef=0.01,
                    router_jitter_noise=0.0, output_router_logits=False, max_position_embeddings=1024,
                    rope_theta=10000.0, rms_norm_eps=1e-5, sliding_window=None, hidden_act="silu",
                    tie_word_embeddings=False, bos_token_id=EOT, eos_token_id=EOT, pad_token_id=EOT,
                    initializer_range=0.02, attention_dropout=0.0),
    ),
    "dense": dict(
        # Stage 1 of tiny-dense: a 900-step schedule stopped after step 600 (601 updates); stage 2
        # ("dense-retrieval") continues from it.
        name="tiny-dense-stage1", seq_len=512, batch=8, steps=900, stop_after_step=600, lr=2e-3, warmup=100, seed=2,
        mix={"prose": 0.20, "rust": 0.10, "python": 0.10, "numbers": 0.10, "retrieval": 0.50},
        config=dict(model_type="llama", vocab_size=VOCAB_SIZE, hidden_size=256, intermediate_size=640,
                    num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8, head_dim=32,
                    max_position_embeddings=1024, rope_theta=10000.0, rms_norm_eps=1e-5,
                    hidden_act="silu", tie_word_embeddings=False, bos_token_id=EOT, eos_token_id=EOT,
                    pad_token_id=EOT, initializer_range=0.02, attention_bias=False, mlp_bias=False,
                    attention_dropout=0.0),
    ),
}


RECIPES["dense-induction"] = dict(
    # Stage 2 of tiny-dense: from stage 1, rows of repeated random token sequences (loss on the
    # repeats only, common.repeated_random_sequence) plus some plain text so language survives:
    # forms the copying circuit that retrieval then builds on.
    name="tiny-dense-induction", init="tiny-dense-stage1", seq_len=128, batch=16, steps=600, lr=1e-3, warmup=20, seed=103,
    mix={"prose": 0.1, "rust": 0.05, "python": 0.05, "repeat_random": 0.8},
    config=RECIPES["dense"]["config"],
)


RECIPES["dense-retrieval"] = dict(
    # Stage 3 of tiny-dense: from stage 2's checkpoint, retrieval rows whose loss covers only what
    # must be retrieved (common.retrieval_sequence_masked: passkeys, looked-up values, copied
    # spans, chat answers), more induction rows, and plain text (full loss).
    name="tiny-dense-retrieval", init="tiny-dense-induction", seq_len=256, batch=8, steps=400, lr=1e-3, warmup=20, seed=104,
    mix={"prose": 0.08, "rust": 0.03, "python": 0.03, "numbers": 0.03, "repeat_random": 0.23, "retrieval_masked": 0.6},
    config=RECIPES["dense"]["config"],
)


RECIPES["dense-needle"] = dict(
    # Stage 4 of tiny-dense: from stage 3, mostly packed needle examples (loss on the answers,
    # common.needle_sequence_masked), keeping the other retrieval rows, induction rows and text.
    name="tiny-dense-needle", init="tiny-dense-retrieval", seq_len=256, batch=8, steps=400, lr=1e-3, warmup=20, seed=105,
    mix={"prose": 0.06, "rust": 0.02, "python": 0.02, "numbers": 0.02, "repeat_random": 0.13,
         "retrieval_masked": 0.25, "needle_masked": 0.5},
    config=RECIPES["dense"]["config"],
)


RECIPES["dense-needle-long"] = dict(
    # Stage 5 of tiny-dense: the same at 512 tokens, needles in haystacks of up to 500 tokens, so
    # retrieval holds at the full evaluated context.
    name="tiny-dense-long", init="tiny-dense-needle", seq_len=512, batch=4, steps=300, lr=5e-4, warmup=20, seed=106,
    mix={"prose": 0.06, "rust": 0.02, "python": 0.02, "numbers": 0.02, "repeat_random": 0.13,
         "retrieval_masked": 0.25, "needle_masked_long": 0.5},
    config=RECIPES["dense"]["config"],
)


RECIPES["dense-robust"] = dict(
    # Stage 6 of tiny-dense: the stage-5 mix, longer, with head dropout in layers 0-2 (each of
    # their heads' outputs zeroed with probability 0.3 per row). Without it the copying circuit
    # hangs on one or two previous-token heads in layer 0, so masking a few random heads breaks
    # retrieval as surely as masking the retrieval heads; large models are redundant there, and
    # that redundancy is what the retrieval-head ablation assumes.
    name="tiny-dense-robust", init="tiny-dense-long", seq_len=512, batch=4, steps=400, lr=5e-4, warmup=20, seed=107,
    head_dropout={"layers": [0, 1, 2], "p": 0.3},
    mix={"prose": 0.06, "rust": 0.02, "python": 0.02, "numbers": 0.02, "repeat_random": 0.13,
         "retrieval_masked": 0.25, "needle_masked_long": 0.5},
    config=RECIPES["dense"]["config"],
)


RECIPES["dense-grow"] = dict(
    # Stage 7 of tiny-dense: grow from 4 to 6 layers. Two new layers go between layers 1 and 2,
    # copies of layers 1 and 2 whose output projections (o_proj, down_proj) start at zero, so the
    # grown model computes exactly what stage 6 did (model growth by stacking, as in Gong et al.
    # 2019). Then the stage-6 mix again, head dropout on every layer before the last: p = 0.5 in
    # the first two, 0.3 in the others, half of the drops zeroing the head and half giving it
    # uniform attention (the ablation's masking; a model that only saw zeroed heads still lost
    # all retrieval when a random draw gave 5 of layer 0's 8 heads uniform attention). Why: with
    # four layers the copying circuit fills most of the last layer (7 of 32 heads scored above 0.1),
    # while in real models retrieval heads are a few percent of many heads; two more layers give
    # the model room for heads that do other work, and their redundancy keeps random-head ablation
    # from breaking retrieval.
    name="tiny-dense", init="tiny-dense-robust", seq_len=512, batch=4, steps=400, lr=5e-4, warmup=20, seed=108,
    grow={"insert_after": 1, "copy_layers": [1, 2]},
    head_dropout=[{"layers": [0, 1], "p": 0.5, "uniform_share": 0.5},
                  {"layers": [2, 3, 4], "p": 0.3, "uniform_share": 0.5}],
    mix={"prose": 0.06, "rust": 0.02, "python": 0.02, "numbers": 0.02, "repeat_random": 0.13,
         "retrieval_masked": 0.25, "needle_masked_long": 0.5},
    config=dict(RECIPES["dense"]["config"], num_hidden_layers=6),
)


def grow_layers(model, grow):
    """Returns a deeper copy of `model`: after layer `insert_after`, copies of `copy_layers` whose
    o_proj and down_proj are zero (each new block adds nothing to the residual stream, so the
    function is unchanged until training moves them)."""
    import copy
    from transformers import AutoModelForCausalLM
    cfg = copy.deepcopy(model.config)
    old = list(model.model.layers)
    new_blocks = []
    for i in grow["copy_layers"]:
        b = copy.deepcopy(old[i])
        torch.nn.init.zeros_(b.self_attn.o_proj.weight)
        torch.nn.init.zeros_(b.mlp.down_proj.weight)
        new_blocks.append(b)
    at = grow["insert_after"] + 1
    layers = old[:at] + new_blocks + old[at:]
    cfg.num_hidden_layers = len(layers)
    grown = AutoModelForCausalLM.from_config(cfg, attn_implementation=ATTN, dtype=torch.float32)
    sd = {}
    for k, v in model.state_dict().items():
        if not k.startswith("model.layers."):
            sd[k] = v
    for j, b in enumerate(layers):
        for k, v in b.state_dict().items():
            sd[f"model.layers.{j}.{k}"] = v
    grown.load_state_dict(sd, strict=True)
    return grown


def add_head_dropout(model, layers, p, gen, uniform_share=0.0):
    """Drops each listed layer's heads independently per row with probability p, in training
    mode only: a dropped head's output (its slice of o_proj's input) is zeroed, or, for a share
    `uniform_share` of the drops, replaced by what the head would output with uniform causal
    attention (the running mean of its values: the retrieval-head paper's masking)."""
    cfg = model.config
    nh, hd = cfg.num_attention_heads, cfg.head_dim
    nkv = cfg.num_key_value_heads
    values = {}

    def keep_values(layer):
        def hook(module, args, out):
            if module.training:
                values[layer] = out
        return hook

    def drop(layer):
        def hook(module, args):
            if not module.training:
                return None
            x = args[0]
            b, t, _ = x.shape
            u = torch.rand(b, 1, nh, 1, generator=gen).to(x.dtype)
            heads = x.view(b, t, nh, hd)
            out = heads * (u >= p).to(x.dtype)
            if uniform_share > 0:
                v = values[layer].view(b, t, nkv, hd).repeat_interleave(nh // nkv, dim=2)
                mean = v.cumsum(dim=1) / torch.arange(1, t + 1, dtype=x.dtype).view(1, t, 1, 1)
                out = out + mean * (u < p * uniform_share).to(x.dtype)
            return out.view(b, t, nh * hd),
        return hook

    for l in layers:
        attn = model.model.layers[l].self_attn
        attn.v_proj.register_forward_hook(keep_values(l))
        attn.o_proj.register_forward_pre_hook(drop(l))


class Batches:
    """Deterministic batch stream: each row picks a domain with the recipe's weights, then a
    random window of that domain's token stream, or a row of synthetic retrieval tasks whose
    haystacks are windows of the prose stream."""

    def __init__(self, recipe, split="train", seed=0):
        from transformers import AutoTokenizer
        self.tok = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
        self.streams = {d: np.load(TOKENS / f"{d}.{split}.npy").astype(np.int64) for d in TEXT_DOMAINS}
        self.domains = list(recipe["mix"])
        self.weights = np.array([recipe["mix"][d] for d in self.domains])
        self.seq_len, self.batch = recipe["seq_len"], recipe["batch"]
        self.np_rng = np.random.default_rng(seed)
        self.rng = random.Random(seed)
        self._enc_cache = {}
        self.newline = self.encode("\n")[0]
        # The 54 most frequent prose tokens (no specials) and the ten digits, for the induction
        # warm-up rows: with a small alphabet the copying circuit forms within a few hundred
        # steps (with 512 tokens it had not after 750).
        counts = np.bincount(self.streams["prose"], minlength=VOCAB_SIZE)
        counts[:3] = 0
        self.alphabet = [int(i) for i in np.argsort(-counts, kind="stable")[:54]]
        self.digits = [self.encode(str(d))[0] for d in range(10)]

    def encode(self, text):
        ids = self._enc_cache.get(text)
        if ids is None:
            ids = self.tok.encode(text, add_special_tokens=False)
            if len(self._enc_cache) < 100_000:
                self._enc_cache[text] = ids
        return list(ids)

    def filler(self, n):
        s = self.streams["prose"]
        i = int(self.np_rng.integers(0, len(s) - n - 1))
        w = s[i:i + n].copy()
        w[w == EOT] = self.newline  # no document breaks inside a haystack
        return w.tolist()

    def row(self, domain):
        if domain == "retrieval":
            return retrieval_sequence(self, self.filler, self.rng, self.seq_len + 1), None
        if domain == "repeat_random":
            return repeated_random_sequence(self.rng, self.seq_len + 1, self.alphabet, self.digits)
        if domain == "needle_masked_long":
            return needle_sequence_masked(self, self.filler, self.rng, self.seq_len + 1, longest=500)
        if domain == "needle_masked":
            return needle_sequence_masked(self, self.filler, self.rng, self.seq_len + 1)
        if domain == "retrieval_masked":
            return retrieval_sequence_masked(self, self.filler, self.rng, self.seq_len + 1)
        s = self.streams[domain]
        i = int(self.np_rng.integers(0, len(s) - self.seq_len - 2))
        return s[i:i + self.seq_len + 1].tolist(), None

    def __iter__(self):
        return self

    def __next__(self):
        doms = self.np_rng.choice(len(self.domains), size=self.batch, p=self.weights)
        rows = [self.row(self.domains[d]) for d in doms]
        x = torch.tensor([r[0] for r in rows], dtype=torch.long)
        y = x[:, 1:].clone()
        for b, (_, m) in enumerate(rows):
            if m is not None:
                y[b][torch.tensor(m[1:]) == 0] = -100  # loss only where the mask is 1
        return x[:, :-1], y, [self.domains[d] for d in doms]


def make_model(recipe):
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = dict(recipe["config"])
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    torch.manual_seed(recipe["seed"])
    return AutoModelForCausalLM.from_config(config, attn_implementation=ATTN, dtype=torch.float32)


def lr_at(step, recipe):
    total, warm, peak = recipe["steps"], recipe["warmup"], recipe["lr"]
    if step < warm:
        return peak * (step + 1) / warm
    p = (step - warm) / max(1, total - warm)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def save(model, out: Path, recipe, log):
    out.mkdir(parents=True, exist_ok=True)
    model.config.use_cache = True
    model.save_pretrained(out, safe_serialization=True)
    # transformers 5 writes rope_parameters only; older HF tools read rope_theta.
    cfg = json.loads((out / "config.json").read_text())
    cfg.setdefault("rope_theta", cfg.get("rope_parameters", {}).get("rope_theta", 10000.0))
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER_DIR / f, out / f)
    gen = json.loads((out / "generation_config.json").read_text()) if (out / "generation_config.json").exists() else {}
    gen.update({"bos_token_id": EOT, "eos_token_id": [EOT, IM_END], "pad_token_id": EOT, "do_sample": False})
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    (out / "train_log.json").write_text(json.dumps(log, indent=1) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=list(RECIPES), required=True)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--init", type=Path, help="start from this checkpoint instead of a fresh model")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--retrieval-share", type=float, help="override the retrieval share of the mix")
    ap.add_argument("--save-every", type=int, default=0, help="also save intermediate checkpoints")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe = dict(RECIPES[args.model])
    if args.steps:
        recipe["steps"] = args.steps
    if args.lr:
        recipe["lr"] = args.lr
    if args.retrieval_share is not None:
        rest = 1.0 - recipe["mix"]["retrieval"]
        recipe["mix"] = {d: (args.retrieval_share if d == "retrieval" else w * (1 - args.retrieval_share) / rest)
                         for d, w in recipe["mix"].items()}
    if args.init:
        recipe["init"] = str(args.init)
        recipe["seed"] += 100
    init = args.init or (MODELS.parent / "recipes" / "build" / "ckpt" / recipe["init"] if recipe.get("init") else None)
    out = args.out or MODELS / recipe["name"]
    random.seed(recipe["seed"])
    np.random.seed(recipe["seed"])
    model = make_model(recipe)
    if init:
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32, attn_implementation=ATTN)
        print(f"initialised from {init}", flush=True)
    if recipe.get("grow"):
        model = grow_layers(model, recipe["grow"])
        print(f"grown to {model.config.num_hidden_layers} layers", flush=True)
    if recipe.get("head_dropout"):
        hds = recipe["head_dropout"]
        gen = torch.Generator().manual_seed(recipe["seed"])
        for hd in (hds if isinstance(hds, list) else [hds]):
            add_head_dropout(model, hd["layers"], hd["p"], gen, hd.get("uniform_share", 0.0))
    nparams = sum(p.numel() for p in model.parameters())
    print(f"{recipe['name']}: {nparams:,} parameters", flush=True)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "norm" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=recipe["lr"], betas=(0.9, 0.95), eps=1e-8)
    batches = Batches(recipe, "train", seed=recipe["seed"])
    is_moe = recipe["config"]["model_type"] == "mixtral"
    log = {"recipe": {k: v for k, v in recipe.items()}, "parameters": nparams, "threads": args.threads,
           "torch": torch.__version__, "history": []}
    if init and (Path(init) / "train_log.json").exists():
        # Staged training: keep the earlier stages' logs, so the shipped model records them all.
        log["init_log"] = json.loads((Path(init) / "train_log.json").read_text())
    model.train()
    t0 = time.time()
    ntok = 0
    for step in range(recipe["steps"]):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, recipe)
        x, y, _ = next(batches)
        kw = {"output_router_logits": True} if is_moe else {}
        outp = model(input_ids=x, labels=None, use_cache=False, **kw)
        lm = torch.nn.functional.cross_entropy(outp.logits.reshape(-1, outp.logits.size(-1)), y.reshape(-1),
                                             ignore_index=-100)
        loss = lm
        aux = None
        if is_moe:
            aux = outp.aux_loss
            loss = lm + model.config.router_aux_loss_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ntok += x.numel()
        if step % 25 == 0 or step == recipe["steps"] - 1:
            el = time.time() - t0
            rec = {"step": step, "loss": round(lm.item(), 4), "aux": round(aux.item(), 4) if aux is not None else None,
                   "grad_norm": round(gn.item(), 3), "lr": round(lr_at(step, recipe), 6), "elapsed_s": round(el, 1),
                   "tok_per_s": round(ntok / el, 1)}
            log["history"].append(rec)
            print(json.dumps(rec), flush=True)
        if args.save_every and step and step % args.save_every == 0:
            save(model, out.parent / (out.name + f"-step{step}"), recipe, log)
        if recipe.get("stop_after_step") == step:
            break
    log["train_seconds"] = round(time.time() - t0, 1)
    log["steps"] = step + 1  # optimizer updates done
    log["tokens"] = ntok
    model.eval()
    save(model, out, recipe, log)
    print(f"done in {log['train_seconds']} s; saved to {out}", flush=True)


if __name__ == "__main__":
    main()
