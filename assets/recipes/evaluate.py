"""Evaluate tiny-moe and tiny-dense with transformers and write the references the Rust side
reproduces: assets/models/<name>/eval.json and assets/models/<name>/examples.json.

    python evaluate.py                       # both models in assets/models
    python evaluate.py --model tiny-moe --path build/ckpt/tiny-moe-step500 --no-write

Prints validation loss (per domain, held-out split), needle accuracy by depth and length,
retrieval-head scores, and for the MoE the per-layer expert load and the mutual information
between token class and top-1 expert.

Everything runs in float32 with eager attention on CPU. The needle trials, the evaluation
texts and the example prompts depend only on the tokenizer, the held-out split and fixed
seeds, so they are identical for both models where they overlap.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (CLASS_RULE, CLASSES, CORPUS, EOT, MODELS, NEEDLE_TEMPLATE, QUESTION,  # noqa: E402
                    TEXT_DOMAINS, TOKENS, needle_example, passkey, token_class)

DEPTHS = [0.0, 0.25, 0.5, 0.75, 1.0]
NEEDLE_LENGTHS = {"tiny-dense": [128, 256, 512], "tiny-moe": [128, 256]}
NEEDLES_PER_CELL = 4
EXTRA_NEW_TOKENS = 3
EVAL_TEXTS_PER_DOMAIN = 2
EVAL_TEXT_TOKENS = 200
VAL_WINDOWS = 24
SEQ_LEN = {"tiny-dense": 512, "tiny-moe": 256}

NEEDLE_CORRECTNESS = ("correct iff the first len(answer_ids) greedily generated ids equal answer_ids "
                      "exactly (answer_ids = tokenizer.encode(' ' + passkey): a space token then one "
                      "token per digit)")
GENERATION_RULE = ("greedy decoding: at each step the argmax (first index on ties) of the last "
                   "position's logits, for exactly max_new_tokens = len(answer_ids) + 3 steps, no "
                   "stopping at EOS; float32, eager attention, KV cache")
MI_FORMULA = ("I(C;E) = sum_{c,e} p(c,e) * log2(p(c,e) / (p(c) p(e))) with p the empirical (plug-in) "
              "joint distribution over all evaluation-text tokens of class c and top-1 expert e "
              "(argmax of that layer's router logits, first index on ties); 0 log 0 = 0; no bias correction")
RETRIEVAL_RULE = ("Wu et al. 2024 retrieval score: over the needle trials, at each of the first "
                  "len(answer_ids) greedy steps whose generated token w equals the expected answer token, a "
                  "head scores a hit when the argmax (over all key positions) of its attention from the "
                  "query being decoded lies inside the needle sentence span [needle_start, needle_end) and "
                  "the prompt token there equals w; per-trial score = hits / len(answer_ids), averaged "
                  "over trials; retrieval heads: score > 0.1")


def versions():
    import safetensors
    import tokenizers
    import transformers
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "safetensors": safetensors.__version__, "numpy": np.__version__}


def load(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return tok, model


def valid_docs(domain):
    with open(CORPUS / f"{domain}.valid.jsonl") as f:
        return [json.loads(l) for l in f]


class Filler:
    """Haystack text from the held-out prose stream at seeded offsets (no document breaks)."""

    def __init__(self, tok, seed):
        self.s = np.load(TOKENS / "prose.valid.npy").astype(np.int64)
        self.rng = np.random.default_rng(seed)
        self.nl = tok.encode("\n", add_special_tokens=False)[0]

    def __call__(self, n):
        i = int(self.rng.integers(0, len(self.s) - n - 1))
        w = self.s[i:i + n].copy()
        w[w == EOT] = self.nl
        return w.tolist()


class Enc:
    def __init__(self, tok):
        self.tok = tok

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False)


# --------------------------------------------------------------------------------------------
@torch.no_grad()
def validation_loss(model, name):
    L = SEQ_LEN[name]
    out = {}
    for d in TEXT_DOMAINS:
        s = np.load(TOKENS / f"{d}.valid.npy").astype(np.int64)
        n = min(VAL_WINDOWS, (len(s) - 1) // L)
        tot, cnt = 0.0, 0
        for i in range(0, n, 8):
            rows = [s[j * L:(j + 1) * L + 1] for j in range(i, min(n, i + 8))]
            x = torch.tensor(np.stack(rows))
            logits = model(input_ids=x[:, :-1]).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), x[:, 1:].reshape(-1),
                                                     reduction="sum")
            tot += loss.item()
            cnt += x[:, 1:].numel()
        out[d] = round(tot / cnt, 4)
    out["mean"] = round(sum(out[d] for d in TEXT_DOMAINS) / len(TEXT_DOMAINS), 4)
    return out


@torch.no_grad()
def greedy(model, ids, steps, want_attn=False):
    """Greedy decode with KV cache; returns generated ids, top1-top2 logit margins, and (optionally)
    per step the attention argmax of every head: [step][layer][head]."""
    x = torch.tensor([ids])
    out = model(input_ids=x, use_cache=True, output_attentions=want_attn)
    past = out.past_key_values
    gen, margins, amax = [], [], []
    for step in range(steps):
        logits = out.logits[0, -1]
        top2 = torch.topk(logits, 2)
        nxt = int(torch.argmax(logits))
        gen.append(nxt)
        margins.append(round(float(top2.values[0] - top2.values[1]), 5))
        if want_attn:
            amax.append([a[0, :, -1].argmax(-1).tolist() for a in out.attentions])
        if step + 1 == steps:
            break
        out = model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True,
                    output_attentions=want_attn)
        past = out.past_key_values
    return gen, margins, amax


def needle_trials(model, tok, name):
    enc = Enc(tok)
    filler = Filler(tok, seed=2024)
    rng = random.Random(2024)
    trials = []
    cfg = model.config
    nl, nh = cfg.num_hidden_layers, cfg.num_attention_heads
    scores = np.zeros((nl, nh))
    for length in NEEDLE_LENGTHS[name]:
        for depth in DEPTHS:
            for _ in range(NEEDLES_PER_CELL):
                key = passkey(rng)
                body, _, key, (s0, s1) = needle_example(enc, filler, rng, length - 1, depth, key=key)
                prompt = [EOT] + body
                s0, s1 = s0 + 1, s1 + 1
                answer = enc.encode(" " + key)
                steps = len(answer) + EXTRA_NEW_TOKENS
                gen, margins, amax = greedy(model, prompt, steps, want_attn=True)
                correct = gen[:len(answer)] == answer
                for t, w in enumerate(answer):
                    if gen[t] != w:
                        continue
                    for l in range(nl):
                        for h in range(nh):
                            p = amax[t][l][h]
                            if s0 <= p < s1 and p < len(prompt) and prompt[p] == w:
                                scores[l, h] += 1.0 / len(answer)
                trials.append({"context_length": length, "depth": depth, "passkey": key,
                               "needle_start": s0, "needle_end": s1, "prompt_ids": prompt,
                               "answer_ids": answer, "max_new_tokens": steps, "generated_ids": gen,
                               "generated_text": tok.decode(gen), "top1_top2_logit_margins": margins,
                               "correct": bool(correct)})
    scores /= len(trials)
    by_depth = {str(d): acc([t for t in trials if t["depth"] == d]) for d in DEPTHS}
    by_len = {str(n): acc([t for t in trials if t["context_length"] == n]) for n in NEEDLE_LENGTHS[name]}
    table = {str(n): {str(d): acc([t for t in trials if t["depth"] == d and t["context_length"] == n])
                      for d in DEPTHS} for n in NEEDLE_LENGTHS[name]}
    above = int((scores > 0.1).sum())
    return {
        "format": {"prompt": "[<|endoftext|>] + haystack (held-out prose) with the needle sentence "
                             f"{NEEDLE_TEMPLATE!r} inserted at token index round(depth * haystack_len), "
                             f"then {QUESTION!r}; len(prompt_ids) == context_length",
                   "generation": GENERATION_RULE, "correctness": NEEDLE_CORRECTNESS},
        "depths": DEPTHS, "context_lengths": NEEDLE_LENGTHS[name], "needles_per_cell": NEEDLES_PER_CELL,
        "accuracy": acc(trials), "accuracy_by_depth": by_depth, "accuracy_by_length": by_len,
        "accuracy_table": table, "trials": trials,
    }, {
        "definition": RETRIEVAL_RULE, "threshold": 0.1,
        "scores": [[round(float(v), 4) for v in row] for row in scores],
        "heads_above_threshold": above, "num_heads": nl * nh,
        "fraction_above_threshold": round(above / (nl * nh), 4),
        "top_heads": [[int(l), int(h), round(float(scores[l, h]), 4)]
                      for l, h in sorted(np.ndindex(nl, nh), key=lambda lh: -scores[lh])[:8]],
    }


def acc(ts):
    return round(sum(t["correct"] for t in ts) / len(ts), 4) if ts else None


# --------------------------------------------------------------------------------------------
def eval_texts(tok):
    """Fixed held-out texts: per domain the first EVAL_TEXTS_PER_DOMAIN held-out documents (in file
    order) with at least EVAL_TEXT_TOKENS tokens, truncated to their first EVAL_TEXT_TOKENS tokens."""
    out = []
    for d in TEXT_DOMAINS:
        k = 0
        for doc in valid_docs(d):
            ids = tok.encode(doc["text"], add_special_tokens=False)
            if len(ids) < EVAL_TEXT_TOKENS:
                continue
            ids = ids[:EVAL_TEXT_TOKENS]
            toks = [tok.decode([i]) for i in ids]
            out.append({"domain": d, "source": doc["id"], "token_ids": ids, "text": tok.decode(ids),
                        "token_texts": toks, "classes": [token_class(t, d) for t in toks]})
            k += 1
            if k == EVAL_TEXTS_PER_DOMAIN:
                break
    return out


def mutual_information(classes, experts, n_experts):
    joint = np.zeros((len(CLASSES), n_experts))
    for c, e in zip(classes, experts):
        joint[CLASSES.index(c), e] += 1
    p = joint / joint.sum()
    pc, pe = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log2(p[nz] / (pc @ pe)[nz])).sum()), joint


@torch.no_grad()
def text_losses_and_routing(model, texts, is_moe):
    cfg = model.config
    res = []
    for t in texts:
        x = torch.tensor([t["token_ids"]])
        out = model(input_ids=x, output_router_logits=True) if is_moe else model(input_ids=x)
        logits = out.logits[0]
        nll = torch.nn.functional.cross_entropy(logits[:-1], x[0, 1:]).item()
        r = {"mean_nll": round(nll, 5)}
        if is_moe:
            top1, topk, margin = [], [], []
            for rl in out.router_logits:
                rl = rl.reshape(-1, cfg.num_local_experts).float()
                v, i = torch.topk(rl, cfg.num_experts_per_tok, dim=-1)
                top1.append(torch.argmax(rl, -1).tolist())
                topk.append(i.tolist())
                margin.append([round(float(a), 5) for a in (v[:, 0] - v[:, 1])])
            r.update(top1=top1, topk=topk, margin=margin)
        res.append(r)
    return res


def moe_report(model, texts, routed):
    cfg = model.config
    E, K = cfg.num_local_experts, cfg.num_experts_per_tok
    classes = [c for t in texts for c in t["classes"]]
    layers = []
    for l in range(cfg.num_hidden_layers):
        top1 = [e for r in routed for e in r["top1"][l]]
        topk = [e for r in routed for tk in r["topk"][l] for e in tk]
        margins = [m for r in routed for m in r["margin"][l]]
        load = np.bincount(topk, minlength=E)
        load1 = np.bincount(top1, minlength=E)
        mi, joint = mutual_information(classes, top1, E)
        share = load / load.sum()
        ent = -sum(p * math.log2(p) for p in share if p > 0)
        layers.append({
            "layer": l, "topk_counts": load.tolist(), "topk_share": [round(float(s), 4) for s in share],
            "top1_counts": load1.tolist(), "load_entropy_bits": round(ent, 4),
            "load_max_over_min": round(float(load.max() / max(1, load.min())), 3),
            "mi_bits": round(mi, 4), "class_by_expert_top1_counts": joint.astype(int).tolist(),
            "near_ties_margin_below_1e-3": int(sum(m < 1e-3 for m in margins)),
            "min_margin": round(float(min(margins)), 6),
        })
    return layers


# --------------------------------------------------------------------------------------------
def examples(model, tok, name):
    enc = Enc(tok)
    prose_doc = valid_docs("prose")[0]["text"]
    prose_prompt = " ".join(prose_doc.split()[:24])
    rust_prompt = "/// Returns the sum of the numbers in the slice.\npub fn sum(values: &[u64]) -> u64 {\n    let mut"
    py_prompt = "def read_lines(path):\n    \"\"\"Return the lines of a text file.\"\"\"\n    with open("
    filler = Filler(tok, seed=99)
    hay = tok.decode(filler(180))
    key = passkey(random.Random(99))
    cut = len(hay) // 2
    needle_prompt = hay[:cut] + NEEDLE_TEMPLATE.format(key=key) + hay[cut:] + QUESTION
    table_prompt = "| name | year | count |\n|---|---|---|\n| alpha0 | 2021 | 17 |\n| beta1 | 2022 | 4"
    chat = [{"role": "user", "content": hay[:300] + NEEDLE_TEMPLATE.format(key=key) + "\nWhat is the passkey?"}]
    chat_prompt = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    items = [
        ("prose", "prose", prose_prompt, None),
        ("rust code", "code", rust_prompt, None),
        ("python code", "code", py_prompt, None),
        ("numbers table", "numbers", table_prompt, None),
        ("needle in a haystack", "needle", needle_prompt, " " + key),
        ("chat needle", "chat", chat_prompt, "The passkey is " + key + "."),
    ]
    out = []
    for title, kind, prompt, answer in items:
        ids = enc.encode(prompt)
        n = 32
        gen, _, _ = greedy(model, ids, n)
        ex = {"title": title, "kind": kind, "prompt": prompt, "prompt_ids": ids, "answer": answer,
              "max_new_tokens": n, "greedy_ids": gen, "greedy_text": tok.decode(gen)}
        if kind == "chat":
            ex["messages"] = chat
        out.append(ex)
    return {"model": name, "generation": "greedy, exactly max_new_tokens steps, no EOS stop, float32 eager",
            "examples": out}


# --------------------------------------------------------------------------------------------
def evaluate(name, path, write=True, verbose=True):
    torch.set_num_threads(int(os.environ.get("EVAL_THREADS", "2")))
    tok, model = load(path)
    is_moe = model.config.model_type in ("mixtral", "qwen2_moe")
    nparams = sum(p.numel() for p in model.parameters())
    st = Path(path) / "model.safetensors"
    res = {"model": name, "versions": versions(), "model_type": model.config.model_type,
           "parameters": nparams, "safetensors_bytes": st.stat().st_size if st.exists() else None,
           "dtype": "float32"}
    res["validation_loss"] = {"per_domain": validation_loss(model, name),
                              "definition": f"mean next-token cross-entropy (nats) over the first {VAL_WINDOWS} "
                                            f"non-overlapping windows of {SEQ_LEN[name]}+1 tokens of each domain's "
                                            "held-out token stream (build/tokens/<domain>.valid.npy); mean = "
                                            "unweighted mean over domains"}
    texts = eval_texts(tok)
    routed = text_losses_and_routing(model, texts, is_moe)
    needles, rheads = needle_trials(model, tok, name)
    res["needle"] = needles
    res["retrieval_heads"] = rheads
    et = []
    for t, r in zip(texts, routed):
        e = {k: t[k] for k in ("domain", "source", "text", "token_ids", "token_texts", "classes")}
        e["mean_nll"] = r["mean_nll"]
        if is_moe:
            e["top1_expert"] = r["top1"]           # [layer][token]
            e["topk_experts"] = r["topk"]          # [layer][token][k]
            e["router_top1_top2_margin"] = r["margin"]  # [layer][token]
        et.append(e)
    res["eval_texts"] = {
        "class_rule": CLASS_RULE, "classes": CLASSES,
        "selection": f"per domain in {TEXT_DOMAINS}, the first {EVAL_TEXTS_PER_DOMAIN} held-out documents "
                     f"(file order) with >= {EVAL_TEXT_TOKENS} tokens, truncated to {EVAL_TEXT_TOKENS} tokens; "
                     "each text is run on its own (batch 1, no BOS, positions from 0)",
        "mean_nll_definition": "mean next-token cross-entropy (nats) over the text's positions 1..n-1",
        "texts": et,
    }
    if is_moe:
        layers = moe_report(model, texts, routed)
        res["moe"] = {"num_experts": model.config.num_local_experts, "top_k": model.config.num_experts_per_tok,
                      "mi_formula": MI_FORMULA,
                      "load_definition": "topk_counts[e] = number of (token, k) selections of expert e among "
                                         "the top-k of the router logits over all evaluation-text tokens",
                      "tokens": sum(len(t["token_ids"]) for t in texts),
                      "class_counts": {c: sum(t["classes"].count(c) for t in texts) for c in CLASSES},
                      "layers": layers, "max_mi_bits": max(l["mi_bits"] for l in layers)}
    if verbose:
        report(res)
    if write:
        out = Path(path)
        (out / "eval.json").write_text(json.dumps(res, separators=(",", ":")) + "\n")
        (out / "examples.json").write_text(json.dumps(examples(model, tok, name), indent=1) + "\n")
    return res


def report(res):
    print(f"\n=== {res['model']} ({res['model_type']}, {res['parameters']:,} params, "
          f"{res['safetensors_bytes']} bytes {res['dtype']})")
    print("validation loss:", json.dumps(res["validation_loss"]["per_domain"]))
    nd = res["needle"]
    print(f"needle accuracy: {nd['accuracy']:.3f}")
    print("  length \\ depth " + " ".join(f"{d:>6}" for d in nd["depths"]))
    for n, row in nd["accuracy_table"].items():
        print(f"  {n:>14} " + " ".join(f"{row[str(d)]:6.2f}" for d in nd["depths"]))
    rh = res["retrieval_heads"]
    print(f"retrieval heads (> 0.1): {rh['heads_above_threshold']}/{rh['num_heads']} "
          f"({rh['fraction_above_threshold']:.1%}); top: {rh['top_heads'][:5]}")
    print("eval-text NLL:", [round(t["mean_nll"], 3) for t in res["eval_texts"]["texts"]])
    if "moe" in res:
        m = res["moe"]
        print(f"MoE routing over {m['tokens']} eval tokens, classes {m['class_counts']}")
        for l in m["layers"]:
            print(f"  layer {l['layer']}: MI {l['mi_bits']:.3f} bits, load share "
                  f"{l['topk_share']}, entropy {l['load_entropy_bits']:.3f}/3 bits, "
                  f"near-ties {l['near_ties_margin_below_1e-3']}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["tiny-moe", "tiny-dense"], action="append")
    ap.add_argument("--path", type=Path)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    names = args.model or ["tiny-dense", "tiny-moe"]
    for n in names:
        evaluate(n, args.path or MODELS / n, write=not args.no_write)


if __name__ == "__main__":
    main()
