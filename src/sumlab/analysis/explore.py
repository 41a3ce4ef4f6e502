"""The data behind the Explore page: runs under the roots, one run's examples worst first, lengths, side by side.

A path from the page goes through ``open_run`` (``Roots.resolve``: PathRefused outside the roots). Large runs are
read in pages: a run's index (byte offset of each line, per-example scores, matches of recent queries, length
statistics) is built once per version of its predictions file and kept for the few runs open at a time; a page
reads only its own rows from the file.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from sumlab.analysis.highlight import highlights
from sumlab.analysis.roots import Roots
from sumlab.analysis.runs import METRICS, Row, Run, load_run, parse_row, read_json, require_predictions
from sumlab.analysis.scores import KEYS, ExampleScores, NoReferences, cached_interval, example_scores
from sumlab.core.errors import SumlabError
from sumlab.core.stats import Interval
from sumlab.text.rouge import tokenize

OPEN_RUNS = 4  # run indexes kept in memory (ids, offsets and scores: ~100 bytes per example)
QUERIES = 8  # query results kept per run


@dataclass(frozen=True)
class RunSummary:
    """One row of the runs table."""

    path: str  # relative to the working directory when the root was given so; pass it back to open_run
    name: str
    kind: str  # train | predict
    model: Optional[str]
    data: Optional[str]
    score: Optional[float]  # train: the monitored validation value; predict: rouge_combined of metrics.json
    score_key: Optional[str]  # e.g. val/rouge_combined, rouge_combined
    mode: str  # max | min: which way the score is better (a training run's metrics.mode)
    interval: Optional[Interval]  # 95% bootstrap interval of the mean per-example rouge_combined ...
    interval_key: Optional[str]  # ... over this split: test/rouge_combined (train), <split>/rouge_combined (predict)
    examples: Optional[int]  # examples with predictions
    status: Optional[str]  # run.json's status (train)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "interval": self.interval.as_dict() if self.interval else None}


def _summary(run: Run, path: str) -> RunSummary:
    m = run.metrics
    if run.kind == "train":
        monitor = str(m.get("monitor") or "val/rouge_combined")
        score = (m.get("validation") or {}).get(monitor.split("/", 1)[-1])
        stored = (m.get("intervals") or {}).get("test/rouge_combined")
        interval = Interval(**{k: stored[k] for k in ("mean", "low", "high", "confidence")}) if stored else None
        examples = stored["examples"] if stored else None
        status = (read_json(run.path / "run.json") or {}).get("status")
        mode = "min" if str(m.get("mode")).lower() in ("min", "minimize") else "max"
        return RunSummary(path, run.name, run.kind, run.model, run.data, score, monitor, mode, interval,
                          "test/rouge_combined" if interval else None, examples, status)  # fmt: skip
    interval = cached_interval(run)
    key = f"{m.get('split')}/rouge_combined" if m.get("split") else "rouge_combined"
    score = (m.get("rouge") or {}).get("rouge_combined")
    return RunSummary(path, run.name, run.kind, run.model, run.data, score, "rouge_combined", "max", interval,
                      key if interval else None, m.get("examples"), None)  # fmt: skip


def list_runs(roots: Roots) -> list[RunSummary]:
    """Every run directory under the roots (training runs and prediction directories): training runs best first
    (by each run's metrics.mode), then prediction directories best first. Reads metrics.json, run.json and a score
    cache's first line; never scores."""
    found, seen = [], set()
    for root in roots.paths:
        for metrics in sorted(root.rglob(METRICS)):
            real = metrics.parent.resolve()
            if real in seen or any(part.startswith(".") for part in metrics.relative_to(root).parts):
                continue
            seen.add(real)
            try:  # a run symlinked out of the roots is not listed
                found.append(_summary(open_run(roots, metrics.parent), str(metrics.parent)))
            except (SumlabError, OSError, ValueError, TypeError, KeyError):  # a damaged or foreign directory
                continue
    return sorted(found, key=_rank)


def _rank(summary: RunSummary) -> tuple[bool, float, str]:
    score = summary.score if isinstance(summary.score, (int, float)) else None
    value = np.inf if score is None else score if summary.mode == "min" else -score
    return (summary.kind != "train", value, summary.path)


def open_run(roots: Roots, path: str | Path) -> Run:
    """The run at ``path`` (inside the roots, else PathRefused; not a run: SumlabError). Its metrics.json and
    predictions file must lie inside the roots too (a symlink leading out is refused)."""
    run = load_run(roots.resolve(path))
    for file in (run.path / METRICS, run.predictions):
        if file is not None:
            roots.resolve(file)
    return run


# --- one run's examples --------------------------------------------------------------------------------------------
@dataclass
class _Index:
    """What paging, search and sorting need of one predictions file, without its texts."""

    path: Path
    offsets: np.ndarray  # byte offset of each row's line, in file order
    scores: Optional[ExampleScores]  # None: the rows have no references
    positions: dict[str, int]
    queries: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict)
    lengths: dict[str, dict[str, Any]] = field(default_factory=dict)

    def row(self, position: int) -> Row:
        with open(self.path, "rb") as f:
            f.seek(int(self.offsets[position]))
            return parse_row(f.readline().decode("utf-8"), f"{self.path} row {position + 1}")

    def score(self, position: int) -> dict[str, float]:
        return {k: float(self.scores.values[k][position]) for k in KEYS} if self.scores else {}


_INDEXES: OrderedDict[tuple[str, int, int], _Index] = OrderedDict()
_LOCK = threading.Lock()  # the page serves requests from several threads


def _line_offsets(path: Path) -> np.ndarray:
    offsets, at = [], 0
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                offsets.append(at)
            at += len(line)
    return np.asarray(offsets, dtype=np.int64)


def _index(run: Run) -> _Index:
    path = require_predictions(run)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _LOCK:
        if key in _INDEXES:
            _INDEXES.move_to_end(key)
            return _INDEXES[key]
    try:
        scores: Optional[ExampleScores] = example_scores(run)
        ids = scores.ids
    except NoReferences:
        scores, ids = None, None
    offsets = _line_offsets(path)
    if ids is None:
        with open(path, "rb") as f:
            ids = [parse_row(line.decode("utf-8"), str(path)).id for line in f if line.strip()]
    index = _Index(path, offsets, scores, {id_: i for i, id_ in enumerate(ids)})
    with _LOCK:
        _INDEXES[key] = index
        while len(_INDEXES) > OPEN_RUNS:
            _INDEXES.popitem(last=False)
    return index


@dataclass(frozen=True)
class ExampleRow:
    """One example of a page: its rank in the order, texts and per-example ROUGE."""

    rank: int  # 0-based position in the order asked for (worst first by default)
    id: str
    prediction: str
    references: tuple[str, ...]
    text: Optional[str]
    scores: dict[str, float]  # {} when the run has no references

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "references": list(self.references)}


@dataclass(frozen=True)
class ExamplePage:
    total: int  # examples in the run
    matched: int  # examples that match the query (total without one)
    offset: int
    rows: tuple[ExampleRow, ...]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows": [r.as_dict() for r in self.rows]}


ORDERS = ("worst", "best", "file")  # by the key (ties in file order), or the file's order
MAX_PAGE = 500  # rows one page may ask for


def _matches(row: Row, query: str) -> bool:
    return any(query in t.lower() for t in (row.id, row.prediction, *row.references, row.text or ""))


def _query_mask(index: _Index, query: str) -> np.ndarray:
    """Which rows hold ``query`` (lowercase) in their id or texts; a raw-line test first skips most rows."""
    if query in index.queries:
        return index.queries[query]
    raw_test = json.dumps(query, ensure_ascii=False)[1:-1] == query  # no character JSON escapes
    mask = np.zeros(len(index.offsets), dtype=bool)
    with open(index.path, encoding="utf-8") as f:
        lines = (line for line in f if line.strip())
        for i, line in enumerate(lines):
            if (not raw_test or query in line.lower()) and _matches(parse_row(line, str(index.path)), query):
                mask[i] = True
    index.queries[query] = mask
    while len(index.queries) > QUERIES:
        index.queries.popitem(last=False)
    return mask


def _order(index: _Index, order: str, key: str) -> np.ndarray:
    if order not in ORDERS:
        raise SumlabError(f"unknown order {order!r}: use one of {', '.join(ORDERS)}")
    if key not in KEYS:
        raise SumlabError(f"unknown score key {key!r}: use one of {', '.join(KEYS)}")
    if order == "file" or index.scores is None:
        return np.arange(len(index.offsets))
    values = index.scores.values[key]
    return np.argsort(values if order == "worst" else -values, kind="stable")


def examples_page(run: Run, query: str = "", offset: int = 0, limit: int = 20, order: str = "worst",
                  key: str = "rouge_combined") -> ExamplePage:  # fmt: skip
    """Rows ``offset`` .. ``offset + limit`` of the run's examples in ``order`` of ``key``, restricted to those whose
    id, prediction, reference or input contains ``query`` (case-insensitive; empty: all). A run without references
    is in file order, without scores."""
    if offset < 0 or not 0 < limit <= MAX_PAGE:
        raise SumlabError(f"a page needs offset >= 0 and 1 <= limit <= {MAX_PAGE} (got {offset}, {limit})")
    index = _index(run)
    positions = _order(index, order, key)
    query = query.strip().lower()
    if query:
        positions = positions[_query_mask(index, query)[positions]]
    rows = []
    for rank, position in enumerate(positions[offset : offset + limit], offset):
        row = index.row(int(position))
        rows.append(ExampleRow(rank, row.id, row.prediction, row.references, row.text, index.score(int(position))))
    return ExamplePage(len(index.offsets), len(positions), offset, tuple(rows))


@dataclass(frozen=True)
class ExampleView:
    """One example in full: texts, scores, and the words of its prediction matching each reference."""

    row: ExampleRow
    highlights: tuple[dict[str, Any], ...]  # per reference: {"prediction": Highlighted, "reference": ...} as dicts

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row.as_dict(), "highlights": list(self.highlights)}


def _position(run: Run, index: _Index, example_id: str) -> int:
    if example_id not in index.positions:
        raise SumlabError(f"{run.name} has no example with id {example_id!r}: pick an id from its list")
    return index.positions[example_id]


def _view(run: Run, index: _Index, position: int, rank: int) -> ExampleView:
    row = index.row(position)
    marks = tuple({side: h.as_dict() for side, h in highlights(row.prediction, ref, run.tokenizer).items()}
                  for ref in row.references)  # fmt: skip
    return ExampleView(ExampleRow(rank, row.id, row.prediction, row.references, row.text, index.score(position)), marks)


def example_view(run: Run, example_id: str) -> ExampleView:
    """The example ``example_id`` of the run (SumlabError if the run has no such id); ``rank``: its file position."""
    index = _index(run)
    position = _position(run, index, example_id)
    return _view(run, index, position, position)


def side_by_side(run_a: Run, run_b: Run, example_id: str) -> dict[str, Any]:
    """One id in both runs: {"id", "references", "text", "a": {"run", "prediction", "scores", "highlights"}, "b": ...}.
    The comparison of the two runs as a whole is ``compare.compare_runs([run_a, run_b])``."""
    sides = {}
    for name, run in (("a", run_a), ("b", run_b)):
        index = _index(run)
        position = _position(run, index, example_id)
        view = _view(run, index, position, position)
        sides[name] = {"run": str(run.path), "prediction": view.row.prediction, "scores": view.row.scores,
                       "references": list(view.row.references), "text": view.row.text,
                       "highlights": list(view.highlights)}  # fmt: skip
    return {"id": example_id, "references": sides["a"]["references"], "text": sides["a"]["text"], **sides}


# --- lengths -------------------------------------------------------------------------------------------------------
TOKENS = ("whitespace", "rouge")  # how lengths are counted: split on whitespace, or the run's ROUGE tokenizer
PERCENTILES = (5, 25, 50, 75, 95)


def _describe(values: list[float]) -> Optional[dict[str, float]]:
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    cut = dict(zip((f"p{p}" for p in PERCENTILES), np.percentile(array, PERCENTILES).tolist(), strict=True))
    return {"mean": float(array.mean()), "min": float(array.min()), **cut, "max": float(array.max())}


def length_stats(run: Run, tokens: str = "whitespace") -> dict[str, Any]:
    """Lengths in tokens of the predictions, the references (mean over an example's references) and, when the file
    carries them, the inputs; the ratios prediction/reference and compression input/prediction, input/reference:
    per field mean, min, p5, p25, p50, p75, p95, max (None where no example has the field), and ``examples``."""
    if tokens not in TOKENS:
        raise SumlabError(f"unknown token count {tokens!r}: use one of {', '.join(TOKENS)}")
    index = _index(run)
    if tokens in index.lengths:
        return index.lengths[tokens]
    count = (lambda t: len(t.split())) if tokens == "whitespace" else (lambda t: len(tokenize(t, run.tokenizer)))
    fields: dict[str, list[float]] = {k: [] for k in ("prediction", "reference", "input", "prediction/reference",
                                                      "input/prediction", "input/reference")}  # fmt: skip
    with open(index.path, encoding="utf-8") as f:
        for line in (line for line in f if line.strip()):
            row = parse_row(line, str(index.path))
            lengths = {"prediction": count(row.prediction)}
            if row.references:
                lengths["reference"] = sum(map(count, row.references)) / len(row.references)
            if row.text is not None:
                lengths["input"] = count(row.text)
            for name, value in lengths.items():
                fields[name].append(value)
            for name in ("prediction/reference", "input/prediction", "input/reference"):
                top, bottom = name.split("/")
                if lengths.get(top) is not None and lengths.get(bottom):
                    fields[name].append(lengths[top] / lengths[bottom])
    stats = {"tokens": tokens, "examples": len(index.offsets), **{k: _describe(v) for k, v in fields.items()}}
    index.lengths[tokens] = stats
    return stats
