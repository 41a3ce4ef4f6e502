"""Read and check one split's examples: local files (JSONL, JSON, CSV, Parquet) or the synthetic set."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Optional

import pandas as pd
from omegaconf import DictConfig

from sumlab.data import synthetic
from sumlab.errors import SumlabError

SPLITS = ("train", "validation", "test")
FILE_KEY = {"train": "train_file", "validation": "validation_file", "test": "test_file"}
LIMIT_KEY = {"train": "max_train_samples", "validation": "max_eval_samples", "test": "max_predict_samples"}
READERS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}

Example = dict  # {"id": str, "text": str, "summary": str | None}


def split_path(cfg: DictConfig, split: str) -> Optional[Path]:
    """The configured file of a split, resolved against data.dir; None when the split has no file."""
    name = cfg[FILE_KEY[split]]
    if not name:
        return None
    path = Path(name).expanduser()
    if not path.is_absolute() and cfg.dir:
        path = Path(cfg.dir).expanduser() / path
    return path


def load_split(
    cfg: DictConfig, split: str, require_summary: bool = True, seed: int = 0, limit_key: Optional[str] = None
) -> list[Example]:
    """Examples of one split as {"id", "text", "summary"}; raises SumlabError naming the problem and the fix.

    The first N rows are kept where ``limit_key`` (default: the split's own max_*_samples key) is set.
    """
    if cfg.source == "synthetic":
        rows = synthetic.generate_split(split, int(cfg.synthetic_sizes[split]), seed)
        examples = [{"id": r["id"], "text": r["dialogue"], "summary": r["summary"]} for r in rows]
    else:
        path = split_path(cfg, split)
        if path is None:
            raise SumlabError(f"data.{FILE_KEY[split]} is not set: pass data.{FILE_KEY[split]}=path/to/{split}.jsonl")
        examples = _from_frame(_read(path), cfg, path, require_summary)
    limit = cfg[limit_key or LIMIT_KEY[split]]
    return examples[:limit] if limit is not None else examples


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise SumlabError(f"data file not found: {path} (check data.dir and the data.*_file keys)")
    if path.stat().st_size == 0:
        raise SumlabError(f"data file is empty: {path}")
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise SumlabError(f"unsupported data file type {path.suffix!r}: {path} (use .jsonl, .json, .csv or .parquet)")
    if kind == "parquet":
        try:
            return pd.read_parquet(path)
        except Exception as ex:  # pyarrow raises several types for a corrupt file
            raise SumlabError(f"cannot read Parquet file {path}: {ex}") from None
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: Excel writes a BOM into CSV files
    except UnicodeDecodeError as ex:
        raise SumlabError(
            f"data file is not UTF-8: {path} (byte {ex.start}); re-save it as UTF-8, e.g. iconv -f cp949 -t utf-8"
        ) from None
    if not text.strip():
        raise SumlabError(f"data file is empty: {path}")
    if kind == "csv":
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    if kind == "json" and text.lstrip().startswith("["):
        try:
            return pd.DataFrame(json.loads(text))
        except json.JSONDecodeError as ex:
            raise SumlabError(f"invalid JSON in {path}: {ex}") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as ex:
                raise SumlabError(f"invalid JSON on line {number} of {path}: {ex.msg}") from None
    return pd.DataFrame(rows)


def _from_frame(frame: pd.DataFrame, cfg: DictConfig, path: Path, require_summary: bool) -> list[Example]:
    if frame.empty:
        raise SumlabError(f"data file has no rows: {path}")
    columns = list(frame.columns)
    if cfg.text_column not in columns:
        raise SumlabError(
            f"column {cfg.text_column!r} (data.text_column) not in {path}; it has {columns}: set data.text_column"
        )
    has_summary = cfg.summary_column in columns
    if require_summary and not has_summary:
        raise SumlabError(
            f"column {cfg.summary_column!r} (data.summary_column) not in {path}; it has {columns}: set data.summary_column"
        )
    ids = frame[cfg.id_column] if cfg.id_column and cfg.id_column in columns else pd.Series(range(len(frame)))
    texts = frame[cfg.text_column].fillna("").astype(str)
    summaries = frame[cfg.summary_column].fillna("").astype(str) if has_summary else [None] * len(frame)
    examples = [
        {"id": str(i), "text": t, "summary": s} for i, t, s in zip(ids, texts, summaries, strict=True)
    ]
    if len({e["id"] for e in examples}) != len(examples):
        raise SumlabError(f"ids in column {cfg.id_column!r} of {path} are not unique: fix them or set data.id_column=null")
    return examples
