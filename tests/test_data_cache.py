"""The tokenized cache: built once and reused, rebuilt when anything that changes tokens changes (a different
tokenizer never reuses it), int32 columns memory-mapped from disk, rows identical to family.features."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datasets import IterableDataset
from datasets.table import MemoryMappedTable
from test_data import ROWS, data_cfg, write_jsonl

from sumlab.core.errors import SumlabError
from sumlab.data.datamodule import SummarizationDataModule
from sumlab.data.sources import load_raw, load_split
from sumlab.family import make_family
from sumlab.models import add_tags, train_tiny_tokenizer

TEXTS = [r["dialogue"] for r in ROWS] + [r["summary"] for r in ROWS]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tiny_tokenizer("t5", 120, TEXTS * 4)


def module(path: Path, cache: Path, tokenizer, family: str = "seq2seq", **extra) -> SummarizationDataModule:
    cfg = data_cfg(path, **{"validation_file": path.name, "batch_size": 2, "eval_batch_size": 2, **extra})
    splits = {s: load_raw(cfg, s, cache_dir=str(cache)) for s in ("train", "validation")}
    fam = make_family(family, tokenizer, "summarize: " if family == "seq2seq" else "", "\nTL;DR:\n")
    return SummarizationDataModule(cfg, fam, splits, str(cache))


def test_rows_equal_family_features_and_are_memory_mapped(tmp_path: Path, tokenizer) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    for family in ("seq2seq", "causal"):
        dm = module(path, tmp_path / "cache", tokenizer, family)
        ds = dm.tokenized("train")
        assert isinstance(ds.data, MemoryMappedTable) and ds.cache_files
        keys = ("input_ids", "labels") if family == "seq2seq" else ("prompt_ids", "target_ids")
        assert all(str(ds.features[k].feature.dtype) == "int32" for k in keys)
        for i, (row, e) in enumerate(zip(ds, load_split(dm.cfg, "train"), strict=True)):
            want = dm.family.features(e["text"], e["summary"], dm.cfg.max_source_length, dm.cfg.max_target_length)
            assert row["idx"] == i and row["id"] == e["id"] and row["summary"] == e["summary"]
            assert {k: row[k] for k in keys} == want
            assert row["length"] == sum(len(v) for v in want.values())
        assert np.array_equal(dm.lengths("train"), np.array([r["length"] for r in ds]))
        batches = list(dm.train_dataloader())  # length-grouped, shuffled: the short batch may come first
        assert sorted(int(i) for b in batches for i in b["idx"]) == list(range(len(ds)))
        assert max(b["idx"].numel() for b in batches) == 2 and all(
            len(b["references"]) == b["idx"].numel() for b in batches
        )


def test_second_run_reuses_the_cache_and_changes_rebuild_it(tmp_path: Path, tokenizer) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    cache = tmp_path / "cache"
    first = module(path, cache, tokenizer)
    first.prepare_data()
    assert sorted(first.cache.built) == ["train", "validation"]
    again = module(path, cache, tokenizer)
    again.prepare_data()
    again.setup("fit")
    assert again.cache.built == []  # nothing tokenized: every split memory-mapped from the first run's files
    assert again.tokenized("train")[:] == first.tokenized("train")[:]

    for change in ({"source_template": "{topic}: {text}"}, {"max_source_length": 7}, {"strip": True}):
        changed = module(path, cache, tokenizer, **change)
        changed.prepare_data()
        assert sorted(changed.cache.built) == ["train", "validation"], change
    forced = module(path, cache, tokenizer, overwrite_cache=True)
    forced.prepare_data()
    assert sorted(forced.cache.built) == ["train", "validation"]

    write_jsonl(path, ROWS[:4])  # the file changed: its rows are read and tokenized again
    edited = module(path, cache, tokenizer)
    edited.prepare_data()
    assert edited.cache.built == ["train", "validation"] and len(edited.tokenized("train")) == 4


def test_a_different_tokenizer_never_reuses_a_cache(tmp_path: Path, tokenizer) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    cache = tmp_path / "cache"
    before = module(path, cache, tokenizer).tokenized("train")
    other = train_tiny_tokenizer("t5", 120, TEXTS * 4)
    add_tags(None, other, ["#Person1#"])  # same vocabulary plus one whole-word tag: different tokens
    dm = module(path, cache, other)
    after = dm.tokenized("train")
    assert dm.cache.built == ["train"]
    assert after["input_ids"][:] != before["input_ids"][:]
    assert after["input_ids"][0] == dm.family.features(ROWS[0]["dialogue"], None, 512, 128)["input_ids"]
    assert len(list((cache / "data").glob("test-train-*"))) == 2


def test_workers_build_the_same_rows(tmp_path: Path, tokenizer) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    one = module(path, tmp_path / "one", tokenizer).tokenized("train")
    two_dm = module(path, tmp_path / "two", tokenizer, preprocessing_num_workers=2)
    two = two_dm.tokenized("train")
    assert len(two.cache_files) == 2 and two[:] == one[:]
    meta = json.loads(next((tmp_path / "two" / "data").glob("test-train-*/meta.json")).read_text())
    assert meta["rows"] == len(ROWS)


def test_multi_reference_rows_reach_the_batch(tmp_path: Path, tokenizer) -> None:
    rows = [{**r, "references": [r["summary"], "x"]} for r in ROWS]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    dm = module(path, tmp_path / "cache", tokenizer, reference_columns=["references"])
    batch = next(iter(dm.val_dataloader()))
    assert batch["references"] == [[r["summary"], "x"] for r in ROWS[:2]]
    assert next(iter(dm.train_dataloader()))["references"][0] in {r["summary"] for r in ROWS}  # training: the summary


def test_streaming_yields_the_cached_rows_without_a_cache(tmp_path: Path, tokenizer) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    cached = module(path, tmp_path / "cache", tokenizer)
    streamed = module(path, tmp_path / "stream", tokenizer, streaming=True)
    assert isinstance(streamed.splits["train"], IterableDataset)
    streamed.prepare_data()
    val = [b for b in streamed.val_dataloader()]
    want = [b for b in cached.val_dataloader()]
    assert [b["idx"].tolist() for b in val] == [b["idx"].tolist() for b in want]
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(val, want, strict=True))
    assert sorted(i for b in streamed.train_dataloader() for i in b["idx"].tolist()) == list(range(len(ROWS)))
    assert not (tmp_path / "stream" / "data").exists()  # nothing tokenized to disk
    orders = []
    for epoch in (0, 1, 2, 0):  # reshuffled per epoch (Lightning never calls set_epoch on a stream), reproducibly
        streamed.trainer = SimpleNamespace(current_epoch=epoch, world_size=1, global_rank=0)
        orders.append([i for b in streamed.train_dataloader() for i in b["idx"].tolist()])
    assert orders[3] == orders[0] and len({tuple(o) for o in orders}) == 3
    streamed.trainer = None
    with pytest.raises(SumlabError, match="not available with data.streaming=true"):
        streamed.lengths("train")


def test_any_file_of_a_train_file_list_changes_the_key(tmp_path: Path, tokenizer) -> None:
    from test_data import AUGMENTED

    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    augmented = write_jsonl(tmp_path / "augmented.jsonl", AUGMENTED)
    cache, files = tmp_path / "cache", {"train_file": [path.name, augmented.name]}
    first = module(path, cache, tokenizer, **files)
    first.prepare_data()
    assert sorted(first.cache.built) == ["train", "validation"]
    assert len(first.tokenized("train")) == len(ROWS) + len(AUGMENTED)
    same = module(path, cache, tokenizer, **files)
    same.prepare_data()
    assert same.cache.built == []
    # only a provenance column changed: the tokens would be the same, but a changed file is never assumed so
    write_jsonl(augmented, [{**r, "model": "another-model"} for r in AUGMENTED])
    again = module(path, cache, tokenizer, **files)
    again.prepare_data()
    assert again.cache.built == ["train"]  # the validation file did not change
