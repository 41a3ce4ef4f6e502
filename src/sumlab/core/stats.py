"""Paired bootstrap over examples: is a difference between two systems on the same inputs more than noise?

Used wherever sumlab reports a quality difference (compare, the leaderboard's intervals, benchmarks). The method is
the usual one for summarization metrics (Koehn 2004; Dror et al. 2018): resample example indices with replacement,
recompute the mean of each system on the same resample, and read the interval off the resampled differences.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

RESAMPLES = 10_000
SEED = 0


@dataclass(frozen=True)
class Interval:
    """A mean with its bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PairedDifference:
    """mean(b) - mean(a) over the same examples, its interval, and a two-sided bootstrap p-value."""

    difference: float
    low: float
    high: float
    p_value: float  # share of resamples whose difference is on the other side of 0 (x2, capped at 1); 1 when b == a
    confidence: float
    examples: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


CHUNK = 1 << 22  # resampled indices held at once (32 MiB): 300k examples x 10k resamples would be 24 GB


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """The mean of ``values`` over each of ``resamples`` resamples with replacement, drawn a chunk at a time."""
    n = len(values)
    if n < 1:
        raise ValueError("the bootstrap needs at least one example")
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK // n)
    means = [values[rng.integers(0, n, size=(min(rows, resamples - start), n))].mean(axis=1)
             for start in range(0, resamples, rows)]  # fmt: skip
    return np.concatenate(means)


def _bounds(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_mean(scores: Sequence[float], confidence: float = 0.95, resamples: int = RESAMPLES,
                   seed: int = SEED) -> Interval:  # fmt: skip
    """The mean of per-example scores with a percentile bootstrap interval (fixed seed: the same interval every run)."""
    values = np.asarray(scores, dtype=np.float64)
    means = _resampled_means(values, resamples, seed)
    return Interval(float(values.mean()), *_bounds(means, confidence), confidence)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, resamples: int = RESAMPLES,
                     seed: int = SEED) -> PairedDifference:  # fmt: skip
    """Paired bootstrap of mean(b) - mean(a): both systems' scores are resampled with the same example indices."""
    first, second = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if first.shape != second.shape:
        raise ValueError(f"paired scores need the same examples: got {len(first)} and {len(second)}")
    deltas = second - first
    resampled = _resampled_means(deltas, resamples, seed)
    observed = float(deltas.mean())
    if not deltas.any():  # identical systems: no evidence of any difference
        p_value = 1.0
    else:
        beyond = np.mean(resampled <= 0) if observed > 0 else np.mean(resampled >= 0)
        p_value = float(min(1.0, 2 * beyond))
    return PairedDifference(observed, *_bounds(resampled, confidence), p_value, confidence, len(deltas))
