"""Minimum-Bayes-risk decoding and ensembles: the selection itself (against a slow reference), predict.py's
decoding=mbr and model_dir lists (two families, two ranks, a kill), select_only, and `python -m sumlab.ensemble`."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import CONF, ROOT, compose_config, the_error_line

from sumlab.config.rules import check_decoding
from sumlab.core.errors import SumlabError
from sumlab.text import mbr
from sumlab.text.rouge import score_pair


# --- selection ----------------------------------------------------------------------------------------
def reference_expected(candidates: list[str], utility: str, tokenizer: str = "default", weights=None) -> list[float]:
    """The slow way: score_pair for every ordered pair (a candidate with itself too), weighted mean."""
    weights = weights or [1.0] * len(candidates)
    expected = []
    for a in candidates:
        total = 0.0
        for b, w in zip(candidates, weights, strict=True):
            s = score_pair(a, b, tokenizer)
            total += w * ((s["rouge1"] + s["rouge2"] + s["rougeL"]) / 3 if utility == "rouge_combined" else s[utility])
        expected.append(total / sum(weights))
    return expected


def reference_pick(expected: list[float]) -> int:
    best = max(expected)
    return next(i for i, e in enumerate(expected) if e >= best - mbr.TIE)


def test_hand_computed_case() -> None:
    # ROUGE-1 F1 = 2 * shared words / (words of both): a-b 2*3/7, a-c 2*2/6, b-c 2*2/5, d shares nothing; each
    # candidate scores 1 against itself
    candidates = ["w x y z", "w x y", "w x", "p q"]
    f = {(0, 1): Fraction(6, 7), (0, 2): Fraction(2, 3), (1, 2): Fraction(4, 5)}
    u = lambda i, j: Fraction(1) if i == j else f.get((min(i, j), max(i, j)), Fraction(0))  # noqa: E731
    want = [sum(u(i, j) for j in range(4)) / 4 for i in range(4)]  # 53/84, 93/140, 37/60, 1/4
    picked = mbr.select(candidates, "rouge1", "whitespace")
    assert picked.expected == pytest.approx([float(w) for w in want], abs=1e-12)
    assert picked.index == 1 and want[1] == max(want)


def test_weights_change_the_pick() -> None:
    # equal weights: "a b c" agrees most with the rest; weighting the last two (another model) 4x moves the pick there
    candidates = ["a b", "a b c", "c d e", "c d"]
    assert mbr.select(candidates, "rouge1", "whitespace").index == 1
    weighted = mbr.select(candidates, "rouge1", "whitespace", weights=[1, 1, 4, 4])
    assert weighted.index == 3
    assert weighted.expected == pytest.approx(reference_expected(candidates, "rouge1", "whitespace", [1, 1, 4, 4]))
    with pytest.raises(ValueError, match="positive"):
        mbr.select(candidates, weights=[1, 0, 1, 1])


def test_ties_go_to_the_earliest_candidate() -> None:
    assert mbr.select(["the cat sat", "the cat ran", "a dog barked"], "rouge1").index == 0  # first two tie
    assert mbr.select(["the cat ran", "the cat sat", "a dog barked"], "rouge1").index == 0
    assert mbr.select(["x y", "z", "x y", "x y"], "rougeL").index == 0  # duplicates: the first of them
    assert mbr.select(["only one"]).index == 0 and mbr.select(["only one"]).expected == [1.0]
    assert mbr.select(["", "", ""]).index == 0  # empty candidates score 0 against anything, as in score_pair
    assert mbr.select(["", "x"]).index == 1  # (against itself too)
    # two candidates: equal weights tie (the first is kept); a weight is a vote
    assert mbr.select(["a b c", "a b d"]).index == 0
    assert mbr.select(["a b c", "a b d"], weights=[1, 2]).index == 1


@pytest.mark.parametrize("utility", mbr.UTILITIES)
def test_equals_slow_reference_on_random_candidates(utility: str) -> None:
    rng = random.Random(utility)
    words = "the a cat dog sat ran on mat park walked running runs quickly . , !".split()
    for _ in range(40):
        n = rng.randint(1, 9)
        candidates = [" ".join(rng.choices(words, k=rng.randint(0, 12))) for _ in range(n)]
        weights = [rng.choice([1.0, 0.5, 2.0]) for _ in range(n)] if rng.random() < 0.5 else None
        got = mbr.select(candidates, utility, weights=weights)
        expected = reference_expected(candidates, utility, "default", weights)
        assert got.expected == pytest.approx(expected, abs=1e-9)
        assert got.index == reference_pick(expected)


def test_korean_candidates_use_the_run_tokenizer() -> None:
    pytest.importorskip("kiwipiepy")
    # Eojeol (space-separated) forms: only the first two share words. Morphemes (kiwi): 친구/학교 are shared by three.
    candidates = ["동생은 집에서 잤다", "동생은 집에서 놀았다",
                  "친구가 학교에서 공부했다", "친구는 학교에 갔다", "친구와 학교를 떠났다"]  # fmt: skip
    assert mbr.select(candidates, "rougeL", "default").index == 0
    kiwi = mbr.select(candidates, "rougeL", "kiwi")
    assert kiwi.index == 2
    assert kiwi.expected == pytest.approx(reference_expected(candidates, "rougeL", "kiwi"), abs=1e-9)


def test_selector_reads_the_texts_as_rouge_does() -> None:
    from sumlab.generation.selection import Pooled, Selector

    pool = [Pooled("a", 0, "x <usr> y"), Pooled("a", 1, "x y"), Pooled("b", 0, "x y z")]
    # "<usr>" is a word of the first: F1 0.8 against "x y", 2/3 against "x y z"
    want = [(1 + 0.8 + 2 / 3) / 3, (0.8 + 1 + 0.8) / 3, (2 / 3 + 0.8 + 1) / 3]
    assert Selector("rouge1", "whitespace")(pool) == (1, pytest.approx(want))
    picked, removed = Selector("rouge1", "whitespace", remove=["<usr>"])(pool)  # metrics.remove_tokens
    assert picked == 0 and removed[0] == removed[1]  # the first two read alike: the tie goes to the first


# --- configuration ------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "decoding").glob("*.yaml")))
def test_decoding_presets_compose_and_validate(preset: str, tmp_path: Path) -> None:
    cfg = compose_config([f"decoding={preset}", "model_dir=some/run"], config_name="predict", run_dir=tmp_path)
    check_decoding(cfg.decoding, 1)
    assert str(cfg.run_name).startswith("run-synthetic-test-")  # the run name resolves (it hashes decoding)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["decoding=mbr", "decoding.num_beams=4"], "decoding.num_beams=4 is below decoding.candidates=16"),
        (["decoding=mbr", "decoding.utility=bleu"], "decoding.utility=bleu"),
        (["decoding=mbr_sampling", "decoding.top_p=0"], "top_p must be in (0, 1]"),
        (["decoding=mbr_both", "decoding.num_beams=4"], "decoding.num_beams=4 is below decoding.candidates=16"),
        (["decoding=mbr_both", "decoding.temperature=0"], "temperature above 0"),
        (["decoding=mbr", "decoding.weights=[1,2]"], "one per model_dir entry"),
        (["decoding=mbr", "decoding.select_only=true"], "decoding.candidates_from"),
    ],
)
def test_impossible_decoding_is_one_error_line(overrides: list[str], needle: str, tmp_path: Path, capsys) -> None:
    from sumlab.predict import run

    cfg = compose_config([*overrides, f"model_dir={tmp_path}", f"output.dir={tmp_path}"], config_name="predict")
    with pytest.raises(SystemExit) as ex:
        run(cfg)
    assert ex.value.code == 2
    the_error_line(capsys.readouterr().err, needle)
    assert not list(tmp_path.iterdir())  # refused before any work


def test_run_names_differ_by_decoding_and_models(tmp_path: Path) -> None:
    names = {
        str(compose_config([*o, "model_dir=a/runA"], config_name="predict", run_dir=tmp_path).run_name)
        for o in ([], ["decoding=mbr"], ["decoding=mbr", "decoding.utility=rouge1"])
    }
    assert len(names) == 3
    both = compose_config(["model_dir=[a/runA,b/runB]"], config_name="predict", run_dir=tmp_path)
    assert str(both.run_name).startswith("runA+runB-")
    with pytest.raises(SumlabError, match="one per model_dir entry"):
        check_decoding(compose_config(["decoding.weights=[1]"], config_name="predict").decoding, 2)


# --- python -m sumlab.ensemble ------------------------------------------------------------------------
IDS = ["d0", "d1", "d2"]
REFERENCES = {"d0": "the cat sat on the mat", "d1": "a dog ran in the park", "d2": "birds sing at dawn"}


def write_jsonl(path: Path, predictions: dict[str, str]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "prediction": p}) + "\n" for i, p in predictions.items()))
    return path


def write_csv(path: Path, predictions: dict[str, str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["fname", "summary"], *predictions.items()])
    return path


def test_ensemble_command_on_jsonl_and_csv(tmp_path: Path, capsys) -> None:
    from sumlab.ensemble import main

    a = write_jsonl(tmp_path / "a.jsonl", {"d0": "the cat sat on a mat", "d1": "a dog", "d2": "birds sing at dawn"})
    # CSV rows in another order: ids are matched, not positions
    b = write_csv(tmp_path / "b.csv", {"d2": "birds sing", "d0": "the cat sat on the mat", "d1": "a dog ran in park"})
    c = write_jsonl(tmp_path / "c.jsonl", {"d0": "the cat sat on the mat", "d1": "dog ran in the park", "d2": "fish"})
    refs = write_jsonl(tmp_path / "refs.jsonl", {})
    refs.write_text("".join(json.dumps({"id": i, "summary": s}) + "\n" for i, s in REFERENCES.items()))
    out = tmp_path / "out"
    assert main([str(a), str(b), str(c), "--out", str(out), "--references", str(refs)]) == 0
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in predictions] == IDS  # the first file's order
    inputs = [read_any(f) for f in (a, b, c)]
    pools = {i: [p[i] for p in inputs] for i in IDS}
    for p in predictions:  # each pick is MBR's over the three files' candidates
        assert p["prediction"] == pools[p["id"]][mbr.select(pools[p["id"]]).index]
        assert p["reference"] == REFERENCES[p["id"]]
    assert predictions[0]["prediction"] == "the cat sat on the mat"  # two files agree: their summary wins
    with open(out / "predictions.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table == [["fname", "summary"], *([p["id"], p["prediction"]] for p in predictions)]
    candidates = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert len(candidates) == 9 and sum(c["selected"] for c in candidates) == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["members"]) == {str(a), str(b), str(c)}
    assert metrics["rouge"]["rougeL"] >= max(m["rougeL"] for m in metrics["members"].values())
    assert metrics["changed_share"] == pytest.approx(2 / 3, abs=1e-4)  # d0 and d1 replaced the first file's summary


def read_any(path: Path) -> dict[str, str]:
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            return {row["fname"]: row["summary"] for row in csv.DictReader(f)}
    return {r["id"]: r["prediction"] for r in map(json.loads, path.read_text().splitlines())}


def test_ensemble_refuses_mismatched_ids_and_writes_nothing(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", {"d0": "x", "d1": "y", "d2": "z"})
    b = write_csv(tmp_path / "b.csv", {"d0": "x", "d1": "y", "d9": "z"})
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "sumlab.ensemble", str(a), str(b), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    the_error_line(proc.stderr, "'d2'", str(b))
    assert not out.exists()


# --- predict.py decoding=mbr and ensembles (tiny models trained here) -----------------------------------
N = 7
BASE = [f"data.synthetic_sizes.test={N}", "batch_size=3", "generation=greedy", "generation.max_new_tokens=10",
        "trainer.enable_progress_bar=false"]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from test_predict import make_run

    return make_run(tmp_path_factory.mktemp("t5"), "t5", steps=20), make_run(tmp_path_factory.mktemp("gpt2"), "gpt2",
                                                                               steps=20)  # fmt: skip


def predict_here(out: Path, *overrides: str) -> dict:
    from sumlab.predict import run

    return run(compose_config([*BASE, *overrides, f"output.dir={out}", f"paths.run_dir={out}"], config_name="predict"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def without_scores(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "score"} for r in rows]


def synthetic_ids(n: int = N) -> list[str]:
    from sumlab.data import synthetic

    return [r["id"] for r in synthetic.generate_split("test", n, 42)]


def assert_selected(candidates: list[dict], predictions: list[dict], per_input: int) -> None:
    """Every input's candidates are together; exactly one is kept, the prediction, with the highest expected utility."""
    assert len(candidates) == per_input * len(predictions)
    for k, prediction in enumerate(predictions):
        pool = candidates[k * per_input : (k + 1) * per_input]
        assert {c["id"] for c in pool} == {prediction["id"]}
        kept = [c for c in pool if c["selected"]]
        assert len(kept) == 1 and kept[0]["candidate"] == prediction["prediction"]
        assert kept[0]["expected_utility"] == max(c["expected_utility"] for c in pool)


@pytest.mark.slow
def test_ensemble_of_two_families_then_select_only(runs: tuple[Path, Path], tmp_path: Path) -> None:
    t5, gpt2 = runs
    out = tmp_path / "both"
    metrics = predict_here(out, f"model_dir=[{t5},{gpt2}]", "decoding=mbr", "decoding.candidates=3")
    predictions = read_jsonl(out / "predictions.jsonl")
    assert [p["id"] for p in predictions] == synthetic_ids()
    candidates = read_jsonl(out / "candidates.jsonl")
    assert_selected(candidates, predictions, 6)
    assert [(c["model"], c["index"]) for c in candidates[:6]] == [(str(t5), i) for i in range(3)] + [
        (str(gpt2), i) for i in range(3)
    ]  # model order, then beam order
    assert [m["family"] for m in metrics["models"]] == ["seq2seq", "causal"]
    assert all(m["generated_now"] == N for m in metrics["models"])
    assert metrics["candidates_per_input"] == 6 and 0 <= metrics["changed_share"] <= 1
    for key in ("generation_seconds", "selection_seconds", "selection_ms_per_input", "tokenize_ms_per_input"):
        assert metrics[key] >= 0
    assert metrics["decoding"]["num_beams"] == 3 and "rouge" in metrics

    # One output per model (decoding=beam): with two models, a weight is a vote
    voted = tmp_path / "voted"
    predict_here(voted, f"model_dir=[{t5},{gpt2}]", "decoding.weights=[1,2]")
    pairs = read_jsonl(voted / "candidates.jsonl")
    assert [c["model"] for c in pairs] == [str(t5), str(gpt2)] * N
    texts = [(a["candidate"], b["candidate"]) for a, b in zip(pairs[::2], pairs[1::2], strict=True)]
    kept = [p["prediction"] for p in read_jsonl(voted / "predictions.jsonl")]
    assert kept == [pair[mbr.select(pair, weights=[1, 2]).index] for pair in texts]
    assert sum(k != a for k, (a, _) in zip(kept, texts, strict=True)) > 0  # the weighted second model's were kept

    # Select again from the kept candidates: another utility, only the GPT-2 run's, without loading a model
    again = tmp_path / "again"
    metrics = predict_here(again, f"model_dir=[{gpt2}]", "decoding=mbr", "decoding.utility=rouge1",
                           "decoding.select_only=true", f"decoding.candidates_from={out}")  # fmt: skip
    chosen = read_jsonl(again / "candidates.jsonl")
    assert {c["model"] for c in chosen} == {str(gpt2)} and metrics["models"] == []
    assert_selected(chosen, read_jsonl(again / "predictions.jsonl"), 3)
    for k in range(N):
        pool = [c["candidate"] for c in chosen[k * 3 : (k + 1) * 3]]
        assert read_jsonl(again / "predictions.jsonl")[k]["prediction"] == pool[mbr.select(pool, "rouge1").index]

    # Pooling two runs generated apart (candidates_from a list) selects as the ensemble run did
    for name, model in (("t5", t5), ("gpt2", gpt2)):
        predict_here(tmp_path / name, f"model_dir={model}", "decoding=mbr", "decoding.candidates=3")
    pooled = tmp_path / "pooled"
    predict_here(pooled, f"model_dir=[{t5},{gpt2}]", "decoding=mbr", "decoding.select_only=true",
                 f"decoding.candidates_from=[{tmp_path / 't5'},{tmp_path / 'gpt2'}]")  # fmt: skip
    assert read_jsonl(pooled / "predictions.jsonl") == predictions
    assert without_scores(read_jsonl(pooled / "candidates.jsonl")) == without_scores(candidates)


@pytest.mark.slow
def test_one_models_n_best_and_samples_pool_in_one_run_or_by_select_only(runs: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:  # fmt: skip
    """decoding=mbr_both (source=both) pools a model's n-best and its samples; README's recipe does the same from
    two outputs generated apart (backend hf: samples seeded per batch, so both runs draw the same ones)."""
    t5, _ = runs
    common = [f"model_dir={t5}", "decoding.candidates=3", "backend=hf"]
    predict_here(tmp_path / "nbest", *common, "decoding=mbr")
    predict_here(tmp_path / "samples", *common, "decoding=mbr_sampling")
    pooled = tmp_path / "pooled"
    metrics = predict_here(pooled, *common, "decoding=mbr", "decoding.select_only=true",
                           f"decoding.candidates_from=[{tmp_path / 'nbest'},{tmp_path / 'samples'}]")  # fmt: skip
    parts = [read_jsonl(tmp_path / part / "candidates.jsonl") for part in ("nbest", "samples")]
    candidates, predictions = read_jsonl(pooled / "candidates.jsonl"), read_jsonl(pooled / "predictions.jsonl")
    assert metrics["candidates_per_input"] == 6
    assert_selected(candidates, predictions, 6)
    for k, prediction in enumerate(predictions):
        texts = [c["candidate"] for part in parts for c in part[k * 3 : (k + 1) * 3]]  # the n-best, then the samples
        assert [c["candidate"] for c in candidates[k * 6 : (k + 1) * 6]] == texts
        assert prediction["prediction"] == texts[mbr.select(texts).index]

    both = predict_here(tmp_path / "both", *common, "decoding=mbr_both")
    assert read_jsonl(tmp_path / "both" / "predictions.jsonl") == predictions
    assert without_scores(read_jsonl(tmp_path / "both" / "candidates.jsonl")) == without_scores(candidates)
    assert [(m["model_dir"], m["source"]) for m in both["models"]] == [(str(t5), "beam"), (str(t5), "sampling")]
    assert both["candidates_per_input"] == 6 and both["decoding"]["num_beams"] == 3


@pytest.mark.slow
def test_select_only_refuses_missing_or_other_candidates(runs: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    t5, _ = runs
    out = tmp_path / "one"
    predict_here(out, f"model_dir={t5}", "decoding=mbr", "decoding.candidates=2")
    cases = [
        ([f"model_dir={t5}", f"decoding.candidates_from={tmp_path / 'nowhere'}"], "does not exist"),
        ([f"model_dir={t5}", f"decoding.candidates_from={out}", "data.synthetic_sizes.test=8"], "does not match"),
        (["model_dir=other/run", f"decoding.candidates_from={out}"], "has no candidates from model 'other/run'"),
    ]
    for overrides, needle in cases:
        with pytest.raises(SystemExit):
            predict_here(tmp_path / "again", "decoding=mbr", "decoding.select_only=true", *overrides)
        the_error_line(capsys.readouterr().err, needle)
        assert not (tmp_path / "again" / "predictions.jsonl").exists()
        assert not (tmp_path / "again" / "candidates.jsonl").exists()


@pytest.mark.slow
def test_hf_and_ctranslate2_give_the_same_n_best(runs: tuple[Path, Path], tmp_path: Path) -> None:
    t5, _ = runs
    for backend in ("hf", "ctranslate2"):
        metrics = predict_here(tmp_path / backend, f"model_dir={t5}", "decoding=mbr", "decoding.candidates=4",
                               f"backend={backend}")  # fmt: skip
        assert metrics["models"][0]["backend"] == backend
    hf, ct2 = (read_jsonl(tmp_path / b / "candidates.jsonl") for b in ("hf", "ctranslate2"))
    assert without_scores(hf) == without_scores(ct2)  # fp32: the same beams, the same pick
    assert all(c["score"] is None for c in hf) and all(isinstance(c["score"], float) for c in ct2)
    assert len({c["candidate"] for c in ct2[:4]}) == 4  # an n-best, not one beam four times


DDP2 = ("trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp")


@pytest.mark.slow
def test_two_ranks_equal_one_with_sampled_candidates_of_two_models(runs: tuple[Path, Path], tmp_path: Path) -> None:
    t5, gpt2 = runs
    # hf: sampling seeded per batch (CTranslate2 keeps one random stream per engine: see predict.mbr.CandidateModule)
    args = [*BASE, f"model_dir=[{t5},{gpt2}]", "decoding=mbr_sampling", "decoding.candidates=3", "backend=hf"]
    predict_here(tmp_path / "one", *args[len(BASE) :])
    two = subprocess.run([sys.executable, "predict.py", *args, f"output.dir={tmp_path / 'two'}", *DDP2], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert two.returncode == 0, two.stderr[-2000:]
    assert read_jsonl(tmp_path / "two" / "predictions.jsonl") == read_jsonl(tmp_path / "one" / "predictions.jsonl")
    one_c, two_c = (read_jsonl(tmp_path / d / "candidates.jsonl") for d in ("one", "two"))
    assert without_scores(two_c) == without_scores(one_c)  # the same samples: seeded per batch, not per rank
    assert len({c["candidate"] for c in one_c}) > N  # samples that differ
    for k in (0, 1):  # each model's inputs were shared by both ranks, each input generated once
        shards = sorted((tmp_path / "two" / "models" / str(k) / "shards").glob("rank*.jsonl"))
        assert [s.name for s in shards] == ["rank0.jsonl", "rank1.jsonl"]
        assert sum(len(s.read_text().splitlines()) for s in shards) == N


@pytest.mark.slow
def test_killed_mbr_prediction_resumes_to_the_same_files(runs: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    t5, _ = runs
    n = 48
    args = [f"data.synthetic_sizes.test={n}", "batch_size=1", "generation.max_new_tokens=16", f"model_dir={t5}",
            "decoding=mbr", "decoding.candidates=8", "trainer.enable_progress_bar=false"]  # fmt: skip
    full = predict_here(tmp_path / "full", *args)
    out = tmp_path / "killed"
    shard = out / "models" / "0" / "shards" / "rank0.jsonl"
    proc = subprocess.Popen([sys.executable, "predict.py", *BASE, *args, f"output.dir={out}"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not (shard.is_file() and shard.read_bytes().count(b"\n") >= 3) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)  # while the shard is being written
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read()[-2000:]
    done = shard.read_bytes().count(b"\n")
    assert 3 <= done < n and not (out / "predictions.jsonl").exists() and not (out / "candidates.jsonl").exists()

    with pytest.raises(SystemExit):  # the shards' fingerprint covers the candidate settings
        predict_here(out, *args, "decoding.candidates=4")
    the_error_line(capsys.readouterr().err, "written for a different generation")
    resumed = predict_here(out, *args)
    assert read_jsonl(out / "predictions.jsonl") == read_jsonl(tmp_path / "full" / "predictions.jsonl")
    assert without_scores(read_jsonl(out / "candidates.jsonl")) == without_scores(
        read_jsonl(tmp_path / "full" / "candidates.jsonl")
    )
    assert shard.read_bytes().count(b"\n") == n  # nothing generated twice
    assert (resumed["models"][0]["resumed"], resumed["models"][0]["generated_now"]) == (done, n - done)
    assert resumed["rouge"] == full["rouge"]
