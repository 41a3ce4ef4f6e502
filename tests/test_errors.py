"""Bad input through the real command line: one `error:` line, exit 2, no traceback, no run left complete."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, assert_one_line_error, run_cli

pytestmark = pytest.mark.slow  # every test runs train.py in a process of its own


@pytest.fixture(scope="module")
def train_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """`python train.py ARGS`, each call in its own process forked after the heavy imports (tests/cli_forkserver.py)."""
    logs = tmp_path_factory.mktemp("cli")
    server_err = logs / "server.err"
    with server_err.open("w") as err:
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "cli_forkserver.py")], cwd=ROOT, env=dict(os.environ),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
    assert json.loads(server.stdout.readline()) == {"ready": True}, server_err.read_text()[-2000:]
    assert server_err.read_text() == ""  # importing printed nothing: a user would see it before the error line
    calls = itertools.count()

    def run(*args: str) -> subprocess.CompletedProcess:
        n = next(calls)
        out, err = logs / f"{n}.out", logs / f"{n}.err"
        request = {"script": "train.py", "args": list(args), "stdout": str(out), "stderr": str(err)}
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        code = json.loads(server.stdout.readline())["returncode"]
        return subprocess.CompletedProcess(["train.py", *args], code, out.read_text(), err.read_text())

    yield run
    server.stdin.close()
    assert server.wait(timeout=60) == 0, server_err.read_text()[-2000:]


def _files_args(tmp_path: Path, train: Path) -> list[str]:
    valid = tmp_path / "valid.jsonl"
    valid.write_text(json.dumps({"id": "v1", "dialogue": "a b", "summary": "a"}) + "\n", encoding="utf-8")
    return [
        "data=files",
        f"data.train_file={train}",
        f"data.validation_file={valid}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]


def test_unknown_preset_lists_the_choices(train_cli) -> None:
    line = assert_one_line_error(train_cli("model=t5_nonexistent"), "model/t5_nonexistent")
    assert "tiny_t5" in line  # the available options are named on the same line


def test_wrong_type(train_cli) -> None:
    assert_one_line_error(train_cli("trainer.max_epochs=abc"), "trainer.max_epochs")


def test_unknown_key(train_cli) -> None:
    assert_one_line_error(train_cli("+trainer.not_a_trainer_arg=1"), "trainer.not_a_trainer_arg")


def test_unsafe_precision_suggests_bf16(train_cli) -> None:
    assert_one_line_error(train_cli("trainer.precision=16-mixed"), "bf16-mixed")


def test_unknown_monitor_before_training(train_cli) -> None:
    # Lightning itself would fail only after the first epoch, with a traceback
    assert_one_line_error(train_cli("metrics.monitor=val/rouge3"), "metrics.monitor=val/rouge3", "val/rougeL")


def test_impossible_trainer_setting(train_cli, tmp_path: Path) -> None:
    # Lightning's MisconfigurationException, raised once the Trainer is built: a config problem too
    assert_one_line_error(train_cli("trainer.accelerator=gpu", f"hydra.run.dir={tmp_path / 'run'}"), "gpu")


def test_missing_data_file(train_cli, tmp_path: Path) -> None:
    proc = train_cli(*_files_args(tmp_path, tmp_path / "nope.jsonl"))
    assert_one_line_error(proc, "not found", "nope.jsonl")
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert status["status"] == "failed" and not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize(
    ("name", "content", "needles"),
    [
        ("empty.jsonl", b"", ("empty",)),
        ("blank.csv", b"\n\n", ("empty",)),
        ("latin1.csv", 'dialogue,summary\n"caf\xe9 talk",caf\xe9\n'.encode("cp1252"), ("not UTF-8", "iconv")),
        (
            "nocol.jsonl",
            json.dumps({"id": 1, "text": "hello", "summary": "hi"}).encode(),
            ("'dialogue'", "data.text_column"),
        ),
        ("nosum.csv", b"id,dialogue\n1,hello there\n", ("'summary'", "data.summary_column")),
        ("broken.jsonl", b'{"id": 1, "dialogue": "a", "summary": "b"}\n{"id": 2,\n', ("line 2",)),
    ],
)
def test_bad_data_file(train_cli, tmp_path: Path, name: str, content: bytes, needles: tuple[str, ...]) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert_one_line_error(train_cli(*_files_args(tmp_path, path)), *needles)


def test_bad_checkpoint(train_cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert_one_line_error(train_cli(f"ckpt_path={bad}", f"hydra.run.dir={tmp_path / 'run'}"), "bad.ckpt")


def test_hub_model_unreachable_offline(tmp_path: Path) -> None:
    # a fresh interpreter: huggingface_hub reads HF_HUB_OFFLINE and HF_HOME when imported
    proc = run_cli(
        "train.py", "model=t5_small", f"hydra.run.dir={tmp_path / 'run'}",
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )  # fmt: skip
    assert_one_line_error(proc, "google-t5/t5-small", "model.name_or_path")
