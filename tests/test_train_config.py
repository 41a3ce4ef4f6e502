"""Training settings resolved before Lightning starts: precision auto, sampler-related rules, the warm-up's length."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
import torch
from conftest import TINY_RUN, compose_config, train_in_process
from hydra.errors import ConfigCompositionException

from sumlab.config.rules import validate
from sumlab.core.errors import SumlabError
from sumlab.train.runner import training_precision


def test_precision_auto_is_bf16_only_on_a_bf16_gpu_and_only_if_the_model_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_config([], run_dir=tmp_path)
    # this machine, whatever it is (the suite also runs on GPU machines)
    here = torch.cuda.is_available() and torch.cuda.is_bf16_supported() and "bf16-mixed" in cfg.model.safe_precisions
    assert cfg.trainer.precision == "auto" and training_precision(cfg) == ("bf16-mixed" if here else "32")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_precision(cfg) == "32"  # no GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert training_precision(cfg) == "bf16-mixed"
    assert training_precision(compose_config(["trainer.accelerator=cpu"], run_dir=tmp_path)) == "32"
    assert training_precision(compose_config(["model.safe_precisions=[32]"], run_dir=tmp_path)) == "32"
    assert training_precision(compose_config(["trainer.precision=32"], run_dir=tmp_path)) == "32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # pre-Ampere
    assert training_precision(cfg) == "32"


def test_sampler_settings_rejected_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(SumlabError, match="data.max_tokens=0"):
        validate(compose_config(["data.max_tokens=0"], run_dir=tmp_path))
    # not a user's key any more (sumlab's samplers split batches themselves): the schema refuses it by name
    with pytest.raises(ConfigCompositionException, match="use_distributed_sampler"):
        compose_config(["trainer.use_distributed_sampler=true"], run_dir=tmp_path)


class LearningRates(L.Callback):
    """The learning rate each optimizer step used, and Lightning's count of optimizer steps (the warm-up test's)."""

    seen: list[float] = []
    estimated = 0

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        LearningRates.seen.append(optimizer.param_groups[0]["lr"])
        LearningRates.estimated = int(trainer.estimated_stepping_batches)


@pytest.mark.slow
def test_warmup_ratio_spans_the_real_optimizer_steps(tmp_path: Path) -> None:
    """2 epochs of 5 batches, accumulating 2: 3 optimizer steps an epoch (the last on the epoch's odd batch), 6 in
    all, not 10 batches. warmup_ratio=0.5 warms up over 3 of them: the rate peaks at the 4th step, then falls."""
    LearningRates.seen = []
    _, cfg = train_in_process(
        [*TINY_RUN, "trainer.max_epochs=2", "trainer.limit_train_batches=5", "trainer.accumulate_grad_batches=2",
         "optim.warmup_ratio=0.5", "optim.scheduler=linear", "trainer.limit_val_batches=1", "test=false",
         "export=false", "~callbacks.early_stopping", "+callbacks.lr_probe._target_=test_train_config.LearningRates"],
        tmp_path / "run",
    )  # fmt: skip
    steps = 2 * math.ceil(5 / 2)
    lrs = LearningRates.seen
    assert len(lrs) == steps == LearningRates.estimated
    warmup = math.ceil(0.5 * steps)
    assert lrs[0] == 0 and lrs.index(max(lrs)) == warmup and max(lrs) == pytest.approx(cfg.optim.lr)
    assert all(a < b for a, b in zip(lrs[:warmup], lrs[1 : warmup + 1]))  # rising through the warm-up
    assert all(a > b > 0 for a, b in zip(lrs[warmup:], lrs[warmup + 1 :]))  # then falling, to the last step
