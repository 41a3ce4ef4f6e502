"""A run directory as the analysis sees it: which kind, where its predictions are, how it scored ROUGE.

Two kinds:

- ``train``: a training run (``run.json``, ``metrics.json``); its predictions are ``test_predictions.jsonl``, written
  by the test step (id, prediction, reference or references, and the per-example ROUGE it was scored with).
- ``predict``: a ``predict.py`` output directory (``metrics.json``, ``predictions.jsonl``: id, prediction and, when
  the split had summaries, reference or references).

The ROUGE tokenizer and multi_reference rule are the run's own (metrics.json, else the run's saved config), so
per-example scores reproduce the run's corpus scores.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from sumlab.core.errors import SumlabError
from sumlab.text.rouge import ROUGE_KEYS

TRAIN_PREDICTIONS = "test_predictions.jsonl"  # written by sumlab.train.predictions
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
        return "/".join(self.path.parts[-2:])


def read_json(path: Path) -> Optional[dict[str, Any]]:
    """A JSON object file; None if it is missing, damaged or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _saved_metrics_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``metrics`` config group from Hydra's saved config ({} when there is none)."""
    try:
        config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    group = config.get("metrics") if isinstance(config, dict) else None
    return group if isinstance(group, dict) else {}


def load_run(path: str | Path) -> Run:
    """The run in ``path`` (a run directory, a prediction directory, or its predictions file).

    SumlabError (one line) if it does not exist or has no metrics.json; a run without predictions loads (its
    ``predictions`` is None: ``require_predictions`` refuses it).
    """
    run_dir = Path(path)
    if run_dir.name in (TRAIN_PREDICTIONS, PREDICT_PREDICTIONS):
        run_dir = run_dir.parent
    if not run_dir.is_dir():
        raise SumlabError(f"{path}: no such directory; pass a training run or a predict.py output directory")
    metrics = read_json(run_dir / METRICS)
    if metrics is None:
        raise SumlabError(
            f"{run_dir} has no readable {METRICS}: pass a finished training run or predict.py output directory"
        )
    kind = "train" if (run_dir / "run.json").is_file() else "predict"
    predictions = run_dir / (TRAIN_PREDICTIONS if kind == "train" else PREDICT_PREDICTIONS)
    saved = _saved_metrics_config(run_dir)
    return Run(
        path=run_dir, kind=kind, predictions=predictions if predictions.is_file() else None,
        model=metrics.get("model"), data=metrics.get("data"),
        tokenizer=str(metrics.get("rouge_tokenizer") or saved.get("tokenizer") or "default"),
        multi_reference=str(metrics.get("multi_reference") or saved.get("multi_reference") or "mean"),
        metrics=metrics,
    )  # fmt: skip


def require_predictions(run: Run) -> Path:
    """The run's predictions file; SumlabError naming what to do if it has none."""
    if run.predictions is not None:
        return run.predictions
    if run.kind == "train":
        raise SumlabError(
            f"{run.path} has no {TRAIN_PREDICTIONS} (trained without a test split, or before sumlab wrote them): "
            f"predict with it (python predict.py model_dir={run.path}) and compare the prediction directory"
        )
    raise SumlabError(f"{run.path} has no {PREDICT_PREDICTIONS}: the prediction did not finish; run predict.py again")


@dataclass(frozen=True)
class Row:
    """One example of a predictions file. ``references``: always a list (one item for a single reference)."""

    id: str
    prediction: str
    references: tuple[str, ...]
    text: Optional[str] = None  # the input, when the file carries it
    scores: Optional[dict[str, float]] = None  # ROUGE as the training test step scored it (train runs)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "references": list(self.references)}


def parse_row(line: str, where: str) -> Row:
    """One predictions line; SumlabError naming ``where`` (file and line) if it is not a row."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as ex:
        raise SumlabError(f"{where} is not valid JSON ({ex.msg}): the file is damaged; predict again") from None
    if not isinstance(record, dict) or "id" not in record or not isinstance(record.get("prediction"), str):
        raise SumlabError(f'{where} is not a prediction: each line needs "id" and a "prediction" string')
    references = record.get("references", record.get("reference"))
    references = (references,) if isinstance(references, str) else tuple(references or ())
    if not all(isinstance(r, str) for r in references):
        raise SumlabError(f'{where}: "references" must be a list of strings')
    scores = {k: float(record[k]) for k in ROUGE_KEYS if isinstance(record.get(k), (int, float))}
    text = record.get("text")
    return Row(str(record["id"]), record["prediction"], references, text if isinstance(text, str) else None,
               scores if len(scores) == len(ROUGE_KEYS) else None)  # fmt: skip


def read_rows(run: Run) -> Iterator[Row]:
    """Every row of the run's predictions, in file order, streamed (SumlabError at the first malformed line)."""
    path = require_predictions(run)
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    yield parse_row(line, f"{path} line {number}")
    except UnicodeDecodeError as ex:
        raise SumlabError(f"{path} is not UTF-8 (bad byte at offset {ex.start}): the file is damaged") from None
