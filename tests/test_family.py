"""Family behaviour: causal loss masks exactly summary + EOS; seq2seq pads labels with -100; BOS/EOS added where
missing."""

from __future__ import annotations

import torch
from transformers import AddedToken

from sumlab.family import IGNORE_INDEX, Causal, Seq2Seq
from sumlab.models import train_tiny_tokenizer

TEXTS = [
    "#Person1#: Hello, can I book a table for four?\n#Person2#: Sure, at 7 pm.",
    "They book a table for four at 7 pm.",
] * 20


def test_causal_labels_cover_exactly_summary_and_eos() -> None:
    tok = train_tiny_tokenizer("gpt2", 300, TEXTS)
    assert tok.pad_token_id == tok.eos_token_id  # the case a pad-based mask gets wrong
    fam = Causal(tok, separator=" TL;DR: ")
    rows = [
        {"idx": 0, **fam.features("a long dialogue about a table for four", "book a table", 64, 16)},
        {"idx": 1, **fam.features("short", "ok", 64, 16)},
    ]
    batch = fam.collate(rows)
    for i, row in enumerate(rows):
        summary_ids = tok("book a table" if i == 0 else "ok", add_special_tokens=False)["input_ids"]
        labels = batch["labels"][i]
        kept = labels[labels != IGNORE_INDEX].tolist()
        assert kept == summary_ids + [tok.eos_token_id]
        # the kept positions are exactly the ones right after the prompt, in the input too
        start = len(row["prompt_ids"])
        assert batch["input_ids"][i, start : start + len(kept)].tolist() == kept
        assert (labels[:start] == IGNORE_INDEX).all()
    # right padding of the shorter row: its pad (= EOS id) positions are masked out of the loss
    short = batch["labels"][1]
    assert short[batch["attention_mask"][1] == 0].eq(IGNORE_INDEX).all()


def test_causal_prompt_truncated_from_the_left_and_left_padded_for_generation() -> None:
    tok = train_tiny_tokenizer("gpt2", 300, TEXTS)
    fam = Causal(tok, separator=" TL;DR: ")
    long_text = " ".join(f"word{i}" for i in range(200))
    feats = fam.features(long_text, None, 20, 8)
    assert len(feats["prompt_ids"]) == 20
    assert tok.decode(feats["prompt_ids"]).endswith("word199 TL;DR: ")  # the end of the dialogue survives
    batch = fam.collate([{"idx": 0, **feats}, {"idx": 1, **fam.features("short", None, 20, 8)}])
    assert "labels" not in batch
    assert batch["prompt_mask"][1, 0] == 0 and batch["prompt_mask"][1, -1] == 1  # left padding


def test_seq2seq_labels_padded_with_ignore_index_and_prefix_added() -> None:
    tok = train_tiny_tokenizer("t5", 300, TEXTS)
    fam = Seq2Seq(tok, prefix="summarize: ")
    rows = [
        {"idx": 0, **fam.features("hello there", "a short one", 32, 8)},
        {"idx": 1, **fam.features("hi", "a", 32, 8)},
    ]
    assert tok.decode(rows[0]["input_ids"], skip_special_tokens=True).startswith("summarize: hello")
    batch = fam.collate(rows)
    n = len(rows[1]["labels"])
    assert (batch["labels"][1, n:] == IGNORE_INDEX).all() and batch["labels"][1, n - 1] == tok.eos_token_id
    assert batch["idx"].tolist() == [0, 1]


def test_seq2seq_appends_eos_when_tokenizer_adds_none() -> None:
    tok = train_tiny_tokenizer("gpt2", 300, TEXTS)  # adds no special tokens, like KoBART's tokenizer
    fam = Seq2Seq(tok)
    feats = fam.features("hello there", "a short one", 32, 4)
    assert feats["input_ids"][-1] == tok.eos_token_id and feats["labels"][-1] == tok.eos_token_id
    assert len(feats["labels"]) == 4  # truncation leaves room for the EOS


def test_seq2seq_wraps_source_in_bos_eos_when_tokenizer_adds_neither() -> None:
    """KoBART's case: a BART vocabulary whose tokenizer adds no <s>/</s> gets <s> source </s> and summary </s>
    (decoding starts at </s>, so the summary's first token is learnt right after it)."""
    from tokenizers import processors

    tok = train_tiny_tokenizer("bart", 300, TEXTS)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A")  # adds nothing, as KoBART's
    assert tok("hello")["input_ids"] == tok("hello", add_special_tokens=False)["input_ids"]
    feats = Seq2Seq(tok).features("hello there", "a short one", 32, 3)
    assert feats["input_ids"] == [tok.bos_token_id, *tok("hello there")["input_ids"], tok.eos_token_id]
    assert feats["labels"] == [*tok("a short one")["input_ids"][:2], tok.eos_token_id]  # cut, EOS kept, no BOS


def test_tags_stay_whole_and_survive_decoding() -> None:
    for arch in ("t5", "bart", "gpt2"):
        tok = train_tiny_tokenizer(arch, 300, TEXTS)
        tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in ("#Person1#", "#Person2#")])
        text = "#Person1#: Hello, #Person2#'s table"
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.convert_tokens_to_ids("#Person1#") in ids and tok.convert_tokens_to_ids("#Person2#") in ids
        assert tok.decode(ids, skip_special_tokens=True) == text, arch


def test_decode_drops_padding_and_special_tokens() -> None:
    from sumlab.family import decode

    tok = train_tiny_tokenizer("t5", 300, TEXTS)
    ids = tok("a table for four")["input_ids"]
    seq = torch.tensor([[tok.pad_token_id, *ids, tok.pad_token_id]])
    assert decode(tok, seq) == ["a table for four"]
