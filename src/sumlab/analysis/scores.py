"""Per-example ROUGE of a run, scored once with the run's tokenizer and cached beside its predictions.

Training runs carry the scores of their test step in ``test_predictions.jsonl``: those are used as they are when
the tokenizer and multi_reference rule asked for are the run's own. Otherwise every example is scored with
``sumlab.text.rouge.score_references`` (with a progress bar on request) and the result is written (atomically) to
``scores-<tokenizer>-<multi_reference>.jsonl`` beside the predictions: a first line with the cache key (the
predictions file's size, modification time and a hash of its head and tail; the scorer's settings) and the interval
of the mean rouge_combined, then one line per example in file order. A cache that does not match is rescored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from sumlab.analysis.runs import Run
from sumlab.core.stats import Interval

KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "rouge_combined")  # rouge_combined = mean of rouge1, rouge2, rougeL


@dataclass(frozen=True)
class ExampleScores:
    """Per-example F1 in [0, 1] for each of KEYS, aligned with ``ids`` (the predictions file's order)."""

    ids: tuple[str, ...]
    values: dict[str, np.ndarray]  # key -> float64 array, one value per id
    tokenizer: str
    multi_reference: str
    interval: Interval  # bootstrap 95% interval of the mean rouge_combined

    def means(self) -> dict[str, float]:
        raise NotImplementedError

    def position(self) -> dict[str, int]:
        """id -> position in ``ids``."""
        raise NotImplementedError

    def as_dict(self) -> dict[str, Any]:
        """Summary only (tokenizer, rule, examples, means, interval): the arrays stay in ``values``."""
        raise NotImplementedError


def example_scores(run: Run, tokenizer: Optional[str] = None, multi_reference: Optional[str] = None,
                   progress: bool = False) -> ExampleScores:  # fmt: skip
    """The run's per-example ROUGE (``tokenizer``/``multi_reference``: default the run's own), from the cache or
    scored now (and cached when the directory is writable). SumlabError if the predictions lack references."""
    raise NotImplementedError


def cached_interval(run: Run) -> Optional[Interval]:
    """The rouge_combined interval of a valid cache with the run's own settings, without scoring (None if none)."""
    raise NotImplementedError
