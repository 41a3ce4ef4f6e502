"""Shared test helpers: compose configs with Hydra's compose API, run the entry points as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import sumlab

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
DIALOGSUM = ROOT.parent / "shared" / "data" / "dialogsum"

# Small, fast settings for runs that only check plumbing (not learning).
TINY_RUN = [
    "data.synthetic_sizes.train=64",
    "data.synthetic_sizes.validation=9",
    "data.synthetic_sizes.test=5",
    "data.batch_size=8",
    "data.eval_batch_size=4",
    "model.tiny.d_model=32",
    "model.tiny.d_ff=64",
    "model.tiny.vocab_size=400",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "generation=greedy",
    "generation.max_new_tokens=12",
    "logger=csv",
]


# `make test` runs pytest-xdist workers side by side: each worker's torch (and every process it starts, through
# OMP_NUM_THREADS) gets its share of the cores, not all of them, so OpenMP threads do not spin against each other.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _WORKERS))


# The files that take longest, longest first. Under `--dist loadfile` (a module-scoped fixture such as
# test_train's `make train` run must not run once per worker) xdist hands out whole files in collection order
# (Makefile: --no-loadscope-reorder): starting the long ones first keeps one worker from finishing alone on one.
LONGEST_FILES = (
    "test_train.py",
    "test_predict.py",
    "test_sweep_runs.py",
    "test_mbr.py",
    "test_llm.py",
    "test_adapters.py",
    "test_resume.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if _WORKERS > 1:
        rank = {name: i for i, name in enumerate(LONGEST_FILES)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a file is kept


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tokenizer cache shared by the session; nothing is written into the repository."""
    if _WORKERS > 1:
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # in case torch was imported before this file
    os.environ["SUMLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["SUMLAB_OUTPUT_DIR"] = str(tmp_path_factory.mktemp("outputs"))
    os.environ["SUMLAB_SWEEP_DIR"] = str(tmp_path_factory.mktemp("multirun"))
    sumlab.setup()


def compose_config(
    overrides: list[str] | tuple[str, ...] = (), config_name: str = "train", run_dir: Path | None = None
) -> DictConfig:
    """Compose like the entry point does; `paths.run_dir` points at run_dir (Hydra's output dir there)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    if run_dir is not None:
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


def train_in_process(overrides: list[str], run_dir: Path) -> tuple[float, DictConfig]:
    """sumlab.train.run on a composed config, in this process (faster than a subprocess)."""
    from sumlab.train import run

    cfg = compose_config(overrides, run_dir=run_dir)
    with open_dict(cfg):
        cfg.paths.run_dir = str(run_dir)
    return run(cfg), cfg


def epoch_tokens(cfg: DictConfig) -> tuple[int, int]:
    """(real source + target tokens in one pass over the training split, batches per epoch): what a run's
    train_tokens counts per epoch (every example once on one process), and its optimizer steps per epoch."""
    from sumlab.train.runner import build_module, load_splits

    _, datamodule, _ = build_module(cfg, load_splits(cfg))
    datamodule.prepare_data()
    datamodule.setup("fit")
    return int(datamodule.lengths("train").sum()), len(datamodule.train_dataloader())


def run_cli(
    script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, script, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )  # fmt: skip


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, exactly one stderr line `error: ...` naming the problem, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout
    return the_error_line(proc.stderr, *needles)


def the_error_line(stderr: str, *needles: str) -> str:
    """Exactly one non-blank stderr line, `error: ...`, holding every needle."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def assert_train_error(capsys: pytest.CaptureFixture[str], overrides: list[str], tmp_path: Path, *needles: str) -> str:
    """train.run in this process stops with exit 2 and exactly one stderr line `error: ...` naming the problem."""
    with pytest.raises(SystemExit) as exit_info:
        train_in_process(overrides, tmp_path / "run")
    assert exit_info.value.code == 2
    return the_error_line(capsys.readouterr().err, *needles)


def train_steps(module, batch: dict, steps: int, lr: float) -> None:
    """A few AdamW steps of a SummarizationModule's trainable weights on one batch; leaves it in eval mode."""
    import torch

    optimizer = torch.optim.AdamW([p for p in module.model.parameters() if p.requires_grad], lr=lr)
    module.train()
    for _ in range(steps):
        optimizer.zero_grad()
        module.family.loss(module.model, batch, 0.0).backward()
        optimizer.step()
    module.eval()
