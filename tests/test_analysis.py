"""The analysis package: training's test_predictions.jsonl, per-example scores and their cache, the Explore page's
data (runs, pages worst first, search, lengths, side by side), highlight spans, path safety, leaderboard intervals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_RUN, train_in_process
from test_compare import prediction_dir, predictions

from sumlab.analysis import scores as scores_module
from sumlab.analysis.explore import example_view, examples_page, length_stats, list_runs, open_run, side_by_side
from sumlab.analysis.highlight import highlights, to_html, token_spans
from sumlab.analysis.roots import PathRefused, Roots
from sumlab.analysis.runs import load_run
from sumlab.analysis.scores import example_scores
from sumlab.core.errors import SumlabError
from sumlab.core.stats import bootstrap_mean
from sumlab.sweep.results import leaderboard
from sumlab.text.rouge import score_pair, score_references, tokenize
from sumlab.train import predictions as train_predictions


# --- training writes its test predictions --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "outputs" / "train" / "tiny"
    train_in_process(TINY_RUN, run_dir)
    return run_dir


@pytest.mark.slow
def test_training_writes_test_predictions_and_their_interval(tiny_run: Path) -> None:
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    rows = [json.loads(line) for line in (tiny_run / "test_predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"synthetic_test_{i:05d}" for i in range(5)]  # dataset order, each once
    assert all(isinstance(r["prediction"], str) and isinstance(r["reference"], str) for r in rows)
    for row in rows:  # the test step's per-example scores, as the scorer gives them
        expected = score_pair(row["prediction"], row["reference"], metrics["rouge_tokenizer"])
        assert {k: row[k] for k in expected} == pytest.approx(expected)
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert np.mean([r[key] for r in rows]) == pytest.approx(metrics["test"][key])
    combined = [(r["rouge1"] + r["rouge2"] + r["rougeL"]) / 3 for r in rows]
    stored = metrics["intervals"]["test/rouge_combined"]
    assert stored == {**bootstrap_mean(combined).as_dict(), "examples": 5}
    assert stored["mean"] == pytest.approx(metrics["test"]["rouge_combined"])
    assert not (tiny_run / train_predictions.SHARDS).exists()  # shards removed after the merge


@pytest.mark.slow
def test_leaderboard_interval_column_for_a_run_with_test_predictions(tiny_run: Path) -> None:
    frame = leaderboard([tiny_run.parent])
    stored = json.loads((tiny_run / "metrics.json").read_text())["intervals"]["test/rouge_combined"]
    assert list(frame["test_rouge_combined_ci"]) == [f"[{stored['low']:.4f}, {stored['high']:.4f}]"]


@pytest.mark.slow
def test_explore_a_training_run(tiny_run: Path) -> None:
    roots = Roots([tiny_run.parents[1]])
    (summary,) = list_runs(roots)
    assert summary.kind == "train" and summary.examples == 5 and summary.interval_key == "test/rouge_combined"
    assert summary.score_key == "val/rouge_combined" and summary.status == "completed"
    run = open_run(roots, summary.path)
    scores = example_scores(run)  # the test step's own scores, no rescoring
    page = examples_page(run, limit=5)
    assert [r.scores["rouge_combined"] for r in page.rows] == sorted(scores.values["rouge_combined"].tolist())


def test_merge_keeps_each_example_once_in_dataset_order(tmp_path: Path) -> None:
    shards = tmp_path / train_predictions.SHARDS
    shards.mkdir()

    def line(idx: int, r1: float) -> str:
        record = {"id": f"id{idx}", "prediction": "p", "reference": "r", "rouge1": r1, "rouge2": 0.0, "rougeL": r1,
                  "rougeLsum": r1}  # fmt: skip
        return f"{idx}\t{json.dumps(record)}\n"

    (shards / "rank0.jsonl").write_text(line(3, 0.3) + line(1, 0.6))
    (shards / "rank1.jsonl").write_text(line(0, 0.9) + line(2, 0.0) + line(3, 0.3))  # 3: a repeat on another rank
    (shards / "rank2.jsonl").write_text("")  # a rank with no examples
    (shards / "rank3.jsonl").write_text(line(7, 1.0))  # stale: an earlier run on four ranks
    intervals = train_predictions.merge(tmp_path, expected=4.0, world_size=3)
    rows = [json.loads(x) for x in (tmp_path / train_predictions.TEST_PREDICTIONS).read_text().splitlines()]
    assert [r["id"] for r in rows] == ["id0", "id1", "id2", "id3"]
    assert intervals["test/rouge_combined"]["examples"] == 4
    assert intervals["test/rouge_combined"]["mean"] == pytest.approx(np.mean([0.6, 0.4, 0.0, 0.2]))
    assert not shards.exists()


def test_merge_refuses_to_write_a_partial_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shards = tmp_path / train_predictions.SHARDS
    shards.mkdir()
    (shards / "rank0.jsonl").write_text('0\t{"id": "a", "rouge1": 1, "rouge2": 1, "rougeL": 1}\n')
    assert (
        train_predictions.merge(tmp_path, expected=2.0, world_size=2) == {}
    )  # rank 1's shard is on another node's disk
    assert not (tmp_path / train_predictions.TEST_PREDICTIONS).exists()
    assert "holds 1 of the 2.0 test examples" in capsys.readouterr().err


# --- per-example scores and their cache --------------------------------------------------------------------------
def test_scores_are_cached_and_rescored_when_the_predictions_change(tmp_path: Path, monkeypatch) -> None:
    rows = predictions(0.5, n=10)
    run = load_run(prediction_dir(tmp_path / "a", rows))
    first = example_scores(run)
    expected = [score_references(r["prediction"], [r["reference"]])["rougeL"] for r in rows]
    assert first.values["rougeL"].tolist() == pytest.approx(expected) and first.ids == tuple(r["id"] for r in rows)

    def no_scoring(*args: object, **kwargs: object) -> None:
        raise AssertionError("scored again despite the cache")

    monkeypatch.setattr(scores_module, "score_references", no_scoring)
    assert example_scores(run).values["rougeL"].tolist() == first.values["rougeL"].tolist()
    monkeypatch.undo()
    changed = [{**r, "prediction": r["reference"]} for r in rows]  # perfect predictions now
    (tmp_path / "a" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in changed))
    assert example_scores(load_run(tmp_path / "a")).values["rouge1"].tolist() == [1.0] * 10


def test_scores_with_several_references_follow_multi_reference(tmp_path: Path) -> None:
    rows = [{"id": "x", "prediction": "the cat sat", "references": ["the cat sat", "a dog ran"]}]
    mean = example_scores(load_run(prediction_dir(tmp_path / "a", rows)))
    best = example_scores(load_run(prediction_dir(tmp_path / "b", rows, multi_reference="max")))
    assert mean.values["rouge1"][0] == pytest.approx(0.5) and best.values["rouge1"][0] == pytest.approx(1.0)


# --- highlights ------------------------------------------------------------------------------------------------
def test_highlight_spans_on_a_hand_computed_example() -> None:
    prediction = "The cat sat on the mat, running."
    reference = "A cat was running on the mat."
    marked = highlights(prediction, reference)["prediction"]

    def words(kind: str) -> list[str]:
        return [marked.text[s.start : s.end] for s in marked.spans if s.kind == kind]

    # reference tokens: a cat was run on the mat (the stemmer makes "running" "run")
    assert words("unigram") == ["The", "cat", "on", "mat", "running"]  # one "the" in the reference: counted once
    assert words("bigram") == ["on", "the", "mat"]  # "on the", "the mat"
    assert words("lcs") == ["cat", "on", "the", "mat"]  # cat on the mat: length 4
    assert to_html(marked, "bigram") == ('The cat sat <mark class="bigram">on</mark> <mark class="bigram">the</mark> '
                                         '<mark class="bigram">mat</mark>, running.')  # fmt: skip
    ref_marked = highlights(prediction, reference)["reference"]
    assert [ref_marked.text[s.start : s.end] for s in ref_marked.spans if s.kind == "lcs"] == ["cat", "on", "the",
                                                                                                "mat"]  # fmt: skip


@pytest.mark.parametrize("tokenizer", ["default", "whitespace"])
def test_token_spans_are_the_rouge_tokens(tokenizer: str) -> None:
    text = "John's dog,  RUNNING fast!\nÜberall 먹었습니다. e-mail 3.5 km_h"
    spans = token_spans(text, tokenizer)
    assert [t for t, _, _ in spans] == tokenize(text, tokenizer)
    for token, start, end in spans:
        assert text[start:end].strip() and not any(c.isspace() for c in text[start:end])


def test_html_escapes_the_text() -> None:
    marked = highlights("<b>cat</b> & dog", "cat dog")["prediction"]
    html = to_html(marked, "unigram")
    assert "<b>" not in html and "&lt;b&gt;" in html and '<mark class="unigram">dog</mark>' in html


# --- the Explore page's data ---------------------------------------------------------------------------------------
def test_examples_worst_first_paged_and_searched(tmp_path: Path) -> None:
    rows = predictions(0.5, n=30)
    rows[4]["prediction"] = "A Needle in the haystack"
    run = load_run(prediction_dir(tmp_path / "a", rows))
    combined = example_scores(run).values["rouge_combined"]
    first = examples_page(run, offset=0, limit=10)
    second = examples_page(run, offset=10, limit=10)
    assert first.total == first.matched == 30 and [r.rank for r in second.rows] == list(range(10, 20))
    ordered = [r.scores["rouge_combined"] for r in (*first.rows, *second.rows)]
    assert ordered == sorted(combined.tolist())[:20]
    best = examples_page(run, limit=1, order="best").rows[0]
    assert best.scores["rouge_combined"] == combined.max()
    assert [r.id for r in examples_page(run, query="needle").rows] == ["ex004"]  # case-insensitive, in a text
    assert examples_page(run, query="EX01").matched == 10  # ex010 .. ex019 by id
    assert examples_page(run, query="no such words").matched == 0
    with pytest.raises(SumlabError, match="order"):
        examples_page(run, order="random")


def test_examples_of_a_run_without_references_in_file_order(tmp_path: Path) -> None:
    rows = [{"id": f"u{i}", "prediction": f"summary {i}"} for i in range(3)]
    run = load_run(prediction_dir(tmp_path / "a", rows))
    page = examples_page(run)
    assert [r.id for r in page.rows] == ["u0", "u1", "u2"] and all(r.scores == {} for r in page.rows)


def test_example_view_and_side_by_side(tmp_path: Path) -> None:
    rows_a, rows_b = predictions(0.3, n=8), predictions(0.9, n=8, seed=1)
    a = load_run(prediction_dir(tmp_path / "a", rows_a))
    b = load_run(prediction_dir(tmp_path / "b", rows_b))
    view = example_view(a, "ex002")
    assert view.row.prediction == rows_a[2]["prediction"] and view.row.references == (rows_a[2]["reference"],)
    assert view.highlights[0]["prediction"]["text"] == rows_a[2]["prediction"]
    both = side_by_side(a, b, "ex002")
    assert (both["a"]["prediction"], both["b"]["prediction"]) == (rows_a[2]["prediction"], rows_b[2]["prediction"])
    assert both["references"] == [rows_a[2]["reference"]]
    assert both["b"]["scores"]["rouge1"] == pytest.approx(
        score_pair(rows_b[2]["prediction"], rows_b[2]["reference"])["rouge1"]
    )
    with pytest.raises(SumlabError, match="no example with id 'nope'"):
        example_view(a, "nope")


def test_length_and_compression_statistics(tmp_path: Path) -> None:
    rows = [
        {"id": "1", "prediction": "one two", "reference": "one two three four", "text": " ".join(["w"] * 20)},
        {"id": "2", "prediction": "one two three four", "reference": "one two", "text": " ".join(["w"] * 40)},
    ]
    stats = length_stats(load_run(prediction_dir(tmp_path / "a", rows)))
    assert stats["examples"] == 2 and stats["prediction"]["mean"] == 3 and stats["prediction"]["max"] == 4
    assert stats["input"]["mean"] == 30 and stats["prediction/reference"]["mean"] == pytest.approx((0.5 + 2) / 2)
    assert stats["input/prediction"]["mean"] == pytest.approx((10 + 10) / 2)
    assert stats["input/prediction"]["p50"] == pytest.approx(10)
    no_input = length_stats(load_run(prediction_dir(tmp_path / "b", [{**r, "text": None} for r in rows])), "rouge")
    assert no_input["input"] is None and no_input["tokens"] == "rouge"


def test_list_runs_train_and_predict_dirs(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    prediction_dir(outputs / "predict" / "p1", predictions(0.5, n=5), rouge={"rouge_combined": 0.4}, examples=5)
    train = outputs / "train" / "t1"
    train.mkdir(parents=True)
    (train / "run.json").write_text(json.dumps({"status": "completed"}))
    (train / "metrics.json").write_text(
        json.dumps({"monitor": "val/rouge_combined", "validation": {"rouge_combined": 0.3}})
    )
    (outputs / "train" / "broken").mkdir()
    (outputs / "train" / "broken" / "metrics.json").write_text("{not json")
    runs = list_runs(Roots([outputs, tmp_path / "multirun"]))  # a root that does not exist is skipped
    assert [(r.kind, r.name, r.score) for r in runs] == [("train", "train/t1", 0.3), ("predict", "predict/p1", 0.4)]
    assert runs[1].interval is None  # never scored: nothing cached yet
    example_scores(open_run(Roots([outputs]), runs[1].path))
    (after,) = [r for r in list_runs(Roots([outputs])) if r.kind == "predict"]
    assert after.interval is not None and after.interval_key == "test/rouge_combined"
    assert after.interval.low <= after.interval.mean <= after.interval.high


# --- path safety ---------------------------------------------------------------------------------------------------
def test_paths_outside_the_roots_are_refused(tmp_path: Path, monkeypatch) -> None:
    outputs = tmp_path / "outputs"
    inside = prediction_dir(outputs / "predict" / "p1", predictions(0.5, n=3))
    outside = prediction_dir(tmp_path / "secret", predictions(0.5, n=3))
    os.symlink(outside, outputs / "link")  # a symlink inside the root that leads out of it
    os.symlink(outside / "predictions.jsonl", inside / "leak.jsonl")
    swapped = prediction_dir(outputs / "predict" / "p2", predictions(0.5, n=3))
    (swapped / "predictions.jsonl").unlink()
    os.symlink(outside / "predictions.jsonl", swapped / "predictions.jsonl")  # a run whose file leads out
    monkeypatch.chdir(tmp_path)
    roots = Roots(["outputs"])
    assert open_run(roots, "outputs/predict/p1").path == inside.resolve()
    assert open_run(roots, str(inside)).kind == "predict"  # absolute, inside
    refused = ["outputs/../secret", "../secret", str(outside), "/etc/passwd", "outputs/link", "outputs/link/",
               "outputs/predict/p1/leak.jsonl", "secret", "outputs/predict/\x00", "outputs/predict/p2"]  # fmt: skip
    for path in refused:
        with pytest.raises(PathRefused):
            open_run(roots, path)
    assert issubclass(PathRefused, SumlabError)
    assert [r.path for r in list_runs(roots)] == ["outputs/predict/p1"]  # the symlinked-out run is not listed
