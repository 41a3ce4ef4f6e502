"""Comparing runs honestly: the paired bootstrap, `python -m sumlab.compare` on hand-built prediction directories,
and its one-line refusals."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import DIALOGSUM, ROOT, assert_one_line_error, run_cli, the_error_line

from sumlab import compare as compare_cli
from sumlab.analysis.compare import compare_runs
from sumlab.analysis.explore import length_stats
from sumlab.analysis.runs import load_run
from sumlab.core.stats import bootstrap_mean, paired_bootstrap
from sumlab.text.rouge import score_corpus

WORDS = "the cat sat on a mat and then ran to the big red house near an old tree by the river".split()


# --- core.stats -------------------------------------------------------------------------------------------------
def test_paired_bootstrap_excludes_zero_for_a_large_difference() -> None:
    rng = np.random.default_rng(1)
    a = rng.uniform(0.1, 0.4, size=50)
    b = a + rng.uniform(0.2, 0.3, size=50)  # every example better by 0.2 to 0.3
    diff = paired_bootstrap(a, b)
    assert diff.low > 0.15 and diff.high < 0.35 and diff.low <= diff.difference <= diff.high
    assert diff.difference == pytest.approx(float(np.mean(b - a)))
    assert diff.p_value < 0.001 and diff.examples == 50
    assert paired_bootstrap(b, a).high < 0  # the other way round: worse, the interval below 0


def test_paired_bootstrap_of_identical_runs_contains_zero_with_p_one() -> None:
    a = np.random.default_rng(2).uniform(size=30)
    diff = paired_bootstrap(a, a.copy())
    assert diff.low <= 0 <= diff.high and diff.p_value == 1.0 and diff.difference == 0


def test_paired_bootstrap_noise_only_contains_zero() -> None:
    rng = np.random.default_rng(3)
    a = rng.uniform(size=40)
    b = a + rng.choice([-0.01, 0.01], size=40)  # symmetric noise around no difference
    diff = paired_bootstrap(a, b)
    assert diff.low < 0 < diff.high and diff.p_value > 0.05


def test_bootstrap_fixed_seed_same_interval_other_seed_differs() -> None:
    values = np.random.default_rng(4).uniform(size=25)
    other = values + np.random.default_rng(5).normal(0, 0.1, size=25)
    assert paired_bootstrap(values, other, seed=7) == paired_bootstrap(values, other, seed=7)
    assert bootstrap_mean(values, seed=7) == bootstrap_mean(values, seed=7)
    assert bootstrap_mean(values, seed=7) != bootstrap_mean(values, seed=8)
    interval = bootstrap_mean(values)
    assert interval.low < float(values.mean()) < interval.high


# --- prediction directories built by hand -------------------------------------------------------------------------
def predictions(quality: float, n: int = 40, seed: int = 0) -> list[dict]:
    """n rows whose predictions keep each reference word with probability ``quality`` (else a random word)."""
    rows = []
    for i in range(n):
        reference = " ".join(random.Random(i).choices(WORDS, k=12))
        rng = random.Random(f"{seed}-{i}")
        words = [w if rng.random() < quality else rng.choice(WORDS) for w in reference.split()]
        rows.append({"id": f"ex{i:03d}", "prediction": " ".join(words), "reference": reference})
    return rows


def prediction_dir(path: Path, rows: list[dict], **metrics: object) -> Path:
    """A predict.py output directory: predictions.jsonl and metrics.json."""
    path.mkdir(parents=True)
    (path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (path / "metrics.json").write_text(json.dumps({"model": path.name, "data": "toy", "split": "test",
                                                   "rouge_tokenizer": "default", **metrics}))  # fmt: skip
    return path


def test_compare_cli_a_clearly_better_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows_a, rows_b = predictions(0.3), predictions(0.85, seed=1)
    a, b = prediction_dir(tmp_path / "a", rows_a), prediction_dir(tmp_path / "b", rows_b)
    out = tmp_path / "report"
    assert compare_cli.main([str(a), str(b), "--out", str(out), "--top", "3"]) == 0
    stdout = capsys.readouterr().out
    result = json.loads((out / "compare.json").read_text())
    (pair,) = result["pairs"]
    key = pair["keys"]["rouge_combined"]
    expected = [score_corpus([r["prediction"] for r in rows], [r["reference"] for r in rows])["rouge_combined"]
                for rows in (rows_a, rows_b)]  # fmt: skip
    assert key["baseline_mean"] == pytest.approx(expected[0]) and key["mean"] == pytest.approx(expected[1])
    assert key["difference"] == pytest.approx(expected[1] - expected[0])
    assert 0 < key["low"] < key["difference"] < key["high"] and key["significant"] and key["p_value"] < 0.01
    assert key["wins"] + key["ties"] + key["losses"] == 40 and key["wins"] > key["losses"]
    assert set(pair["keys"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum", "rouge_combined"}
    changed = pair["changed"]
    assert len(changed) == 3 and abs(changed[0]["delta"]) >= abs(changed[-1]["delta"])
    by_id = {r["id"]: r for r in rows_b}
    assert changed[0]["prediction"] == by_id[changed[0]["id"]]["prediction"]
    assert changed[0]["references"] == [by_id[changed[0]["id"]]["reference"]]
    assert f"{b.parent.name}/b vs {a.parent.name}/a: rouge_combined +" in stdout
    assert "b is better (the interval excludes 0)" in stdout
    assert "excludes 0" in stdout and f"wrote {out / 'compare.json'}" in stdout
    assert (a / "scores-default-mean.jsonl").is_file()  # per-example scores cached beside the predictions


def test_compare_identical_runs_contain_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = predictions(0.5)
    a = prediction_dir(tmp_path / "a", rows)
    b = prediction_dir(tmp_path / "b", list(reversed(rows)))  # the same predictions in another order
    comparison = compare_runs([load_run(a), load_run(b)], top=2)
    for key in comparison.pairs[0].keys:
        assert key.low <= 0 <= key.high and key.p_value == 1.0 and not key.significant, key
        assert (key.wins, key.ties, key.losses) == (0, 40, 0)
    assert comparison.pairs[0].changed == ()  # nothing changed: no example listed
    assert compare_cli.main([str(a), str(b), "--out", str(tmp_path)]) == 0
    assert "no difference the data can support (the interval contains 0)" in capsys.readouterr().out


def test_compare_three_runs_each_against_the_first(tmp_path: Path) -> None:
    runs = [load_run(prediction_dir(tmp_path / n, predictions(q, seed=s)))
            for n, q, s in (("base", 0.5, 0), ("better", 0.9, 1), ("worse", 0.1, 2))]  # fmt: skip
    comparison = compare_runs(runs, top=0, resamples=2000)
    assert [(Path(p.baseline).name, Path(p.run).name) for p in comparison.pairs] == [("base", "better"),
                                                                                      ("base", "worse")]  # fmt: skip
    better, worse = (p.key("rouge_combined") for p in comparison.pairs)
    assert better.low > 0 and worse.high < 0
    assert comparison.as_dict()["resamples"] == 2000 and comparison.pairs[0].changed == ()


def test_compare_mismatched_ids_one_line_exit_2_nothing_written(tmp_path: Path) -> None:
    rows = predictions(0.5)
    a = prediction_dir(tmp_path / "a", rows)
    b = prediction_dir(tmp_path / "b", [*rows[:7], {**rows[7], "id": "other"}, *rows[8:]])
    out = tmp_path / "report"
    proc = run_cli("-m", "sumlab.compare", str(a), str(b), "--out", str(out))
    assert_one_line_error(proc, f"'ex007' is in {a} but not in {b}", "different examples")
    assert not out.exists() and proc.stdout == ""


@pytest.mark.parametrize(
    "case, needles",
    [
        ("missing", ("no such directory",)),
        ("no_predictions", ("has no predictions.jsonl",)),
        ("references", ("example 'ex004' has different references",)),
        ("tokenizer", ("different ROUGE tokenizer settings", "--tokenizer")),
        ("damaged", ("line 3 is not valid JSON",)),
        ("one_run", ("at least two runs",)),
    ],
)
def test_compare_refuses_bad_input_in_one_line(case: str, needles: tuple[str, ...], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    rows = predictions(0.5)
    a = prediction_dir(tmp_path / "a", rows)
    b = tmp_path / "b"
    if case == "no_predictions":
        prediction_dir(b, rows)
        (b / "predictions.jsonl").unlink()
    elif case == "references":
        prediction_dir(b, [{**r, "reference": r["reference"] + " extra" if r["id"] == "ex004" else r["reference"]}
                           for r in rows])  # fmt: skip
    elif case == "tokenizer":
        prediction_dir(b, rows, rouge_tokenizer="whitespace")
    elif case == "damaged":
        prediction_dir(b, rows)
        lines = (b / "predictions.jsonl").read_text().splitlines()
        (b / "predictions.jsonl").write_text("\n".join([*lines[:2], lines[2][:20], *lines[3:]]) + "\n")
    args = [str(a)] if case == "one_run" else [str(a), str(b)]
    assert compare_cli.main([*args, "--out", str(tmp_path / "report")]) == 2
    captured = capsys.readouterr()
    the_error_line(captured.err, *needles)
    assert not (tmp_path / "report").exists() and captured.out == ""


def test_compare_explicit_tokenizer_scores_both_runs_alike(tmp_path: Path) -> None:
    rows = predictions(0.6)
    a = prediction_dir(tmp_path / "a", rows)
    b = prediction_dir(tmp_path / "b", rows, rouge_tokenizer="whitespace")
    comparison = compare_runs([load_run(a), load_run(b)], tokenizer="whitespace", top=0)
    assert comparison.tokenizer == "whitespace" and comparison.pairs[0].key("rouge1").p_value == 1.0
    assert (a / "scores-whitespace-mean.jsonl").is_file()


def test_make_compare_target_runs_the_cli(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    a, b = (prediction_dir(tmp_path / n, predictions(0.5, seed=s)) for n, s in (("a", 0), ("b", 1)))
    proc = subprocess.run(["make", "-s", "compare", f"A={a}", f"B={b}", f"PY={sys.executable}",
                           f"ARGS=--out {tmp_path} --top 1"], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "compare.json").read_text())["examples"] == 40


@pytest.mark.skipif(not (DIALOGSUM / "test.jsonl").is_file(), reason="needs ../shared/data/dialogsum")
def test_compare_on_dialogsum_test_with_three_references(tmp_path: Path) -> None:
    lines = (DIALOGSUM / "test.jsonl").read_text(encoding="utf-8").splitlines()[:100]
    rows = [json.loads(line) for line in lines]
    base = [{"id": r["id"], "prediction": r["dialogue"].splitlines()[0], "references": r["references"],
             "text": r["dialogue"]} for r in rows]  # fmt: skip
    oracle = [{**b, "prediction": r["references"][0]} for b, r in zip(base, rows, strict=True)]  # a human summary
    a, b = prediction_dir(tmp_path / "first_turn", base), prediction_dir(tmp_path / "human", oracle)
    comparison = compare_runs([load_run(a), load_run(b)], top=1)
    key = comparison.pairs[0].key("rouge_combined")
    assert key.significant and key.low > 0.1 and comparison.examples == 100
    expected = score_corpus([r["prediction"] for r in oracle], [r["references"] for r in rows])["rouge_combined"]
    assert key.mean == pytest.approx(expected)  # mean over the three references, as metrics.multi_reference=mean
    assert length_stats(load_run(a))["input/reference"]["p50"] > 3  # dialogues are several times their summaries
