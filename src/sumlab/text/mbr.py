"""Minimum-Bayes-risk selection: of several candidate summaries for one input, keep the one with the highest
expected ROUGE against the others.

The expected utility of candidate i is the weighted mean of its ROUGE F1 against every candidate j, itself
included: ``sum_j w_j U(i, j) / sum_j w_j``, the sample estimate of its expected ROUGE against a summary drawn
from the candidates with probabilities proportional to the weights (a model's weight in an ensemble; positive).
With equal weights the self term (1, or 0 for an empty candidate) is the same for all and leaves the pick as
"highest mean ROUGE against the others"; with unequal weights it is what makes a weight a vote (two candidates
weighted 2 and 1: the first is kept unless they are equal). Ties (within 1e-9) go to the earliest candidate:
the first beam, the first model.

ROUGE-1/2/L F1 are the same numbers :func:`sumlab.text.rouge.score_pair` gives (F1 = 2 * hits / (len_a +
len_b), symmetric), computed for all N^2 pairs at once: each candidate is tokenized once with the run's
ROUGE tokenizer and coded as integers; n-gram overlaps are sums of element-wise minima of count rows
(numpy); LCS lengths come from rapidfuzz's compiled bit-parallel LCS over the integer sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq

from sumlab.text.rouge import tokenize

UTILITIES = ("rouge1", "rouge2", "rougeL", "rouge_combined")
TIE = 1e-9  # expected utilities this close count as equal (summation order differs between candidates)
BLOCK = 1 << 22  # count-matrix elements compared at once: bounds memory for long candidates or large N


@dataclass(frozen=True)
class Selection:
    index: int  # position of the picked candidate
    expected: list[float]  # each candidate's expected utility (weighted mean ROUGE against all candidates)


def encode(tokens: Sequence[Sequence[str]]) -> list[np.ndarray]:
    """Each candidate's tokens as integer codes, shared across the candidates of one input."""
    vocabulary: dict[str, int] = {}
    return [np.fromiter((vocabulary.setdefault(t, len(vocabulary)) for t in toks), np.int64, len(toks))
            for toks in tokens]  # fmt: skip


def _counts(codes: list[np.ndarray]) -> np.ndarray:
    """Count rows (N x distinct codes) over the codes of every candidate."""
    flat = np.concatenate(codes) if codes else np.zeros(0, np.int64)
    keys, inverse = np.unique(flat, return_inverse=True)
    lengths = [len(c) for c in codes]
    cells = np.repeat(np.arange(len(codes)) * len(keys), lengths) + inverse.reshape(-1)
    counts = np.bincount(cells, minlength=len(codes) * len(keys)).reshape(len(codes), len(keys))
    # the narrowest type that holds every count: the pairwise minima below then read far fewer bytes
    longest = max(lengths, default=0)
    return counts.astype(np.uint8 if longest < 256 else np.uint16 if longest < 65536 else np.int64)


def _overlaps(counts: np.ndarray) -> np.ndarray:
    """hits[i, j] = sum over n-grams of min(count_i, count_j), a block of rows at a time."""
    n, width = counts.shape
    hits = np.zeros((n, n), np.int64)
    rows = max(1, BLOCK // max(1, n * width))
    for start in range(0, n, rows):
        block = counts[start : start + rows]
        hits[start : start + rows] = np.minimum(block[:, None, :], counts[None, :, :]).sum(-1, dtype=np.int32)
    return hits


def _f1(hits: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    total = lengths[:, None] + lengths[None, :]
    return np.divide(2.0 * hits, total, out=np.zeros(hits.shape), where=total > 0)


def _ngram_f1(codes: list[np.ndarray], n: int) -> np.ndarray:
    if n == 2:  # a bigram as one code: first * vocabulary + second
        width = 1 + max((int(c.max()) for c in codes if len(c)), default=0)
        codes = [c[:-1] * width + c[1:] for c in codes]
    lengths = np.array([len(c) for c in codes], np.int64)
    return _f1(_overlaps(_counts(codes)), lengths)


def _lcs_f1(codes: list[np.ndarray]) -> np.ndarray:
    sequences = [c.tolist() for c in codes]
    lcs = process.cdist(sequences, sequences, scorer=LCSseq.similarity, dtype=np.int32, workers=1)
    return _f1(lcs.astype(np.int64), np.array([len(c) for c in codes], np.int64))


def utility_matrix(codes: list[np.ndarray], utility: str = "rougeL") -> np.ndarray:
    """U[i, j]: ROUGE F1 (``utility``) of candidate i against candidate j, from :func:`encode`'s codes."""
    if utility == "rouge1":
        return _ngram_f1(codes, 1)
    if utility == "rouge2":
        return _ngram_f1(codes, 2)
    if utility == "rougeL":
        return _lcs_f1(codes)
    if utility == "rouge_combined":
        return (_ngram_f1(codes, 1) + _ngram_f1(codes, 2) + _lcs_f1(codes)) / 3
    raise ValueError(f"unknown utility {utility!r}; use one of {', '.join(UTILITIES)}")


def expected_utility(matrix: np.ndarray, weights: Optional[Sequence[float]] = None) -> np.ndarray:
    """Each candidate's weighted mean utility against all candidates (itself included)."""
    n = len(matrix)
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (n,) or not np.all(w > 0):
        raise ValueError(f"weights must be {n} positive numbers, one per candidate")
    return matrix @ w / w.sum()


def pick(expected: np.ndarray) -> int:
    """The earliest candidate whose expected utility is the highest (within TIE)."""
    return int(np.flatnonzero(expected >= expected.max() - TIE)[0])


def select_tokens(tokens: Sequence[Sequence[str]], utility: str = "rougeL",
                  weights: Optional[Sequence[float]] = None) -> Selection:  # fmt: skip
    """MBR over candidates already tokenized with the ROUGE tokenizer."""
    if not tokens:
        raise ValueError("no candidates to select from")
    expected = expected_utility(utility_matrix(encode(tokens), utility), weights)
    return Selection(pick(expected), expected.tolist())


def select(candidates: Sequence[str], utility: str = "rougeL", tokenizer: str = "default",
           weights: Optional[Sequence[float]] = None) -> Selection:  # fmt: skip
    """MBR over candidate texts, tokenized as :mod:`sumlab.text.rouge` does for ``tokenizer`` (kiwi: morphemes)."""
    return select_tokens([tokenize(c, tokenizer) for c in candidates], utility, weights)
