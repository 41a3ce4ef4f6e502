"""A run directory as the analysis sees it: which kind, where its predictions are, how it scored ROUGE.

Two kinds:

- ``train``: a training run (``run.json``, ``metrics.json``); its predictions are ``test_predictions.jsonl``, written
  by the test step (id, prediction, reference or references, and the per-example ROUGE it was scored with).
- ``predict``: a ``predict.py`` output directory (``metrics.json``, ``predictions.jsonl``: id, prediction and, when
  the split had summaries, reference or references).

The ROUGE tokenizer and multi_reference rule are the run's own (metrics.json / the run's config), so per-example
scores reproduce the run's corpus scores.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

TRAIN_PREDICTIONS = "test_predictions.jsonl"  # written by sumlab.train.examples
PREDICT_PREDICTIONS = "predictions.jsonl"  # written by sumlab.predict.writer
METRICS = "metrics.json"


@dataclass(frozen=True)
class Run:
    """One run directory with its predictions file (``None``: a training run without a test step)."""

    path: Path
    kind: str  # "train" | "predict"
    predictions: Optional[Path]
    model: Optional[str]
    data: Optional[str]
    tokenizer: str  # the ROUGE tokenizer the run scored with
    multi_reference: str  # mean | max over an example's references
    metrics: dict[str, Any]  # metrics.json as written

    @property
    def name(self) -> str:
        """A short readable name: the directory's last two parts (``train/2025-01-02_10-00-00_ab12``)."""
        raise NotImplementedError


def load_run(path: str | Path) -> Run:
    """The run in ``path`` (a run directory, a prediction directory, or its predictions file).

    SumlabError (one line) if it does not exist, has no metrics.json, or (``require_predictions``) no predictions.
    """
    raise NotImplementedError


def require_predictions(run: Run) -> Path:
    """The run's predictions file; SumlabError naming what to do if it has none."""
    raise NotImplementedError


@dataclass(frozen=True)
class Row:
    """One example of a predictions file. ``references``: always a list (one item for a single reference)."""

    id: str
    prediction: str
    references: tuple[str, ...]
    text: Optional[str] = None  # the input, when the file carries it
    scores: Optional[dict[str, float]] = None  # ROUGE as the training test step scored it (train runs)

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


def read_rows(run: Run) -> Iterator[Row]:
    """Every row of the run's predictions, in file order, streamed (SumlabError at the first malformed line)."""
    raise NotImplementedError
