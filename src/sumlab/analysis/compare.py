"""Is run B really better than run A? Paired bootstrap per ROUGE key over the same examples.

Every run after the first is compared with the first (the baseline): with N runs, N - 1 comparisons, each the
difference ``mean(run) - mean(baseline)`` per key with its 95% interval and two-sided p-value
(``sumlab.core.stats.paired_bootstrap``, fixed seed), per-example wins/ties/losses, and the examples whose
rouge_combined changed most (with their texts). The runs must hold the same ids with the same references and be
scored with one tokenizer and multi_reference rule (each run's own, or the ``tokenizer`` given).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from sumlab.analysis.runs import Run
from sumlab.core.stats import RESAMPLES, SEED


@dataclass(frozen=True)
class KeyResult:
    """One ROUGE key of one comparison: means, the paired difference and its interval, per-example outcomes."""

    key: str
    baseline_mean: float
    mean: float
    difference: float  # mean - baseline_mean
    low: float
    high: float
    p_value: float
    wins: int  # examples where the run scores higher than the baseline
    ties: int
    losses: int

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        raise NotImplementedError

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Changed:
    """An example whose rouge_combined changed most between the baseline and the run."""

    id: str
    baseline_score: float
    score: float
    delta: float
    baseline_prediction: str
    prediction: str
    references: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class PairResult:
    """One run against the baseline."""

    baseline: str  # run paths as given
    run: str
    keys: tuple[KeyResult, ...]
    changed: tuple[Changed, ...]

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Comparison:
    """What ``python -m sumlab.compare`` prints and writes to compare.json."""

    runs: tuple[dict[str, Any], ...]  # per run: path, name, kind, model, data, examples, means
    tokenizer: str
    multi_reference: str
    examples: int
    confidence: float
    resamples: int
    seed: int
    pairs: tuple[PairResult, ...]

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


def compare_runs(runs: Sequence[Run], tokenizer: Optional[str] = None, multi_reference: Optional[str] = None,
                 top: int = 10, confidence: float = 0.95, resamples: int = RESAMPLES, seed: int = SEED,
                 progress: bool = False) -> Comparison:  # fmt: skip
    """Compare ``runs[1:]`` with ``runs[0]``. SumlabError (one line) when they cannot be compared: fewer than two
    runs, different tokenizers or rules (without ``tokenizer``), different id sets (naming the first id that is
    missing), or different references for one id."""
    raise NotImplementedError
