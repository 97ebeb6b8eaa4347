"""Shared pieces of the RouteLab tiny-model recipes: paths, the synthetic task generators
(numbers/tables, needle, key/value lookup, copy), the token-class rule and the model configs.

Everything random here takes an explicit `random.Random` so the recipes are reproducible.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
ASSETS = HERE.parent
BUILD = Path(os.environ.get("ROUTELAB_BUILD", HERE / "build"))
CORPUS = BUILD / "corpus"
TOKENS = BUILD / "tokens"
TOKENIZER_DIR = BUILD / "tokenizer"
MODELS = ASSETS / "models"

TEXT_DOMAINS = ["prose", "rust", "python", "numbers"]
CODE_DOMAINS = {"rust", "python"}
SPLITS = ["train", "valid"]

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOT, IM_START, IM_END = 0, 1, 2
VOCAB_SIZE = 4096

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# --------------------------------------------------------------------------------------
# Token classes (used for the MoE mutual-information figure).
# --------------------------------------------------------------------------------------
CLASSES = ["code", "prose", "digits", "punctuation", "whitespace"]
CLASS_RULE = (
    "Let s be the token's decoded text (tokenizer.decode([id]), byte-level, invalid UTF-8 "
    "bytes decode to U+FFFD). whitespace: s is empty or every char is one of ' ', '\\t', "
    "'\\n', '\\r', '\\x0b', '\\x0c'. Otherwise, if s contains an ASCII letter [A-Za-z]: "
    "code when the token's document domain is 'rust' or 'python', prose for any other "
    "domain ('prose', 'numbers'). Otherwise, if s contains an ASCII digit [0-9]: digits. "
    "Otherwise: punctuation (this includes underscores, operators, brackets and any "
    "non-ASCII symbol or U+FFFD). Checked in that order."
)
_WS = set(" \t\n\r\x0b\x0c")


def token_class(text: str, domain: str) -> str:
    if all(c in _WS for c in text):
        return "whitespace"
    if any(("a" <= c <= "z") or ("A" <= c <= "Z") for c in text):
        return "code" if domain in CODE_DOMAINS else "prose"
    if any("0" <= c <= "9" for c in text):
        return "digits"
    return "punctuation"


# --------------------------------------------------------------------------------------
# Synthetic numbers and tables.
# --------------------------------------------------------------------------------------
_COLS = ["id", "year", "count", "price", "total", "score", "width", "height", "age", "rank",
         "min", "max", "mean", "qty", "port", "size", "bytes", "ms", "load", "temp"]
_ROWS = ["alpha", "beta", "gamma", "delta", "north", "south", "east", "west", "red", "green",
         "blue", "item", "node", "host", "row", "batch", "run", "day", "week", "unit"]
_UNITS = ["kg", "km", "ms", "MB", "%", "s", "m", "GB", "Hz", "cm"]


def _num(rng: random.Random) -> str:
    k = rng.random()
    if k < 0.45:
        return str(rng.randint(0, 10 ** rng.randint(1, 5)))
    if k < 0.8:
        return f"{rng.uniform(0, 10 ** rng.randint(1, 4)):.{rng.randint(1, 3)}f}"
    if k < 0.9:
        return f"-{rng.randint(1, 9999)}"
    return f"{rng.randint(1, 999):,}".replace(",", ",") + f",{rng.randint(0, 999):03d}"


def numbers_doc(rng: random.Random) -> str:
    """One synthetic document of numbers: a table (CSV, Markdown or aligned), arithmetic,
    sequences or dated measurements."""
    kind = rng.randrange(6)
    lines = []
    if kind in (0, 1, 2):
        cols = rng.sample(_COLS, rng.randint(2, 6))
        nrows = rng.randint(4, 24)
        label = rng.random() < 0.5
        header = (["name"] if label else []) + cols
        rows = []
        for r in range(nrows):
            vals = [_num(rng) for _ in cols]
            rows.append(([f"{rng.choice(_ROWS)}{r}"] if label else []) + vals)
        if kind == 0:
            lines.append(",".join(header))
            lines += [",".join(r) for r in rows]
        elif kind == 1:
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join("---" for _ in header) + "|")
            lines += ["| " + " | ".join(r) + " |" for r in rows]
        else:
            w = [max(len(x) for x in col) + 2 for col in zip(header, *rows)]
            lines.append("".join(h.rjust(n) for h, n in zip(header, w)))
            lines += ["".join(x.rjust(n) for x, n in zip(r, w)) for r in rows]
    elif kind == 3:
        for _ in range(rng.randint(5, 30)):
            a, b = rng.randint(0, 10 ** rng.randint(1, 4)), rng.randint(0, 10 ** rng.randint(1, 4))
            op = rng.choice("+-*")
            c = a + b if op == "+" else a - b if op == "-" else a * b
            lines.append(f"{a} {op} {b} = {c}")
    elif kind == 4:
        for _ in range(rng.randint(2, 8)):
            start, step = rng.randint(-50, 500), rng.randint(1, 40)
            n = rng.randint(6, 16)
            lines.append(", ".join(str(start + i * step) for i in range(n)))
    else:
        y = rng.randint(1990, 2030)
        for _ in range(rng.randint(5, 25)):
            lines.append(f"{y}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
                         f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d} "
                         f"{_num(rng)} {rng.choice(_UNITS)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# Retrieval tasks, built directly on token ids. `filler` is a callable returning a list of
# `n` token ids of haystack text (prose from the split in use).
# --------------------------------------------------------------------------------------
NEEDLE_TEMPLATE = " The passkey is {key}. Remember it. {key} is the passkey. "
QUESTION = "\nWhat is the passkey? The passkey is"
ANSWER_TEMPLATE = " {key}."
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def passkey(rng: random.Random) -> str:
    return str(rng.randint(10000, 99999))


def needle_example(tok, filler, rng, length, depth, key=None):
    """Prompt ids of exactly `length` tokens (haystack with the needle at `depth` in [0,1],
    then the question) and the answer ids (" 48213." → the digits and the full stop).
    Returns (prompt_ids, answer_ids, key, needle_span) where needle_span is the [start, end)
    range of prompt positions holding the needle sentence."""
    key = key or passkey(rng)
    needle = tok.encode(NEEDLE_TEMPLATE.format(key=key))
    question = tok.encode(QUESTION)
    answer = tok.encode(ANSWER_TEMPLATE.format(key=key))
    n_fill = length - len(needle) - len(question)
    hay = filler(n_fill)
    at = int(round(depth * n_fill))
    prompt = hay[:at] + needle + hay[at:] + question
    assert len(prompt) == length
    return prompt, answer, key, (at, at + len(needle))


def kv_example(tok, rng, length):
    """Key/value haystack: 'key: value' lines, then several lookups. Returns token ids."""
    pairs, used = [], set()
    head = tok.encode("Records:\n")
    ids = list(head)
    while True:
        k = "".join(rng.choice(_LETTERS) for _ in range(rng.randint(3, 5)))
        if k in used:
            continue
        v = str(rng.randint(100, 99999))
        line = tok.encode(f"{k}: {v}\n")
        if len(ids) + len(line) > length * 0.7:
            break
        used.add(k)
        pairs.append((k, v))
        ids += line
    ids += tok.encode("Lookups:\n")
    while True:
        k, v = rng.choice(pairs)
        q = tok.encode(f"{k} -> {v}\n")
        if len(ids) + len(q) > length:
            break
        ids += q
    return ids


def copy_example(tok, filler, rng, length):
    """Copy-the-span: a random span of haystack text, then 'Copy:' and the same span again."""
    ids = []
    while True:
        n = rng.randint(8, 64)
        span = filler(n)
        block = tok.encode("\nText: ") + span + tok.encode("\nCopy: ") + span
        if len(ids) + len(block) > length:
            break
        ids += block
    return ids


def chat_needle_example(tok, filler, rng, length):
    key = passkey(rng)
    head = tok.encode("<|im_start|>user\n")
    q = tok.encode("\nWhat is the passkey?<|im_end|>\n<|im_start|>assistant\n")
    ans = tok.encode(f"The passkey is {key}.<|im_end|>\n")
    needle = tok.encode(NEEDLE_TEMPLATE.format(key=key))
    n_fill = max(0, length - len(head) - len(q) - len(ans) - len(needle) - 1)
    n_fill = rng.randint(n_fill // 4, n_fill)
    hay = filler(n_fill)
    at = rng.randint(0, n_fill)
    return head + hay[:at] + needle + hay[at:] + q + ans


def retrieval_sequence(tok, filler, rng, length):
    """Fill a training row of `length` tokens with retrieval tasks separated by <|endoftext|>."""
    out = []
    while len(out) < length:
        room = length - len(out)
        k = rng.random()
        if k < 0.45:
            n = max(48, min(room - 8, rng.choice([64, 128, 256, 384, 512, 768, 1024])))
            prompt, ans, _, _ = needle_example(tok, filler, rng, n, rng.random())
            ex = prompt + ans
        elif k < 0.7:
            ex = kv_example(tok, rng, max(48, min(room, rng.randint(64, 512))))
        elif k < 0.9:
            ex = copy_example(tok, filler, rng, max(48, min(room, rng.randint(64, 512))))
        else:
            ex = chat_needle_example(tok, filler, rng, max(64, min(room, rng.randint(96, 512))))
        out += ex + [EOT]
    return out[:length]


def retrieval_sequence_masked(tok, filler, rng, length):
    """Stage-2 retrieval row for tiny-dense: like retrieval_sequence, plus copies of random
    token spans, and a loss mask that is 1 only on what must be retrieved (the passkey answer,
    the looked-up values, the copied spans, the chat answer). Returns (ids, mask)."""
    ids, mask = [], []

    def add(part, m):
        ids.extend(part)
        mask.extend([m] * len(part))

    while len(ids) < length:
        room = length - len(ids)
        k = rng.random()
        if k < 0.3:
            n = max(48, min(room - 8, rng.choice([64, 128, 256, 384, 512])))
            prompt, ans, _, _ = needle_example(tok, filler, rng, n, rng.random())
            add(prompt, 0)
            add(ans, 1)
        elif k < 0.45:
            pairs, used = [], set()
            add(tok.encode("Records:\n"), 0)
            budget = max(48, min(room, rng.randint(64, 512)))
            start = len(ids)
            while True:
                key = "".join(rng.choice(_LETTERS) for _ in range(rng.randint(3, 5)))
                if key in used:
                    continue
                line = tok.encode(f"{key}: {rng.randint(100, 99999)}\n")
                if len(ids) - start + len(line) > budget * 0.7:
                    break
                used.add(key)
                pairs.append(line)
                add(line, 0)
            add(tok.encode("Lookups:\n"), 0)
            while pairs:
                line = rng.choice(pairs)
                key_part = tok.encode(tok_decode_key(tok, line))
                if len(ids) - start + len(line) > budget:
                    break
                if line[:len(key_part)] != key_part:
                    key_part = line[:-len(tok.encode(line_value(tok, line)))]
                add(line[:len(key_part)], 0)
                add(line[len(key_part):], 1)
        elif k < 0.9:
            budget = max(48, min(room, rng.randint(64, 512)))
            start = len(ids)
            while True:
                n = rng.randint(8, 64)
                span = filler(n) if rng.random() < 0.3 else [rng.randrange(3, 4096) for _ in range(n)]
                head, mid = tok.encode("\nText: "), tok.encode("\nCopy: ")
                if len(ids) - start + len(head) + len(mid) + 2 * n > budget:
                    break
                add(head + span + mid, 0)
                add(span, 1)
        else:
            ex = chat_needle_example(tok, filler, rng, max(64, min(room, rng.randint(96, 512))))
            a = len(ex) - 1
            while a > 0 and ex[a] != IM_START:
                a -= 1
            cut = a + len(tok.encode("<|im_start|>assistant\n"))
            add(ex[:cut], 0)
            add(ex[cut:], 1)
        add([EOT], 0)
    return ids[:length], mask[:length]


def repeated_random_sequence(rng, length, alphabet, digits):
    """Induction warm-up row for tiny-dense: blocks of a random token sequence (8-16 ids, each
    block either all digits or drawn from `alphabet`, the most frequent tokens) repeated 3
    times, separated by <|endoftext|>. The loss mask is 1 on every repeat after the first, which
    only a copying circuit (previous-token head + induction head) can predict. A small alphabet
    matters: copying needs an identity map from each token's embedding to its own logit, which
    is learned per token; digit-only blocks repeat digits inside a block, so matching one
    previous token is not enough (as in a passkey like 44213). Returns (ids, mask)."""
    ids, mask = [], []
    while len(ids) < length:
        pool = digits if rng.random() < 0.5 else alphabet
        seq = [rng.choice(pool) for _ in range(rng.randint(8, 16))]
        for r in range(3):
            ids.extend(seq)
            mask.extend([int(r > 0)] * len(seq))
        ids.append(EOT)
        mask.append(0)
    return ids[:length], mask[:length]


def needle_sequence_masked(tok, filler, rng, length, longest=240):
    """Needle-only retrieval row for tiny-dense's last stages: needle examples (prompts of 40 to
    `longest` tokens, random depth) packed into one row, separated by <|endoftext|>, loss only
    on each answer (" 48213."). Returns (ids, mask)."""
    ids, mask = [], []
    while len(ids) < length:
        n = rng.randint(40, longest)
        prompt, ans, _, _ = needle_example(tok, filler, rng, n, rng.random())
        ids.extend(prompt + ans + [EOT])
        mask.extend([0] * len(prompt) + [1] * len(ans) + [0])
    return ids[:length], mask[:length]


def line_value(tok, line_ids):
    text = tok.tok.decode(line_ids) if hasattr(tok, "tok") else tok.decode(line_ids)
    return " " + text.split(": ")[1]


def tok_decode_key(tok, line_ids):
    """'abc: 123\n' ids → the text 'abc:' (the key part of a record line)."""
    text = tok.tok.decode(line_ids) if hasattr(tok, "tok") else tok.decode(line_ids)
    return text.split(":")[0] + ":"
