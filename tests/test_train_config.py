"""Training settings resolved before Lightning starts: precision auto, sampler-related rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose_config
from hydra.errors import ConfigCompositionException

from sumlab.config.rules import validate
from sumlab.core.errors import SumlabError
from sumlab.train.runner import training_precision


def test_precision_auto_is_bf16_only_on_a_bf16_gpu_and_only_if_the_model_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_config([], run_dir=tmp_path)
    assert cfg.trainer.precision == "auto" and training_precision(cfg) == "32"  # this CPU machine
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
