"""Per-example ROUGE of a run, scored once with the run's tokenizer and cached beside its predictions.

Training runs carry the scores of their test step in ``test_predictions.jsonl``: those are used as they are when
the tokenizer and multi_reference rule asked for are the run's own. Otherwise every example is scored with
``sumlab.text.rouge.score_references`` (a progress bar on request) and the result is written (atomically) to
``scores-<tokenizer>-<multi_reference>.jsonl`` beside the predictions: a first line with the cache key (the
predictions file's size, modification time and a hash of its head and tail; the scorer's settings) and the interval
of the mean rouge_combined, then one line per example in file order. A cache whose key does not match is rescored.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from sumlab.analysis.runs import Row, Run, read_rows, require_predictions
from sumlab.core.errors import SumlabError
from sumlab.core.io import atomic_file, file_identity
from sumlab.core.stats import Interval, bootstrap_mean
from sumlab.text.rouge import MULTI_REFERENCE, ROUGE_KEYS, TOKENIZERS, score_references

KEYS = (*ROUGE_KEYS, "rouge_combined")  # rouge_combined = mean of rouge1, rouge2 and rougeL, as in metrics.json
SCORER_VERSION = 1  # part of the cache key: bump when sumlab.text.rouge's scores change


class NoReferences(SumlabError):
    """The predictions have no reference to score against (a split without summaries)."""


@dataclass(frozen=True)
class ExampleScores:
    """Per-example F1 in [0, 1] for each of KEYS, aligned with ``ids`` (the predictions file's order)."""

    ids: tuple[str, ...]
    values: dict[str, np.ndarray]  # key -> float64 array, one value per id
    tokenizer: str
    multi_reference: str

    def means(self) -> dict[str, float]:
        return {key: float(self.values[key].mean()) for key in KEYS}

    def position(self) -> dict[str, int]:
        """id -> position in ``ids``."""
        return {id_: i for i, id_ in enumerate(self.ids)}

    def as_dict(self) -> dict[str, Any]:
        """Summary only (tokenizer, rule, examples, means): the arrays stay in ``values``."""
        return {"tokenizer": self.tokenizer, "multi_reference": self.multi_reference, "examples": len(self.ids),
                "means": self.means()}  # fmt: skip


def settings(run: Run, tokenizer: Optional[str], multi_reference: Optional[str]) -> tuple[str, str]:
    """(tokenizer, multi_reference): the ones asked for, else the run's own; SumlabError for an unknown one."""
    tokenizer, multi_reference = tokenizer or run.tokenizer, multi_reference or run.multi_reference
    if tokenizer not in TOKENIZERS:
        raise SumlabError(f"unknown ROUGE tokenizer {tokenizer!r} for {run.path}: use one of {', '.join(TOKENIZERS)}")
    if multi_reference not in MULTI_REFERENCE:
        raise SumlabError(f"unknown multi_reference {multi_reference!r}: use one of {', '.join(MULTI_REFERENCE)}")
    return tokenizer, multi_reference


def example_scores(run: Run, tokenizer: Optional[str] = None, multi_reference: Optional[str] = None,
                   progress: bool = False) -> ExampleScores:  # fmt: skip
    """The run's per-example ROUGE (``tokenizer``/``multi_reference``: default the run's own), from the test step,
    the cache, or scored now (and cached when the directory is writable). SumlabError if a row has no reference."""
    tokenizer, multi_reference = settings(run, tokenizer, multi_reference)
    own = (tokenizer, multi_reference) == (run.tokenizer, run.multi_reference)
    if own and run.kind == "train":
        stored = _from_rows(read_rows(run), tokenizer, multi_reference)
        if stored is not None:
            return stored
    key = _cache_key(require_predictions(run), tokenizer, multi_reference)
    cached = _read_cache(_cache_path(run, tokenizer, multi_reference), key)
    if cached is not None:
        return _scores(cached[0], cached[1], tokenizer, multi_reference)
    ids, rows = [], []
    for row in _progress(read_rows(run), run, progress):
        if not row.references:
            raise NoReferences(f"{run.predictions}: example {row.id!r} has no reference: ROUGE needs one "
                              "(predict on a split with summaries)")  # fmt: skip
        ids.append(row.id)
        rows.append(score_references(row.prediction, list(row.references), tokenizer, multi_reference))
    if not ids:
        raise SumlabError(f"{run.predictions} holds no predictions: predict again")
    scores = _scores(ids, {k: [r[k] for r in rows] for k in ROUGE_KEYS}, tokenizer, multi_reference)
    _write_cache(_cache_path(run, tokenizer, multi_reference), key, scores)
    return scores


def _scores(ids: list[str], values: dict[str, Any], tokenizer: str, multi_reference: str) -> ExampleScores:
    arrays = {k: np.asarray(values[k], dtype=np.float64) for k in ROUGE_KEYS}
    arrays["rouge_combined"] = (arrays["rouge1"] + arrays["rouge2"] + arrays["rougeL"]) / 3
    return ExampleScores(tuple(ids), arrays, tokenizer, multi_reference)


def _from_rows(rows: Iterable[Row], tokenizer: str, multi_reference: str) -> Optional[ExampleScores]:
    """The scores the training test step stored in its rows (None if a row has none)."""
    ids, values = [], {k: [] for k in ROUGE_KEYS}
    for row in rows:
        if row.scores is None:
            return None
        ids.append(row.id)
        for k in ROUGE_KEYS:
            values[k].append(row.scores[k])
    return _scores(ids, values, tokenizer, multi_reference) if ids else None


def tracked(items: Iterable[Any], description: str, total: Optional[int], show: bool) -> Iterable[Any]:
    """``items``, with a transient progress bar on stderr when ``show`` (long scoring and bootstraps)."""
    if not show:
        return items
    from rich.console import Console
    from rich.progress import track

    return track(items, total=total, description=description, console=Console(stderr=True), transient=True)


def _progress(rows: Iterator[Row], run: Run, show: bool) -> Iterable[Row]:
    if not show:
        return rows
    with open(require_predictions(run), "rb") as f:
        total = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return tracked(rows, f"ROUGE {run.name}", total, show)


# --- the cache ---------------------------------------------------------------------------------------------------
def _cache_path(run: Run, tokenizer: str, multi_reference: str) -> Path:
    return require_predictions(run).parent / f"scores-{tokenizer}-{multi_reference}.jsonl"


def _cache_key(predictions: Path, tokenizer: str, multi_reference: str) -> dict[str, Any]:
    return {"predictions": predictions.name, "file": file_identity(predictions),
            "mtime_ns": predictions.stat().st_mtime_ns, "tokenizer": tokenizer, "multi_reference": multi_reference,
            "version": SCORER_VERSION}  # fmt: skip


def _read_header(path: Path, key: dict[str, Any]) -> Optional[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            header = json.loads(f.readline())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return header if isinstance(header, dict) and header.get("key") == key else None


def _read_cache(path: Path, key: dict[str, Any]) -> Optional[tuple[list[str], dict[str, list[float]]]]:
    """(ids, values per ROUGE key) of a cache made for ``key``; None if absent, stale or damaged."""
    if _read_header(path, key) is None:
        return None
    ids, values = [], {k: [] for k in ROUGE_KEYS}
    try:
        with open(path, encoding="utf-8") as f:
            next(f)
            for line in f:
                record = json.loads(line)
                ids.append(record["id"])
                for k in ROUGE_KEYS:
                    values[k].append(float(record[k]))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None
    return ids, values


def _write_cache(path: Path, key: dict[str, Any], scores: ExampleScores) -> None:
    """The cache, with the interval of the mean rouge_combined (for the runs table); skipped where not writable."""
    interval = bootstrap_mean(scores.values["rouge_combined"])
    try:
        with atomic_file(path) as f:
            f.write(json.dumps({"key": key, "interval": interval.as_dict()}) + "\n")
            for i, id_ in enumerate(scores.ids):
                f.write(json.dumps({"id": id_, **{k: float(scores.values[k][i]) for k in ROUGE_KEYS}}) + "\n")
    except OSError as ex:
        print(f"note: per-example scores not cached in {path.parent} ({ex.strerror})", file=sys.stderr)


def cached_interval(run: Run) -> Optional[Interval]:
    """The rouge_combined interval of a valid cache with the run's own settings, without scoring (None if none)."""
    if run.predictions is None:
        return None
    key = _cache_key(run.predictions, run.tokenizer, run.multi_reference)
    header = _read_header(_cache_path(run, run.tokenizer, run.multi_reference), key)
    return Interval(**header["interval"]) if header is not None else None
