"""Is run B really better than run A? Paired bootstrap per ROUGE key over the same examples.

Every run after the first is compared with the first (the baseline): with N runs, N - 1 comparisons, each the
difference ``mean(run) - mean(baseline)`` per key with its 95% interval and two-sided p-value
(``sumlab.core.stats.paired_bootstrap``, fixed seed), per-example wins/ties/losses, and the examples whose
rouge_combined changed most (with their texts). The runs must hold the same ids with the same references and be
scored with one tokenizer and multi_reference rule (each run's own, or the ``tokenizer`` given).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

from sumlab.analysis.runs import Row, Run, read_rows
from sumlab.analysis.scores import KEYS, ExampleScores, example_scores, settings, tracked
from sumlab.core.errors import SumlabError
from sumlab.core.stats import RESAMPLES, SEED, paired_bootstrap

TIE = 1e-12  # per-example scores closer than this are a tie (float noise)


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
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant}


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
        return {**asdict(self), "references": list(self.references)}


@dataclass(frozen=True)
class PairResult:
    """One run against the baseline."""

    baseline: str  # run paths as given
    run: str
    keys: tuple[KeyResult, ...]
    changed: tuple[Changed, ...]

    def key(self, name: str) -> KeyResult:
        return next(k for k in self.keys if k.key == name)

    def as_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "run": self.run, "keys": {k.key: k.as_dict() for k in self.keys},
                "changed": [c.as_dict() for c in self.changed]}  # fmt: skip


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
        return {**{k: v for k, v in asdict(self).items() if k not in ("runs", "pairs")}, "runs": list(self.runs),
                "pairs": [p.as_dict() for p in self.pairs]}  # fmt: skip


def compare_runs(runs: Sequence[Run], tokenizer: Optional[str] = None, multi_reference: Optional[str] = None,
                 top: int = 10, confidence: float = 0.95, resamples: int = RESAMPLES, seed: int = SEED,
                 progress: bool = False) -> Comparison:  # fmt: skip
    """Compare ``runs[1:]`` with ``runs[0]``. SumlabError (one line) when they cannot be compared: fewer than two
    runs, different tokenizers or rules (without ``tokenizer``), different id sets (naming the first id that is
    missing), or different references for one id. The bootstrap takes about 30 s per key and run at 300k examples
    with 10k resamples (time grows with examples x resamples): an interactive page may pass fewer ``resamples``."""
    if len(runs) < 2:
        raise SumlabError("compare needs at least two runs: A B [C ...]")
    tokenizer, multi_reference = common_settings(runs, tokenizer, multi_reference)
    baseline = _references(runs[0])
    for run in runs[1:]:
        check_same_examples(runs[0], baseline, run, _references(run))
    scores = [example_scores(run, tokenizer, multi_reference, progress) for run in runs]
    pairs = tuple(
        _pair(runs[0], scores[0], run, s, top, dict(confidence=confidence, resamples=resamples, seed=seed), progress)
        for run, s in zip(runs[1:], scores[1:], strict=True)
    )
    described = tuple({"path": str(run.path), "name": run.name, "kind": run.kind, "model": run.model,
                       "data": run.data, "examples": len(s.ids), "means": s.means()}
                      for run, s in zip(runs, scores, strict=True))  # fmt: skip
    return Comparison(described, tokenizer, multi_reference, len(scores[0].ids), confidence, resamples, seed, pairs)


def common_settings(runs: Sequence[Run], tokenizer: Optional[str], multi_reference: Optional[str]) -> tuple[str, str]:
    """The one tokenizer and multi_reference rule all runs are scored with: the given ones, else the runs' own,
    which must then agree."""
    for attr, given in (("tokenizer", tokenizer), ("multi_reference", multi_reference)):
        own = {getattr(run, attr) for run in runs}
        if given is None and len(own) > 1:
            listed = ", ".join(f"{run.path}: {getattr(run, attr)}" for run in runs)
            raise SumlabError(f"the runs were scored with different ROUGE {attr} settings ({listed}): "
                              f"pass --{attr.replace('_', '-')} to score them all the same way")  # fmt: skip
    return settings(runs[0], tokenizer, multi_reference)


def _references(run: Run) -> dict[str, int]:
    """id -> a hash of its references, in file order (texts are not kept: 300k examples); SumlabError on a
    repeated id."""
    found: dict[str, int] = {}
    for row in read_rows(run):
        if row.id in found:
            raise SumlabError(f"{run.predictions} holds id {row.id!r} twice: each example must appear once")
        found[row.id] = hash(row.references)
    if not found:
        raise SumlabError(f"{run.predictions} holds no predictions: predict again")
    return found


def check_same_examples(base: Run, base_refs: dict[str, int], run: Run, refs: dict[str, int]) -> None:
    """The same ids with the same references, or SumlabError naming the first difference."""
    missing = next((i for i in base_refs if i not in refs), None)
    extra = next((i for i in refs if i not in base_refs), None)
    if missing is not None or extra is not None:
        where = f"id {missing!r} is in {base.path} but not in {run.path}" if missing is not None else (
            f"id {extra!r} is in {run.path} but not in {base.path}")  # fmt: skip
        raise SumlabError(f"the runs hold different examples ({len(base_refs)} and {len(refs)} ids; {where}): "
                          "compare predictions of the same split")  # fmt: skip
    differs = next((i for i in base_refs if base_refs[i] != refs[i]), None)
    if differs is not None:
        raise SumlabError(f"example {differs!r} has different references in {base.path} and {run.path}: "
                          "compare predictions of the same data")  # fmt: skip


def _pair(base: Run, base_scores: ExampleScores, run: Run, scores: ExampleScores, top: int,
          bootstrap: dict[str, Any], progress: bool) -> PairResult:  # fmt: skip
    position = scores.position()
    order = np.array([position[i] for i in base_scores.ids], dtype=np.int64)  # the run's scores in baseline order
    keys = []
    for key in tracked(KEYS, f"bootstrap {run.name}", len(KEYS), progress):  # ~30 s a key at 300k examples
        a, b = base_scores.values[key], scores.values[key][order]
        diff = paired_bootstrap(a, b, **bootstrap)
        keys.append(KeyResult(key, float(a.mean()), float(b.mean()), diff.difference, diff.low, diff.high,
                              diff.p_value, int((b > a + TIE).sum()), int((abs(b - a) <= TIE).sum()),
                              int((b < a - TIE).sum())))  # fmt: skip
    return PairResult(str(base.path), str(run.path), tuple(keys), _changed(base, base_scores, run, scores, order, top))


def _changed(base: Run, base_scores: ExampleScores, run: Run, scores: ExampleScores, order: np.ndarray,
             top: int) -> tuple[Changed, ...]:  # fmt: skip
    """The ``top`` examples with the largest |change| of rouge_combined (ties: file order; unchanged ones never),
    texts included."""
    a = base_scores.values["rouge_combined"]
    b = scores.values["rouge_combined"][order]
    picked = [i for i in np.argsort(-abs(b - a), kind="stable")[:top] if abs(b[i] - a[i]) > TIE]
    ids = [base_scores.ids[i] for i in picked]
    base_rows, rows = _rows(read_rows(base), set(ids)), _rows(read_rows(run), set(ids))
    return tuple(Changed(id_, float(a[i]), float(b[i]), float(b[i] - a[i]), base_rows[id_].prediction,
                         rows[id_].prediction, base_rows[id_].references)
                 for id_, i in zip(ids, picked, strict=True))  # fmt: skip


def _rows(rows: Iterable[Row], wanted: set[str]) -> dict[str, Row]:
    return {row.id: row for row in rows if row.id in wanted}
