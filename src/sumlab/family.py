"""Everything that differs between encoder-decoder and decoder-only summarizers, in one place.

A family turns (text, summary) into features, pads a batch, computes the training loss and generates
summaries. The LightningModule and the data module never branch on the family themselves.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, GenerationConfig

IGNORE_INDEX = -100  # label positions the loss skips (padding, and the prompt of causal models)


def _pad(rows: list[list[int]], value: int, left: bool = False) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([([value] * (width - len(r)) + r) if left else (r + [value] * (width - len(r))) for r in rows])


def decode(tokenizer: Any, sequences: torch.Tensor) -> list[str]:
    # Pegasus writes sentence breaks as the literal token "<n>".
    texts = tokenizer.batch_decode(sequences, skip_special_tokens=True)
    return [t.replace("<n>", "\n").strip() for t in texts]


def generate_texts(family: "Seq2Seq | Causal", model: Any, batch: dict[str, Any], config: GenerationConfig) -> tuple[list[str], torch.Tensor]:
    """Summaries for a batch, and each one's length in generated tokens (special tokens not counted)."""
    sequences = family.generate(model, batch, config)
    special = torch.tensor(sorted(set(family.tokenizer.all_special_ids)), device=sequences.device)
    return decode(family.tokenizer, sequences), (~torch.isin(sequences, special)).sum(1)


class Seq2Seq:
    name = "seq2seq"
    auto_model = AutoModelForSeq2SeqLM

    def __init__(self, tokenizer: Any, prefix: str = "", separator: str = "") -> None:
        self.tokenizer = tokenizer
        self.prefix = prefix
        # Some tokenizers (KoBART's) add no EOS; a seq2seq model must see where source and summary end.
        self._append_eos = tokenizer.eos_token_id is not None and tokenizer("a")["input_ids"][-1:] != [
            tokenizer.eos_token_id
        ]
        self._collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)

    def _encode(self, text: str, max_length: int) -> list[int]:
        limit = max_length - 1 if self._append_eos else max_length
        ids = self.tokenizer(text, truncation=True, max_length=limit)["input_ids"]
        return ids + [self.tokenizer.eos_token_id] if self._append_eos else ids

    def features(self, text: str, summary: Optional[str], max_source: int, max_target: int) -> dict[str, list[int]]:
        feats = {"input_ids": self._encode(self.prefix + text, max_source)}
        if summary is not None:
            feats["labels"] = self._encode(summary, max_target)
        return feats

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self._collator([{k: v for k, v in r.items() if k != "idx"} for r in rows])
        batch["idx"] = torch.tensor([r["idx"] for r in rows])
        return dict(batch)

    def loss(self, model: Any, batch: dict[str, torch.Tensor], label_smoothing: float) -> torch.Tensor:
        labels = batch["labels"]
        decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], decoder_input_ids=decoder_input_ids
        ).logits
        return F.cross_entropy(
            logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing
        )

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        """Real (non-padding) tokens the model processed: source plus summary."""
        return int(batch["attention_mask"].sum() + (batch["labels"] != IGNORE_INDEX).sum())

    def generate(self, model: Any, batch: dict[str, torch.Tensor], config: GenerationConfig) -> torch.Tensor:
        return model.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], generation_config=config
        )


class Causal:
    """Decoder-only: ``prompt + separator + summary + EOS`` in one sequence; the loss covers summary and EOS.

    The loss mask is built from positions, not from the pad id: GPT-2's pad token *is* its EOS, so a
    pad-based mask would also hide the EOS the model must learn to emit.
    """

    name = "causal"
    auto_model = AutoModelForCausalLM

    def __init__(self, tokenizer: Any, prefix: str = "", separator: str = "\nTL;DR:\n") -> None:
        self.tokenizer = tokenizer
        self.prefix = prefix
        self.separator_ids = tokenizer(separator, add_special_tokens=False)["input_ids"]

    def features(self, text: str, summary: Optional[str], max_source: int, max_target: int) -> dict[str, list[int]]:
        prompt = self.tokenizer(self.prefix + text, add_special_tokens=False)["input_ids"]
        prompt = prompt[-max(1, max_source - len(self.separator_ids)) :] + self.separator_ids  # keep the end
        feats = {"prompt_ids": prompt}
        if summary is not None:
            target = self.tokenizer(summary, add_special_tokens=False)["input_ids"][: max_target - 1]
            feats["target_ids"] = target + [self.tokenizer.eos_token_id]
        return feats

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id
        prompts = [r["prompt_ids"] for r in rows]
        # Generation input: prompts left-padded so every new token is appended right after its prompt.
        batch = {
            "prompt_ids": _pad(prompts, pad, left=True),
            "prompt_mask": _pad([[1] * len(p) for p in prompts], 0, left=True),
            "idx": torch.tensor([r["idx"] for r in rows]),
        }
        if "target_ids" in rows[0]:
            full = [r["prompt_ids"] + r["target_ids"] for r in rows]
            labels = [[IGNORE_INDEX] * len(r["prompt_ids"]) + r["target_ids"] for r in rows]
            batch["input_ids"] = _pad(full, pad)
            batch["attention_mask"] = _pad([[1] * len(f) for f in full], 0)
            batch["labels"] = _pad(labels, IGNORE_INDEX)
        return batch

    def loss(self, model: Any, batch: dict[str, torch.Tensor], label_smoothing: float) -> torch.Tensor:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(),
            batch["labels"][:, 1:].flatten(),
            ignore_index=IGNORE_INDEX,
            label_smoothing=label_smoothing,
        )

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum())

    def generate(self, model: Any, batch: dict[str, torch.Tensor], config: GenerationConfig) -> torch.Tensor:
        out = model.generate(
            input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"], generation_config=config
        )
        return out[:, batch["prompt_ids"].shape[1] :]  # only the new tokens


FAMILIES = {"seq2seq": Seq2Seq, "causal": Causal}


def make_family(name: str, tokenizer: Any, prefix: str, separator: str) -> Seq2Seq | Causal:
    return FAMILIES[name](tokenizer, prefix=prefix, separator=separator)
