"""Training speed-ups that must not change results: sorted validation batches score exactly like file
order, and an opt-in torch.compile'd model trains with unchanged checkpoints."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from conftest import TINY_RUN, compose_config, train_in_process
from torch.utils.data import DataLoader

from sumlab.train.runner import build_module, load_splits

pytestmark = pytest.mark.slow


def test_sorted_validation_scores_exactly_like_file_order(tmp_path: Path) -> None:
    cfg = compose_config(
        [*TINY_RUN, "data.synthetic_sizes.validation=13", "generation.min_new_tokens=4"], run_dir=tmp_path
    )
    L.seed_everything(cfg.seed)
    module, datamodule, _ = build_module(cfg, load_splits(cfg))
    sorted_ids = [int(i) for b in datamodule.val_dataloader() for i in b["idx"]]
    assert sorted_ids != sorted(sorted_ids)  # the default really reorders
    file_order = DataLoader(
        datamodule.tokenized("validation"), batch_size=cfg.data.eval_batch_size, collate_fn=datamodule.collate
    )
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.validate(module, datamodule=datamodule, verbose=False)
    trainer.validate(module, dataloaders=file_order, verbose=False)
    by_length, in_order = module.val_history
    assert by_length["num_examples"] == in_order["num_examples"] == 13
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum", "rouge_combined", "gen_len"):
        assert by_length[key] == in_order[key], key
    assert by_length["loss"] == pytest.approx(in_order["loss"], rel=1e-6)  # padding widths differ, sums round apart


def test_compiled_model_trains_and_checkpoints_like_eager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Dynamo's eager backend: the graph capture and training path of model.compile=true without Inductor's
    # C++ code generation, which takes minutes on a 2-core CPU (the GPU benchmark uses Inductor)
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    run_dir = tmp_path / "compiled"
    _, cfg = train_in_process([*TINY_RUN, "model.compile=true", "test=false", "trainer.limit_train_batches=3",
                               "trainer.limit_val_batches=1"], run_dir)  # fmt: skip
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 3
    eager, _, _ = build_module(compose_config(TINY_RUN, run_dir=tmp_path), load_splits(cfg))
    assert set(state["state_dict"]) == set(eager.state_dict())  # no compiled-wrapper keys in checkpoints
    moved = [k for k, v in eager.state_dict().items() if not torch.equal(v, state["state_dict"][k])]
    assert moved  # it trained
