"""predict.py: order, DDP, resume, outputs, model kinds and bad inputs (tiny models trained here in seconds)."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, compose_config, run_cli
from omegaconf import OmegaConf

from sumlab.data.bucketing import BucketBatchSampler, length_batches, padding_fraction
from sumlab.predict import writer
from sumlab.predict.writer import read_predictions
from sumlab.text.rouge import score_corpus

N = 11  # odd, and not a multiple of the batch size
BACKENDS = ("ctranslate2", "hf")
BASE = ["data.synthetic_sizes.test=11", "batch_size=3", "generation=greedy", "generation.max_new_tokens=12",
        "trainer.enable_progress_bar=false"]  # fmt: skip


def make_run(root: Path, arch: str, steps: int = 60) -> Path:
    """A sumlab-shaped run directory (export/, .hydra/config.yaml, a checkpoint) with a briefly trained tiny model."""
    from sumlab.data import synthetic
    from sumlab.family import make_family
    from sumlab.models import add_tags, find_tags, tiny_model, train_tiny_tokenizer

    rows = synthetic.generate_split("train", 256, 42)
    texts = [t for r in rows for t in (r["dialogue"], r["summary"])]
    pattern = r"#[A-Za-z][A-Za-z0-9_]*#"
    tok = train_tiny_tokenizer(arch, 400, [re.sub(pattern, " ", t) for t in texts])
    add_tags(None, tok, find_tags(texts, pattern))
    torch.manual_seed(0)
    tiny = OmegaConf.create({"arch": arch, "d_model": 64, "num_layers": 1, "num_heads": 2, "d_ff": 128,
                             "vocab_size": 400, "dropout": 0.0, "max_positions": 512})  # fmt: skip
    model = tiny_model(tiny, tok)
    family = "causal" if arch == "gpt2" else "seq2seq"
    prefix = "summarize: " if arch == "t5" else ""
    fam = make_family(family, tok, prefix, "\nTL;DR:\n")
    feats = [{"idx": i, **fam.features(r["dialogue"], r["summary"], 192, 48)} for i, r in enumerate(rows)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        loss = fam.loss(
            model, fam.collate([feats[i] for i in torch.randint(len(feats), (16,), generator=g).tolist()]), 0.0
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(root / "export")
    tok.save_pretrained(root / "export")
    (root / ".hydra").mkdir(parents=True)
    OmegaConf.save(
        OmegaConf.create({"model": {"family": family, "prefix": prefix, "separator": "\nTL;DR:\n"},
                          "metrics": {"tokenizer": "default"}}),
        root / ".hydra" / "config.yaml",
    )  # fmt: skip
    (root / "checkpoints").mkdir()
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, root / "checkpoints" / "last.ckpt"
    )
    return root


@pytest.fixture(scope="module")
def t5_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("t5run"), "t5")


def predict_cli(*overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli("predict.py", *overrides, env=env, timeout=300)


def predict_here(out: Path, *overrides: str) -> dict:
    from sumlab.predict.runner import run

    return run(compose_config([*BASE, *overrides, f"output.dir={out}", f"paths.run_dir={out}"], config_name="predict"))


def source_lengths(run: Path, n: int = N) -> list[int]:
    """Token ids per synthetic test input as the run's model reads them (prefix and tags included)."""
    from sumlab.data import synthetic
    from sumlab.family import make_family
    from sumlab.models.loading import load

    cfg = compose_config([*BASE, f"model_dir={run}"], config_name="predict")
    loaded = load(str(run), cfg.model, cfg.paths.cache_dir)
    family = make_family(loaded.family, loaded.tokenizer, loaded.prefix, loaded.separator)
    limits = (cfg.data.max_source_length, cfg.data.max_target_length)
    return [
        len(family.features(r["dialogue"], None, *limits)["input_ids"]) for r in synthetic.generate_split("test", n, 42)
    ]


def synthetic_ids(n: int = N) -> list[str]:
    from sumlab.data import synthetic

    return [r["id"] for r in synthetic.generate_split("test", n, 42)]


# --- bucketing and merge (no model) ----------------------------------------------------------------
def test_length_batches_sorted_and_complete() -> None:
    lengths = [5, 9, 1, 9, 3, 7, 2]
    batches = length_batches(lengths, 3)
    assert batches == [[1, 3, 5], [0, 4, 6], [2]]  # longest first, ties in input order
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert length_batches(lengths, 3, sort=False) == [[0, 1, 2], [3, 4, 5], [6]]
    assert padding_fraction(lengths, batches) < padding_fraction(lengths, length_batches(lengths, 3, sort=False))


def test_ranks_share_whole_batches_exactly_once() -> None:
    lengths = list(range(23))
    shares = [list(BucketBatchSampler(lengths, 4, rank=r, world_size=3)) for r in range(3)]
    flat = [i for s in shares for b in s for i in b]
    assert sorted(flat) == list(range(23))  # no example twice, none dropped, no padding duplicates
    single = list(BucketBatchSampler(lengths, 4))
    assert sorted(b for s in shares for b in map(tuple, s)) == sorted(map(tuple, single))  # the same batches


def test_merge_restores_input_order_and_checks_ids(tmp_path: Path) -> None:
    examples = [{"id": f"e{i}", "text": "x" * (i * 7 % 5 + 1), "summary": f"s{i}"} for i in range(7)]
    lengths = [len(e["text"]) for e in examples]
    (tmp_path / "shards").mkdir()
    with open(tmp_path / "shards" / "rank0.jsonl", "w") as f:  # written in bucketed order
        for batch in length_batches(lengths, 2):
            for i in batch:
                f.write(json.dumps({"id": examples[i]["id"], "prediction": f"p{i}"}) + "\n")
        f.write('{"id": "e0", "predic')  # a line cut by a kill: ignored
    merged = writer.merge(tmp_path, examples)
    assert [r["id"] for r in merged] == [e["id"] for e in examples]
    assert [r["prediction"] for r in merged] == [f"p{i}" for i in range(7)]
    assert [r["reference"] for r in merged] == [e["summary"] for e in examples]
    with pytest.raises(Exception, match="1 input ids have no prediction"):
        writer.merge(tmp_path, [*examples, {"id": "new", "text": "t", "summary": None}])
    with pytest.raises(Exception, match="not in the input"):
        writer.merge(tmp_path, examples[1:])


# --- end to end ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_bucketed_order_restored_and_outputs_match_unsorted(t5_run: Path, tmp_path: Path, backend: str) -> None:
    sorted_metrics = predict_here(tmp_path / "sorted", f"model_dir={t5_run}", f"backend={backend}")
    plain_metrics = predict_here(
        tmp_path / "plain", f"model_dir={t5_run}", "sort_by_length=false", "batch_size=1", f"backend={backend}"
    )
    assert sorted_metrics["backend"] == backend
    a, b = read_predictions(tmp_path / "sorted"), read_predictions(tmp_path / "plain")
    assert [r["id"] for r in a] == synthetic_ids()
    assert a == b  # every prediction sits next to its own id and reference
    assert len({r["prediction"] for r in a}) > 1  # a model that says one thing would prove nothing
    assert sorted_metrics["rouge"] == score_corpus([r["prediction"] for r in a], [r["reference"] for r in a])
    assert json.loads((tmp_path / "sorted" / "metrics.json").read_text())["examples"] == N
    # the speed and length figures are what the outputs and batches say
    generated = [record["gen_len"] for record in writer.read_shards(tmp_path / "sorted").values()]
    assert len(generated) == N
    assert 0 < min(generated) and max(generated) <= 12  # generation.max_new_tokens
    assert sorted_metrics["mean_generated_length"] == round(sum(generated) / N, 2)
    seconds = sorted_metrics["predict_seconds"]
    assert sorted_metrics["samples_per_second"] * seconds == pytest.approx(N, rel=0.02)
    assert sorted_metrics["generated_tokens_per_second"] * seconds == pytest.approx(sum(generated), rel=0.02)
    lengths = source_lengths(t5_run, N)
    assert sorted_metrics["padding_fraction"] == round(padding_fraction(lengths, length_batches(lengths, 3)), 4) > 0
    assert plain_metrics["padding_fraction"] == 0.0  # batches of one are never padded


DDP2 = ("trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp")


def tokenized_lines(*outputs: str) -> int:
    """How many times a process printed that it tokenized a split (the cache was built, not reused)."""
    return sum(out.count("data: tokenized ") for out in outputs)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_two_processes_equal_one(t5_run: Path, tmp_path: Path, backend: str) -> None:
    predict_here(tmp_path / "one", f"model_dir={t5_run}", "backend=hf")
    cache = tmp_path / "cache"  # empty: the two ranks share one build of the tokenized split
    two = predict_cli(*BASE, f"model_dir={t5_run}", f"output.dir={tmp_path / 'two'}", f"backend={backend}", *DDP2,
                      env={"SUMLAB_CACHE_DIR": str(cache)})  # fmt: skip
    assert two.returncode == 0, two.stderr[-2000:]
    assert tokenized_lines(two.stdout, two.stderr) == 1
    a, b = read_predictions(tmp_path / "one"), read_predictions(tmp_path / "two")
    assert [r["id"] for r in b] == synthetic_ids()  # every id exactly once, in input order
    assert a == b  # greedy text identical (to hf in one process)
    shards = sorted((tmp_path / "two" / "shards").glob("rank*.jsonl"))
    assert [s.name for s in shards] == ["rank0.jsonl", "rank1.jsonl"] and all(s.stat().st_size for s in shards)
    assert writer.count_shard_lines(tmp_path / "two") == N
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (metrics["backend"], metrics["devices"], metrics["generated_now"]) == (backend, 2, N)


@pytest.mark.slow
def test_fewer_batches_than_ranks(t5_run: Path, tmp_path: Path) -> None:
    """One input, one batch for two ranks: the rank without a batch writes an empty shard instead of crashing."""
    args = [a for a in BASE if not a.startswith("data.synthetic_sizes.test=")]
    res = predict_cli(*args, "data.synthetic_sizes.test=1", f"model_dir={t5_run}", f"output.dir={tmp_path}", *DDP2)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [r["id"] for r in read_predictions(tmp_path)] == synthetic_ids(1)
    assert (tmp_path / "shards" / "rank1.jsonl").read_text() == ""
    assert writer.count_shard_lines(tmp_path) == 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_node_loopback_equals_one_process(t5_run: Path, tmp_path: Path) -> None:
    """Two single-process "nodes" on 127.0.0.1 under torchrun (gloo, CPU), as a 2-machine job would run."""
    import os
    import sys

    from conftest import ROOT

    predict_here(tmp_path / "one", f"model_dir={t5_run}")
    port = _free_port()
    args = [*BASE, f"model_dir={t5_run}", f"output.dir={tmp_path / 'two'}", "trainer.accelerator=cpu",
            "trainer.devices=1", "trainer.num_nodes=2", "trainer.strategy=ddp"]  # fmt: skip
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc-per-node=1",
                f"--node-rank={rank}",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                "predict.py",
                *args,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "SUMLAB_CACHE_DIR": str(tmp_path / "cache")},
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), [err[-2000:] for _, err in outputs]
    # both nodes started at once on an empty cache: one tokenized the split, the other waited for it
    assert tokenized_lines(*(text for pair in outputs for text in pair)) == 1
    assert [r["id"] for r in read_predictions(tmp_path / "two")] == synthetic_ids()
    assert read_predictions(tmp_path / "two") == read_predictions(tmp_path / "one")
    assert writer.count_shard_lines(tmp_path / "two") == N  # every id generated once, over both nodes
    assert all((tmp_path / "two" / "shards" / f"rank{r}.jsonl").stat().st_size for r in (0, 1))


@pytest.mark.slow
def test_sigkilled_run_resumes_without_regenerating(t5_run: Path, tmp_path: Path) -> None:
    """predict.py killed with SIGKILL at whatever it is doing once some lines are written (generating, writing a
    line, syncing), then run again: every id exactly once, the outputs of an uninterrupted run, nothing generated
    twice. Resuming is the runner's (shards, ids, the rows still to do), the same for both engines: the default."""
    n = 100  # one per batch: generation lasts long enough (a second or more) to be caught in the middle
    args = (f"model_dir={t5_run}", f"data.synthetic_sizes.test={n}", "batch_size=1")
    full = tmp_path / "full"
    assert predict_here(full, *args)["examples"] == n
    out = tmp_path / "resumed"
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "predict.py", *BASE, *args, f"output.dir={out}"], cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 300
    while writer.count_shard_lines(out) < n // 10:
        assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-2000:]  # ended before it could be killed
        assert time.monotonic() < deadline, "predict.py wrote no prediction within 300 s"
        time.sleep(0.002)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    done_before = writer.count_shard_lines(out)
    assert n // 10 <= done_before < n
    assert not (out / "predictions.jsonl").exists() and not (out / "metrics.json").exists()
    with open(out / "shards" / "rank0.jsonl", "a") as f:
        f.write('{"id": "synthetic_test_00000", "pred')  # a line cut short by a kill, whether or not this one cut one
    metrics = predict_here(out, *args)
    assert [r["id"] for r in read_predictions(out)] == synthetic_ids(n)  # every id exactly once, in input order
    assert read_predictions(out) == read_predictions(full)
    assert writer.count_shard_lines(out) == n  # nothing generated twice
    assert (metrics["resumed"], metrics["generated_now"]) == (done_before, n - done_before)


@pytest.mark.slow
def test_complete_output_kept_unless_overwrite(t5_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    predict_here(tmp_path, f"model_dir={t5_run}")
    before = (tmp_path / "predictions.jsonl").stat().st_mtime_ns
    with pytest.raises(SystemExit) as ex:
        predict_here(tmp_path, f"model_dir={t5_run}")
    assert ex.value.code == 2 and "output.overwrite=true" in capsys.readouterr().err
    assert (tmp_path / "predictions.jsonl").stat().st_mtime_ns == before
    assert predict_here(tmp_path, f"model_dir={t5_run}", "output.overwrite=true")["generated_now"] == N


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_csv_output_without_references(t5_run: Path, tmp_path: Path, backend: str) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"fname": f"d{i}", "dialogue": f"#Person1#: hello {i}. #Person2#: bye."}) + "\n"
                           for i in range(5)))  # fmt: skip
    out = tmp_path / "out"
    metrics = predict_here(out, f"model_dir={t5_run}", "data=files", f"data.test_file={src}", "data.id_column=fname",
                           "output.format=csv", f"backend={backend}")  # fmt: skip
    assert "rouge" not in metrics
    with open(out / "predictions.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["fname", "summary"] and [r[0] for r in table[1:]] == [f"d{i}" for i in range(5)]
    jsonl = read_predictions(out)
    assert all("reference" not in r for r in jsonl) and [r["prediction"] for r in jsonl] == [r[1] for r in table[1:]]


@pytest.mark.slow
def test_checkpoint_and_export_dir_predict_the_same(t5_run: Path, tmp_path: Path) -> None:
    predict_here(tmp_path / "run", f"model_dir={t5_run}")
    predict_here(tmp_path / "ckpt", f"model_dir={t5_run / 'checkpoints' / 'last.ckpt'}")
    predict_here(tmp_path / "export", f"model_dir={t5_run / 'export'}")
    ref = read_predictions(tmp_path / "run")
    assert read_predictions(tmp_path / "ckpt") == ref == read_predictions(tmp_path / "export")


@pytest.mark.slow
def test_max_predict_samples_limits_any_split(t5_run: Path, tmp_path: Path) -> None:
    predict_here(tmp_path / "out", f"model_dir={t5_run}", "data.split=validation", "data.max_predict_samples=3")
    from sumlab.data import synthetic

    expected = [r["id"] for r in synthetic.generate_split("validation", 3, 42)]
    assert [r["id"] for r in read_predictions(tmp_path / "out")] == expected


@pytest.mark.slow
def test_causal_model(tmp_path: Path) -> None:
    run = make_run(tmp_path / "gpt2run", "gpt2", steps=40)
    metrics = predict_here(tmp_path / "out", f"model_dir={run}", "generation=beam4", "generation.max_new_tokens=8")
    got = read_predictions(tmp_path / "out")
    assert metrics["family"] == "causal" and [r["id"] for r in got] == synthetic_ids()
    assert all(
        "TL;DR" not in r["prediction"] and "#Person1#:" not in r["prediction"][:12] for r in got
    )  # new tokens only


@pytest.mark.slow
def test_fast_beam_cache_leaves_beam_outputs_unchanged(t5_run: Path, tmp_path: Path) -> None:
    a = predict_here(
        tmp_path / "fast", f"model_dir={t5_run}", "generation=beam4", "generation.max_new_tokens=12", "backend=hf"
    )
    predict_here(tmp_path / "slow", f"model_dir={t5_run}", "generation=beam4", "generation.max_new_tokens=12",
                 "fast_beam_cache=false", "backend=hf")  # fmt: skip
    assert a["fast_beam_cache"] is True
    assert read_predictions(tmp_path / "fast") == read_predictions(tmp_path / "slow")


# --- bad input: one line, exit 2, nothing complete-looking ---------------------------------------
def _fails(out: Path, capsys: pytest.CaptureFixture, *overrides: str) -> str:
    with pytest.raises(SystemExit) as ex:
        predict_here(out, *overrides)
    err = capsys.readouterr().err.strip()
    assert ex.value.code == 2
    errors = [line for line in err.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert len(errors) == 1 and errors[0].startswith("error: "), err
    assert not (out / "predictions.jsonl").exists() and not (out / "metrics.json").exists()
    return err


def test_bad_model_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "notamodel").mkdir()
    assert "holds no model" in _fails(tmp_path / "o1", capsys, f"model_dir={tmp_path / 'notamodel'}")
    (tmp_path / "x.txt").write_text("hi")
    assert "not a checkpoint" in _fails(tmp_path / "o2", capsys, f"model_dir={tmp_path / 'x.txt'}")
    assert "no such file" in _fails(tmp_path / "o3", capsys, f"model_dir={tmp_path / 'missing' / 'run'}")


@pytest.mark.slow
def test_data_without_text_column_and_empty_input(t5_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": 1, "text": "hello"}) + "\n")
    err = _fails(tmp_path / "o1", capsys, f"model_dir={t5_run}", "data=files", f"data.test_file={bad}")
    assert "data.text_column" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert "empty" in _fails(tmp_path / "o2", capsys, f"model_dir={t5_run}", "data=files", f"data.test_file={empty}")


def test_reference_column_not_in_the_split(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A named reference column the split lacks (a typo) is an error before any work (no model is read: none is
    there), not a silent fallback to data.summary_column."""
    src = tmp_path / "test.jsonl"
    src.write_text("".join(json.dumps({"id": i, "dialogue": "a b", "summary": "a"}) + "\n" for i in range(3)))
    err = _fails(tmp_path / "o", capsys, f"model_dir={tmp_path / 'no-model'}", "data=files", f"data.test_file={src}",
                 "data.reference_columns=[a_typo]")  # fmt: skip
    assert "data.reference_columns ['a_typo'] not in data.split=test" in err and "'summary'" in err


@pytest.mark.slow
def test_blank_texts_and_streaming_refused(t5_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blank = tmp_path / "blank.jsonl"
    blank.write_text("".join(json.dumps({"id": i, "dialogue": t}) + "\n" for i, t in enumerate(["  ", "\n", ""])))
    err = _fails(tmp_path / "o1", capsys, f"model_dir={t5_run}", "data=files", f"data.test_file={blank}")
    assert "is empty: nothing to summarize" in err
    err = _fails(tmp_path / "o2", capsys, f"model_dir={t5_run}", "data.streaming=true")
    assert "data.streaming=true" in err and "drop it" in err


@pytest.mark.slow
def test_unwritable_output_dir(t5_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "file").write_text("")
    assert "not writable" in _fails(tmp_path / "file" / "out", capsys, f"model_dir={t5_run}")


@pytest.mark.slow
def test_shards_from_another_model_or_data(t5_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "o"
    writer.check_writable(out)
    predict_here(out, f"model_dir={t5_run}")
    (out / "predictions.jsonl").unlink()  # as if the first run had died before merging
    (out / "metrics.json").unlink()
    assert "different generation" in _fails(out, capsys, f"model_dir={t5_run}", "generation.max_new_tokens=5")
    assert "different generation" in _fails(
        out, capsys, f"model_dir={t5_run}", "backend=hf"
    )  # shards were CTranslate2's
    assert "different generation" in _fails(out, capsys, f"model_dir={t5_run}", "compute_type=int8")
    assert "different data" in _fails(out, capsys, f"model_dir={t5_run}", "data.synthetic_sizes.test=12")
    other = make_run(tmp_path / "other", "t5", steps=1)
    assert "different model" in _fails(out, capsys, f"model_dir={other}")


@pytest.mark.slow
def test_cli_error_is_one_line(tmp_path: Path) -> None:
    res = predict_cli(f"model_dir={tmp_path / 'nothing'}", f"output.dir={tmp_path / 'o'}")
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error: ") and len(res.stderr.strip().splitlines()) == 1, res.stderr
