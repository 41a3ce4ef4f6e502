"""Data sources: every file type reads the same examples; hub presets build the right load_dataset call;
bad input is one clear line naming the row, column or key; limits, ids, templates and clean-up behave as documented."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pandas as pd
import pytest
from conftest import TINY_RUN, compose_config, train_in_process
from omegaconf import OmegaConf

from sumlab.config.schema import DataConfig
from sumlab.core.errors import SumlabError
from sumlab.data import sources
from sumlab.data.sources import load_raw, load_split
from sumlab.models import find_tags

ROWS = [{"id": f"d{i}", "dialogue": f"#Person1#: 안녕하세요 {i}\n#Person2#: hi #PhoneNumber#",
         "summary": f"s{i}", "topic": f"t{i}"}
        for i in range(5)]  # fmt: skip


def data_cfg(path: Path | None = None, **extra) -> OmegaConf:
    """The data group as the schema types it: files preset around one train file."""
    base = {"name": "test", "dir": str(path.parent) if path else None, "train_file": path.name if path else None}
    return OmegaConf.merge(OmegaConf.structured(DataConfig), {**base, **extra})


def write_jsonl(path: Path, rows: list[dict], bom: bool = False) -> Path:
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return path


def expected(rows: list[dict]) -> list[dict]:
    return [{"id": r["id"], "text": r["dialogue"], "summary": r["summary"]} for r in rows]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv", ".parquet"])
def test_every_file_type_reads_the_same_examples(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"train{suffix}"
    frame = pd.DataFrame(ROWS)
    if suffix == ".jsonl":
        write_jsonl(path, ROWS, bom=True)
    elif suffix == ".json":
        path.write_text(json.dumps(ROWS, ensure_ascii=False), encoding="utf-8")
    elif suffix in (".csv", ".tsv"):
        frame.to_csv(
            path, index=False, encoding="utf-8-sig", sep="\t" if suffix == ".tsv" else ","
        )  # BOM, as Excel writes
    else:
        frame.to_parquet(path)
    assert load_split(data_cfg(path), "train", cache_dir=str(tmp_path / "cache")) == expected(ROWS)
    raw = load_raw(data_cfg(path), "train", cache_dir=str(tmp_path / "cache"))
    assert raw.cache_files  # datasets' Arrow copy: memory-mapped, not Python lists


def test_csv_cells_stay_text(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text("id,dialogue,summary\n007,hello,\n008,NA,1.50\n", encoding="utf-8")
    examples = load_split(data_cfg(path), "train", cache_dir=str(tmp_path / "c"))
    assert examples == [{"id": "007", "text": "hello", "summary": ""}, {"id": "008", "text": "NA", "summary": "1.50"}]


def test_limit_and_missing_ids(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [{"dialogue": r["dialogue"], "summary": r["summary"]} for r in ROWS])
    examples = load_split(data_cfg(path, max_train_samples=3), "train")
    assert [e["id"] for e in examples] == ["0", "1", "2"]  # row numbers when the id column is absent


def test_duplicate_ids_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [{**r, "id": "same"} for r in ROWS])
    with pytest.raises(SumlabError, match="not unique"):
        load_split(data_cfg(path), "train")


def test_test_split_without_summaries_when_allowed(tmp_path: Path) -> None:
    path = tmp_path / "test.csv"
    pd.DataFrame([{"fname": "t1", "dialogue": "hello"}]).to_csv(path, index=False)
    cfg = data_cfg(path, train_file=None, test_file=path.name, id_column="fname")
    assert load_split(cfg, "test", require_summary=False) == [{"id": "t1", "text": "hello", "summary": None}]
    with pytest.raises(SumlabError, match="data.summary_column"):
        load_split(cfg, "test")


def test_synthetic_source_is_deterministic() -> None:
    cfg = data_cfg(source="synthetic", synthetic_sizes={"train": 4})
    assert load_split(cfg, "train", seed=1) == load_split(cfg, "train", seed=1) != load_split(cfg, "train", seed=2)


def test_tags_found_in_data() -> None:
    texts = [r["dialogue"] for r in ROWS]
    assert find_tags(texts, r"#[A-Za-z][A-Za-z0-9_]*#") == ["#Person1#", "#Person2#", "#PhoneNumber#"]


# --- templates and clean-up ---------------------------------------------------------------------


def test_source_template_uses_any_column(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", ROWS[:2])
    examples = load_split(data_cfg(path, source_template="{topic}: {text}"), "train")
    assert [e["text"] for e in examples] == [f"{r['topic']}: {r['dialogue']}" for r in ROWS[:2]]


def test_unknown_template_placeholder_is_one_line_before_any_work(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    with pytest.raises(SumlabError, match=r"data.source_template names 'speaker', not a column"):
        load_raw(data_cfg(path, source_template="{speaker}: {text}"), "train")


def test_clean_up_switches(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [{"id": "a", "dialogue": "  #Person1#: hi   there\\n#Person2#:\t yes  ", "summary": " ok  now "}],
    )
    raw = load_split(data_cfg(path), "train")[0]
    assert raw["text"] == "  #Person1#: hi   there\\n#Person2#:\t yes  "  # off by default: text as read
    cleaned = load_split(data_cfg(path, unescape_newlines=True, collapse_whitespace=True, strip=True), "train")[0]
    assert cleaned["text"] == "#Person1#: hi there\n#Person2#: yes" and cleaned["summary"] == "ok now"


# --- bad input: one line naming what to fix ------------------------------------------------------


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes("id,dialogue,summary\n1,안녕하세요,요약\n".encode("cp949"))
    with pytest.raises(SumlabError, match=r"not UTF-8: .*train.csv \(byte \d+\); re-save it as UTF-8"):
        load_raw(data_cfg(path), "train")


@pytest.mark.parametrize(("cell", "kind"), [(5, "int"), (["a", "b"], "list")])
def test_text_cell_that_is_not_text_names_the_row(tmp_path: Path, cell, kind: str) -> None:
    rows = [dict(r) for r in ROWS]
    rows[2]["dialogue"] = cell
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(SumlabError, match=rf"row 3 of .*train.jsonl: column 'dialogue' holds a {kind}, not text"):
        load_raw(data_cfg(path), "train")


def test_null_cell_names_the_row_and_skip_empty_drops_it(tmp_path: Path, capsys) -> None:
    rows = [dict(r) for r in ROWS]
    rows[1]["summary"], rows[3]["dialogue"] = None, "   "
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(SumlabError, match=r"row 2 of .*: column 'summary' is empty \(null\).*data.skip_empty=true"):
        load_raw(data_cfg(path), "train")
    kept = load_split(data_cfg(path, skip_empty=True), "train")
    assert [e["id"] for e in kept] == ["d0", "d2", "d4"]
    assert "dropped 2 of 5 rows" in capsys.readouterr().err
    write_jsonl(path, [{**r, "dialogue": " "} for r in ROWS])
    with pytest.raises(SumlabError, match="no rows left in .*train.jsonl"):
        load_raw(data_cfg(path, skip_empty=True), "train")


def test_missing_text_column_and_file(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    with pytest.raises(SumlabError, match=r"column 'document' \(data.text_column\) not in"):
        load_raw(data_cfg(path, text_column="document"), "train")
    with pytest.raises(SumlabError, match="data file not found"):
        load_raw(data_cfg(tmp_path / "nope.jsonl"), "train")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(SumlabError, match="data file is empty"):
        load_raw(data_cfg(tmp_path / "empty.jsonl"), "train")


def test_cache_dir_not_writable(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SumlabError, match="cache directory is not writable.*paths.cache_dir"):
        load_raw(data_cfg(path), "train", cache_dir=str(blocker / "cache"))


# --- multi-reference columns ------------------------------------------------------------------------


def test_reference_columns_list_or_several(tmp_path: Path) -> None:
    rows = [{**r, "references": [r["summary"], "other"], "ref2": "second"} for r in ROWS]
    path = write_jsonl(tmp_path / "test.jsonl", rows)
    cfg = data_cfg(path, train_file=None, test_file=path.name)
    listed = load_split(OmegaConf.merge(cfg, {"reference_columns": ["references"]}), "test")
    assert [e["references"] for e in listed] == [[r["summary"], "other"] for r in ROWS]
    several = load_split(OmegaConf.merge(cfg, {"reference_columns": ["summary", "ref2"]}), "test")
    assert [e["references"] for e in several] == [[r["summary"], "second"] for r in ROWS]


@pytest.mark.parametrize("bad", [[], ["only one"]])
def test_ragged_or_empty_references_refused(tmp_path: Path, bad: list) -> None:
    rows = [{**r, "references": ["a", "b"]} for r in ROWS]
    rows[3]["references"] = bad
    path = write_jsonl(tmp_path / "test.jsonl", rows)
    cfg = data_cfg(path, train_file=None, test_file=path.name, reference_columns=["references"])
    with pytest.raises(
        SumlabError, match=rf"row 4 of .*'references' \(data.reference_columns\) holds {len(bad)} references"
    ):
        load_raw(cfg, "test")


# --- hub presets: local files when present, else the right load_dataset call (never downloading) ------------


HUB_PRESETS = {
    "cnn_dailymail": ("abisee/cnn_dailymail", "3.0.0", "article"),
    "xsum": ("EdinburghNLP/xsum", None, "document"),
    "samsum": ("Samsung/samsum", None, "dialogue"),
    "dialogsum": ("knkarthick/dialogsum", None, "dialogue"),
}


@pytest.mark.parametrize("preset", sorted(HUB_PRESETS))
def test_hub_preset_builds_the_load_dataset_call(preset: str, tmp_path: Path, monkeypatch) -> None:
    name, config, text = HUB_PRESETS[preset]
    cfg = compose_config([f"data={preset}", f"paths.data_dir={tmp_path / 'none'}", "data.revision=abc123",
                          "data.validation_split=dev"], run_dir=tmp_path).data  # fmt: skip
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.Dataset.from_list([{"id": "x", text: "a text", cfg.summary_column: "a summary"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples = load_split(cfg, "validation", cache_dir=str(tmp_path / "cache"))
    assert examples == [{"id": "x", "text": "a text", "summary": "a summary"}]
    assert calls == [((name, config), {"revision": "abc123", "split": "dev", "cache_dir": str(tmp_path / "cache")})]


def test_hub_preset_prefers_local_files(tmp_path: Path) -> None:
    (tmp_path / "dialogsum").mkdir()
    write_jsonl(tmp_path / "dialogsum" / "dev.jsonl", ROWS)
    cfg = compose_config(["data=dialogsum", f"paths.data_dir={tmp_path}"], run_dir=tmp_path).data
    assert sources.source_of(cfg, "validation") == "files" and sources.source_of(cfg, "train") == "hub"
    assert load_split(cfg, "validation") == expected(ROWS)


def test_hub_offline_and_missing_split_are_one_line(tmp_path: Path, monkeypatch) -> None:
    cfg = compose_config(["data=xsum", f"paths.data_dir={tmp_path}"], run_dir=tmp_path).data

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'EdinburghNLP/xsum' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(SumlabError) as ex:
        load_raw(cfg, "train")
    line = str(ex.value)
    assert "\n" not in line and "'EdinburghNLP/xsum'" in line and f"data.dir={tmp_path}/xsum" in line

    def no_split(*args, **kwargs):
        raise ValueError("Unknown split \"dev\". Should be one of ['train', 'validation', 'test'].")

    monkeypatch.setattr(datasets, "load_dataset", no_split)
    with pytest.raises(SumlabError, match=r"dataset EdinburghNLP/xsum has no split 'dev': set data.validation_split"):
        load_raw(OmegaConf.merge(cfg, {"validation_split": "dev"}), "validation")


# --- several training files (original + augmented) --------------------------------------------------

AUGMENTED = [{"id": f"{r['id']}#bt1", "dialogue": r["dialogue"] + " (paraphrased)", "summary": r["summary"],
              "topic": r["topic"], "source_id": r["id"], "method": "back_translation", "model": "opus-mt-ko-en"}
             for r in ROWS[:3]]  # fmt: skip


def two_files(tmp_path: Path, augmented: list[dict] = AUGMENTED) -> OmegaConf:
    pd.DataFrame(ROWS).to_csv(tmp_path / "train.csv", index=False)
    write_jsonl(tmp_path / "augmented.jsonl", augmented)
    return data_cfg(tmp_path / "train.csv", train_file=["train.csv", "augmented.jsonl"])


def test_train_file_list_reads_the_files_as_one_split_without_provenance(tmp_path: Path) -> None:
    cfg = two_files(tmp_path)
    assert load_split(cfg, "train") == expected(ROWS) + expected(AUGMENTED)
    raw = load_raw(cfg, "train")
    assert sorted(raw.column_names) == ["dialogue", "id", "summary", "topic"]  # source_id, method, model left out
    templated = load_split(OmegaConf.merge(cfg, {"source_template": "{topic}: {text}"}), "train")
    assert templated[-1]["text"] == f"{AUGMENTED[-1]['topic']}: {AUGMENTED[-1]['dialogue']}"
    # a template may name a provenance column only where every file has it: the original has none
    with pytest.raises(SumlabError, match=r"names 'method', not a column of .*train\.csv"):
        load_raw(OmegaConf.merge(cfg, {"source_template": "{method}: {text}"}), "train")
    assert len(load_raw(OmegaConf.merge(cfg, {"max_train_samples": 6}), "train")) == 6  # the first N of all rows


@pytest.mark.parametrize("streaming", [False, True])
def test_train_file_list_ids_become_text_and_a_string_still_works(tmp_path: Path, streaming: bool) -> None:
    numbered = [{**r, "id": 100 + i} for i, r in enumerate(AUGMENTED)]  # JSON numbers next to the CSV's text ids
    cfg = OmegaConf.merge(two_files(tmp_path, numbered), {"streaming": streaming})
    assert [e["id"] for e in load_split(cfg, "train")][-3:] == ["100", "101", "102"]
    assert load_split(OmegaConf.merge(cfg, {"train_file": "train.csv"}), "train") == expected(ROWS)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"summary": None}, r"column 'summary' \(data.summary_column\) not in .*augmented\.jsonl"),
        ({"id": None}, r"column 'id' \(data.id_column\) not in .*augmented\.jsonl, though .*train\.csv has it"),
        ({"id": "d1"}, r"id 'd1' .* is in both .*train\.csv and .*augmented\.jsonl"),
    ],
    ids=["missing-summary", "missing-ids", "same-id"],
)
def test_train_file_list_errors_name_the_file(tmp_path: Path, change: dict, needle: str) -> None:
    rows = [{k: v for k, v in {**r, **change}.items() if v is not None} for r in AUGMENTED[:1]]
    with pytest.raises(SumlabError, match=needle):
        load_raw(two_files(tmp_path, rows), "train")


def test_train_file_list_in_the_config(tmp_path: Path) -> None:
    from sumlab.config.rules import validate

    cfg = compose_config(["data=files", "data.train_file=[a.csv,b.jsonl]"], run_dir=tmp_path)
    validate(cfg)
    assert sources.split_paths(cfg.data, "train") == [Path("a.csv"), Path("b.jsonl")]
    with pytest.raises(SumlabError, match=r"data\.train_file=\[\] is not a file"):
        validate(compose_config(["data=files", "data.train_file=[]"], run_dir=tmp_path))


@pytest.mark.slow
def test_training_on_the_original_and_an_augmented_file(tmp_path: Path) -> None:
    from sumlab.data import synthetic

    original = synthetic.generate_split("train", 24, 0)
    provenance = {"method": "paraphrase", "model": "SmolLM2"}
    augmented = [{**row, "id": f"{row['id']}#aug1", "dialogue": row["dialogue"].replace(".", " !"),
                  "source_id": row["id"], **provenance} for row in original[:12]]  # fmt: skip
    write_jsonl(tmp_path / "train.jsonl", original)
    write_jsonl(tmp_path / "augmented.jsonl", augmented)
    write_jsonl(tmp_path / "dev.jsonl", synthetic.generate_split("validation", 6, 0))
    files = ["data=files", "data.name=two_files", f"data.dir={tmp_path}", "data.validation_file=dev.jsonl",
             "data.train_file=[train.jsonl,augmented.jsonl]", "test=false", "export=false"]  # fmt: skip
    _, cfg = train_in_process([*TINY_RUN, *files], tmp_path / "run")
    (cache,) = Path(cfg.paths.cache_dir, "data").glob("two_files-train-*")
    assert json.loads((cache / "meta.json").read_text())["rows"] == 36  # both files, provenance left out


# --- what a run says about its splits before any work -------------------------------------------------------------


def test_training_names_what_each_split_is_scored_against(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A reference column the validation split lacks (a typo) falls back to data.summary_column: training says so
    per scored split, so the fallback is never silent."""
    from sumlab.train.runner import load_splits

    write_jsonl(tmp_path / "train.jsonl", ROWS)
    write_jsonl(tmp_path / "dev.jsonl", ROWS)
    write_jsonl(tmp_path / "test.jsonl", [{**r, "refs": [r["summary"], "other"]} for r in ROWS])
    files = ["data=files", f"data.dir={tmp_path}", "data.train_file=train.jsonl", "data.validation_file=dev.jsonl"]
    cfg = compose_config([*files, "data.reference_columns=[a_typo]"], run_dir=tmp_path)
    load_splits(cfg)
    out = capsys.readouterr().out
    assert (
        "data: validation is scored against 'summary' (data.summary_column); it has none of data.reference_columns "
        "['a_typo']"
    ) in out.splitlines()
    cfg = compose_config([*files, "data.test_file=test.jsonl", "data.reference_columns=[refs]"], run_dir=tmp_path)
    load_splits(cfg)
    lines = capsys.readouterr().out.splitlines()
    assert (
        "data: validation is scored against 'summary' (data.summary_column); it has none of data.reference_columns "
        "['refs']"
    ) in lines
    assert "data: test is scored against data.reference_columns ['refs']" in lines


def test_hub_preset_without_its_test_file_names_test_false(tmp_path: Path, monkeypatch) -> None:
    """data=cnn_dailymail with local train/validation files and data.test_file=null: the test split goes to the hub;
    offline, the one line names test=false (no test split) beside data.test_file."""
    from sumlab.train.runner import load_splits

    (tmp_path / "cnn_dailymail").mkdir()
    news = [{"id": r["id"], "article": r["dialogue"], "highlights": r["summary"]} for r in ROWS]
    for name in ("train.jsonl", "validation.jsonl"):
        write_jsonl(tmp_path / "cnn_dailymail" / name, news)

    local = datasets.load_dataset

    def offline(name, *args, **kwargs):  # local files still load (datasets' json builder)
        if name == "abisee/cnn_dailymail":
            raise ConnectionError("Couldn't reach 'abisee/cnn_dailymail' on the Hub (LocalEntryNotFoundError)")
        return local(name, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", offline)
    overrides = ["data=cnn_dailymail", f"paths.data_dir={tmp_path}", "data.test_file=null"]
    with pytest.raises(SumlabError) as ex:
        load_splits(compose_config(overrides, run_dir=tmp_path))
    assert "data.test_file=" in str(ex.value) and "test=false" in str(ex.value) and "\n" not in str(ex.value)
    splits = load_splits(compose_config([*overrides, "test=false"], run_dir=tmp_path))
    assert set(splits) == {"train", "validation"}  # and no hub call
