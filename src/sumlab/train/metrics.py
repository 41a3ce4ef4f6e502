"""ROUGE as a torchmetrics Metric that counts every example exactly once under DDP.

Lightning's DistributedSampler pads the last batches with repeated examples so every rank gets the
same count; averaging per rank would count those twice. Each rank scores its own pairs, the per-example
scores are gathered with their example indices, and duplicates are dropped by index before the mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from sumlab.text.rouge import ROUGE_KEYS, score_references


class RougeMetric(Metric):
    full_state_update = False

    def __init__(self, tokenizer: str = "default", multi_reference: str = "mean", remove: Sequence[str] = ()) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.multi_reference = multi_reference  # mean or max over an example's references
        self.remove = tuple(remove)  # metrics.remove_tokens
        self.add_state("idx", default=[], dist_reduce_fx="cat")
        self.add_state("scores", default=[], dist_reduce_fx="cat")  # rows: ROUGE_KEYS + generated length

    def update(
        self, idx: torch.Tensor, predictions: list[str], references: list[str | list[str]], lengths: torch.Tensor
    ) -> None:
        """``references``: one string per example, or a list of them (scored with ``multi_reference``)."""
        rows = []
        for pred, ref, length in zip(predictions, references, lengths.tolist(), strict=True):
            score = score_references(pred, ref, self.tokenizer, self.multi_reference, self.remove)
            rows.append([score[k] for k in ROUGE_KEYS] + [float(length)])
        self.idx.append(idx.detach().to(self.device, torch.long))
        self.scores.append(torch.tensor(rows, dtype=torch.float64, device=self.device))

    def last_rows(self) -> torch.Tensor:
        """The rows the last ``update`` added (ROUGE_KEYS + generated length per example), before any compute."""
        return self.scores[-1]

    def compute(self) -> dict[str, float]:
        idx = self.idx if isinstance(self.idx, torch.Tensor) else torch.cat(self.idx)
        scores = self.scores if isinstance(self.scores, torch.Tensor) else torch.cat(self.scores)
        # unique keeps one row per example index (DistributedSampler's repeats are identical anyway)
        unique, first = _first_occurrence(idx)
        kept = scores[first]
        means = kept.mean(0).tolist()
        result = dict(zip([*ROUGE_KEYS, "gen_len"], means, strict=True))
        result["rouge_combined"] = (result["rouge1"] + result["rouge2"] + result["rougeL"]) / 3
        result["num_examples"] = float(unique.numel())
        return result


def _first_occurrence(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    unique, inverse = torch.unique(idx, return_inverse=True)
    positions = torch.arange(idx.numel(), device=idx.device)
    first = torch.full_like(unique, idx.numel()).scatter_reduce(0, inverse, positions, reduce="amin")
    return unique, first
