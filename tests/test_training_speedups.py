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


def test_compiled_run_checkpoints_without_wrapper_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """model.compile=true through a whole train.run (Lightning's loop, checkpoints), with Dynamo's eager backend: its
    graph capture without Inductor's code generation, which here would compile each batch shape anew for minutes.
    Inductor itself (what users get) is compared with eager below."""
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


@pytest.mark.timeout(900)
def test_inductor_compiled_training_matches_eager(tmp_path: Path) -> None:
    """model.compile=true as users get it on CPU: torch.compile's default backend (Inductor, C++ code generated and
    built here), forward and backward. Three AdamW steps on one batch (one shape: one compilation, about a minute
    on 2 cores) give the eager model's losses and weights within float tolerance. Dropout off: Inductor draws its
    own random numbers."""
    overrides = [*TINY_RUN, "model.tiny.dropout=0.0", "model.tiny.num_layers=1"]
    runs = {}
    for compiled in (False, True):
        cfg = compose_config([*overrides, f"model.compile={compiled}"], run_dir=tmp_path)
        L.seed_everything(cfg.seed)
        module, datamodule, _ = build_module(cfg, load_splits(cfg))
        datamodule.prepare_data()
        datamodule.setup("fit")
        batch = next(iter(datamodule.train_dataloader()))
        optimizer = torch.optim.AdamW(module.model.parameters(), lr=1e-3)
        module.train()
        losses = []
        for _ in range(3):
            loss = module.family.loss(module._train_model, batch, 0.0)  # what training_step runs
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        runs[compiled] = (losses, module.state_dict(), module._train_model is not module.model)
    (eager, eager_state, eager_wrapped), (inductor, state, wrapped) = runs[False], runs[True]
    assert wrapped and not eager_wrapped  # the compiled run really trained through torch.compile's module
    assert set(state) == set(eager_state)  # checkpoints hold the same keys, no compiled-wrapper prefix
    assert inductor == pytest.approx(eager, rel=1e-4) and eager[2] < eager[0]  # the same losses, and they fall
    worst = max(float((state[k] - eager_state[k]).abs().max()) for k in state)
    assert worst < 1e-4, worst
