"""The data behind the Explore page: runs under the roots, one run's examples worst first, lengths, side by side.

Every function that takes a path resolves it through ``Roots`` first (PathRefused outside them). Large runs are
read in pages: a run's index (byte offset of each line, ids, scores) is built once per file version and kept for
the few runs open at a time; a page reads only its rows from the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from sumlab.analysis.roots import Roots
from sumlab.analysis.runs import Run
from sumlab.core.stats import Interval


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
    interval: Optional[Interval]  # 95% bootstrap interval of the mean per-example rouge_combined ...
    interval_key: Optional[str]  # ... over this split: test/rouge_combined (train), rouge_combined (predict)
    examples: Optional[int]  # examples with predictions
    status: Optional[str]  # run.json's status (train)

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


def list_runs(roots: Roots) -> list[RunSummary]:
    """Every run directory under the roots (training runs and prediction directories), best score first.

    Fast: reads metrics.json, run.json and a score cache's first line; never scores."""
    raise NotImplementedError


def open_run(roots: Roots, path: str) -> Run:
    """The run at ``path`` (inside the roots, else PathRefused; not a run: SumlabError)."""
    raise NotImplementedError


@dataclass(frozen=True)
class ExampleRow:
    """One example of a page: its rank in the order, texts and per-example ROUGE."""

    rank: int  # 0-based position in the order asked for (worst first by default)
    id: str
    prediction: str
    references: tuple[str, ...]
    text: Optional[str]
    scores: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class ExamplePage:
    total: int  # examples in the run
    matched: int  # examples that match the query (total without one)
    offset: int
    rows: tuple[ExampleRow, ...]

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


ORDERS = ("worst", "best", "file")  # by rouge_combined (ties by id), or the file's order


def examples_page(run: Run, query: str = "", offset: int = 0, limit: int = 20, order: str = "worst",
                  key: str = "rouge_combined") -> ExamplePage:  # fmt: skip
    """Rows ``offset`` .. ``offset + limit`` of the run's examples in ``order`` of ``key``, restricted to those whose
    id, prediction, reference or input contains ``query`` (case-insensitive; empty: all)."""
    raise NotImplementedError


@dataclass(frozen=True)
class ExampleView:
    """One example in full: texts, scores, and the words of its prediction matching each reference."""

    row: ExampleRow
    highlights: tuple[dict[str, Any], ...]  # per reference: highlight.highlights(...) as dicts

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


def example_view(run: Run, example_id: str) -> ExampleView:
    """The example ``example_id`` of the run (SumlabError if the run has no such id)."""
    raise NotImplementedError


TOKENS = ("whitespace", "rouge")  # how lengths are counted: split on whitespace, or the run's ROUGE tokenizer


def length_stats(run: Run, tokens: str = "whitespace") -> dict[str, Any]:
    """Lengths in tokens of the predictions, the references and (when the file carries it) the inputs, and the
    ratios prediction/reference and input/prediction (compression): per field mean, min, p5, p25, p50, p75, p95,
    max, and ``examples``."""
    raise NotImplementedError


def side_by_side(run_a: Run, run_b: Run, example_id: str) -> dict[str, Any]:
    """One id in both runs: {"id", "references", "text", "a": {"run", "prediction", "scores", "highlights"}, "b": ...}.
    The comparison of the two runs as a whole is ``compare.compare_runs([run_a, run_b])``."""
    raise NotImplementedError
