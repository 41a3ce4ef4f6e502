"""Data sources: every supported file type reads the same examples; limits and ids behave as documented."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from sumlab.data.sources import load_split
from sumlab.errors import SumlabError
from sumlab.models import find_tags

ROWS = [{"id": f"d{i}", "dialogue": f"#Person1#: 안녕하세요 {i}\n#Person2#: hi #PhoneNumber#", "summary": f"s{i}"} for i in range(5)]


def _cfg(path: Path, **extra) -> OmegaConf:
    base = {"source": "files", "dir": str(path.parent), "train_file": path.name, "validation_file": None,
            "test_file": None, "text_column": "dialogue", "summary_column": "summary", "id_column": "id",
            "max_train_samples": None, "max_eval_samples": None, "max_predict_samples": None}  # fmt: skip
    return OmegaConf.create({**base, **extra})


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_every_file_type_reads_the_same_examples(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"train{suffix}"
    frame = pd.DataFrame(ROWS)
    if suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n", encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(ROWS, ensure_ascii=False), encoding="utf-8")
    elif suffix == ".csv":
        frame.to_csv(path, index=False, encoding="utf-8-sig")  # with a BOM, as Excel writes
    else:
        frame.to_parquet(path)
    examples = load_split(_cfg(path), "train")
    assert examples == [{"id": r["id"], "text": r["dialogue"], "summary": r["summary"]} for r in ROWS]


def test_limit_and_missing_ids(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps({"dialogue": r["dialogue"], "summary": r["summary"]}) for r in ROWS), encoding="utf-8")
    examples = load_split(_cfg(path, max_train_samples=3), "train")
    assert [e["id"] for e in examples] == ["0", "1", "2"]  # row numbers when the id column is absent


def test_duplicate_ids_refused(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps({**r, "id": "same"}) for r in ROWS), encoding="utf-8")
    with pytest.raises(SumlabError, match="not unique"):
        load_split(_cfg(path), "train")


def test_test_split_without_summaries_when_allowed(tmp_path: Path) -> None:
    path = tmp_path / "test.csv"
    pd.DataFrame([{"fname": "t1", "dialogue": "hello"}]).to_csv(path, index=False)
    cfg = _cfg(path, train_file=None, test_file=path.name, id_column="fname")
    assert load_split(cfg, "test", require_summary=False) == [{"id": "t1", "text": "hello", "summary": None}]
    with pytest.raises(SumlabError, match="data.summary_column"):
        load_split(cfg, "test")


def test_synthetic_source_is_deterministic() -> None:
    cfg = OmegaConf.create({"source": "synthetic", "synthetic_sizes": {"train": 4}, "max_train_samples": None})
    assert load_split(cfg, "train", seed=1) == load_split(cfg, "train", seed=1) != load_split(cfg, "train", seed=2)


def test_tags_found_in_data() -> None:
    texts = [r["dialogue"] for r in ROWS]
    assert find_tags(texts, r"#[A-Za-z][A-Za-z0-9_]*#") == ["#Person1#", "#Person2#", "#PhoneNumber#"]
