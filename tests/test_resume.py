"""Exact resume: a run killed (SIGKILL) or preempted (SIGTERM) mid-epoch and resumed ends with the same
weights and validation metrics as the run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN, run_cli, train_in_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
# 8 batches an epoch, 2 epochs; last.ckpt every 3 steps within an epoch (3, 6, 9, 12, 15) and after each epoch
RESUME_RUN = [
    *TINY_RUN,
    "trainer.max_epochs=2",
    "callbacks.last_checkpoint.every_n_train_steps=3",
    "test=false",
    "export=false",
]


def _final(run_dir: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return ckpt["state_dict"], ckpt["sumlab_val_history"]


def _interrupt(overrides: list[str], at_step: int, signal_name: str, tmp_path: Path) -> tuple[Path, "object"]:
    """train.py in a subprocess that signals itself after step `at_step`; its run dir is where `last` looks."""
    run_dir = Path(os.environ["SUMLAB_OUTPUT_DIR"]) / "train" / f"{tmp_path.name}-{signal_name}"
    proc = run_cli(
        "train.py", *overrides, f"hydra.run.dir={run_dir}",
        "+callbacks.kill._target_=resume_probe.SignalAtStep", f"+callbacks.kill.at_step={at_step}",
        f"+callbacks.kill.signal_name={signal_name}",
        # the same intra-op thread count as this process, where the reference and the resumed runs train:
        # a different count changes float summation order (once seen here: 7e-6 apart after a full suite)
        env={"PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": str(torch.get_num_threads())}, timeout=600,
    )  # fmt: skip
    return run_dir, proc


def _assert_same_run(reference: Path, resumed: Path) -> None:
    (ref_state, ref_history), (state, history) = _final(reference), _final(resumed)
    assert set(state) == set(ref_state)
    worst = max(float((state[k].float() - ref_state[k].float()).abs().max()) for k in state)
    assert worst <= 1e-6, worst
    assert history == ref_history  # every validation of the run: ROUGE, loss, gen_len, epoch, step


def _resume_last(overrides: list[str], tmp_path: Path) -> Path:
    """SIGKILL after step 11 (last.ckpt holds step 9: epoch 1, batch 1 of 8; steps 10-11 lost), resume with `last`."""
    killed, proc = _interrupt(overrides, 11, "SIGKILL", tmp_path)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    saved = torch.load(killed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 9 and saved["epoch"] == 1
    assert json.loads((killed / "run.json").read_text())["status"] == "running"  # SIGKILL: nothing could update it
    resumed = Path(os.environ["SUMLAB_OUTPUT_DIR"]) / "train" / f"{tmp_path.name}-resumed"
    train_in_process([*overrides, "ckpt_path=last"], resumed)
    assert json.loads((resumed / "metrics.json").read_text())["resumed_from"] == str(
        killed / "checkpoints" / "last.ckpt"
    )
    return resumed


def test_default_model_killed_or_preempted_mid_epoch_resumes_exactly(tmp_path: Path) -> None:
    overrides = [*RESUME_RUN, "seed=11"]  # a config no other test trains, so `last` finds this test's run
    train_in_process(overrides, tmp_path / "reference")
    _assert_same_run(tmp_path / "reference", _resume_last(overrides, tmp_path))

    # SIGTERM (SLURM preemption) during step 11: Lightning finishes that batch, then last.ckpt is written at
    # step 11 (no periodic save there), run.json says interrupted, and the exit code is the shell's 143
    stopped, proc = _interrupt(overrides, 10, "SIGTERM", tmp_path)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert json.loads((stopped / "run.json").read_text())["status"] == "interrupted"
    saved = torch.load(stopped / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 11
    resumed = tmp_path / "after-sigterm"
    train_in_process([*overrides, f"ckpt_path={stopped / 'checkpoints' / 'last.ckpt'}"], resumed)
    _assert_same_run(tmp_path / "reference", resumed)


def test_lora_run_killed_mid_epoch_resumes_exactly(tmp_path: Path) -> None:
    overrides = [*RESUME_RUN, "model=tiny_gpt2", "qlora=lora", "seed=12"]  # adapters: only trainable tensors saved
    train_in_process(overrides, tmp_path / "reference")
    _assert_same_run(tmp_path / "reference", _resume_last(overrides, tmp_path))
