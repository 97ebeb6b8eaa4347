"""Train the shared byte-level BPE tokenizer (4096 tokens, digits split one per token) on the
train split of the corpus, save it as a transformers tokenizer (tokenizer.json +
tokenizer_config.json with bos/eos and a ChatML chat template) in build/tokenizer, and
tokenize every domain/split into build/tokens/<domain>.<split>.npy (uint16, each document
preceded by <|endoftext|>)."""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (CHAT_TEMPLATE, CORPUS, EOT, NEEDLE_TEMPLATE, QUESTION, SPECIAL_TOKENS,  # noqa: E402
                    SPLITS, TEXT_DOMAINS, TOKENIZER_DIR, TOKENS, VOCAB_SIZE, passkey)


def docs(domain, split):
    with open(CORPUS / f"{domain}.{split}.jsonl") as f:
        for line in f:
            yield json.loads(line)["text"]


def training_texts():
    for d in TEXT_DOMAINS:
        yield from docs(d, "train")
    rng = random.Random(7)
    for _ in range(2000):  # the retrieval tasks' fixed phrases
        k = passkey(rng)
        yield NEEDLE_TEMPLATE.format(key=k) + QUESTION + f" {k}.\n"
        yield f"Records:\nabc: {k}\nLookups:\nabc -> {k}\nText: a b\nCopy: a b\n"
        yield f"<|im_start|>user\nWhat is the passkey?<|im_end|>\n<|im_start|>assistant\nThe passkey is {k}.<|im_end|>\n"


def build_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, show_progress=False,
                                  special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_texts(), trainer=trainer)
    return tok


def save_hf(tok: Tokenizer, out: Path):
    from transformers import PreTrainedTokenizerFast
    out.mkdir(parents=True, exist_ok=True)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                 eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                 unk_token=None, additional_special_tokens=SPECIAL_TOKENS[1:],
                                 model_max_length=1024, clean_up_tokenization_spaces=False)
    hf.save_pretrained(out)
    # Keep the chat template inside tokenizer_config.json (no separate chat_template.jinja).
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg["bos_token"], cfg["eos_token"], cfg["pad_token"] = "<|endoftext|>", "<|endoftext|>", "<|endoftext|>"
    cfg["add_bos_token"], cfg["add_eos_token"] = False, False
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    (out / "chat_template.jinja").unlink(missing_ok=True)
    (out / "special_tokens_map.json").unlink(missing_ok=True)


def main():
    tok = build_tokenizer()
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2]
    save_hf(tok, TOKENIZER_DIR)
    tok = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    TOKENS.mkdir(parents=True, exist_ok=True)
    stats = {}
    for d in TEXT_DOMAINS:
        for s in SPLITS:
            texts = list(docs(d, s))
            ids = []
            for enc in tok.encode_batch(texts, add_special_tokens=False):
                ids.append(EOT)
                ids.extend(enc.ids)
            arr = np.asarray(ids, dtype=np.uint16)
            np.save(TOKENS / f"{d}.{s}.npy", arr)
            nbytes = sum(len(t.encode()) for t in texts)
            stats[f"{d}.{s}"] = {"tokens": int(arr.size), "bytes_per_token": round(nbytes / arr.size, 3)}
    (TOKENS / "stats.json").write_text(json.dumps(stats, indent=1))
    print(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
