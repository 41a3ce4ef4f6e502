"""Model building: generation settings never inherit a checkpoint's defaults; gradient checkpointing and
length-grouped batches work; the optimizer leaves biases and norms undecayed."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from sumlab.data.datamodule import SummarizationDataModule
from sumlab.generation.config import build_generation_config
from sumlab.train.runner import build_module, load_splits

SMALL = ["data.synthetic_sizes.train=96", "model.tiny.d_model=32", "model.tiny.d_ff=64", "model.tiny.vocab_size=400"]


def _module(tmp_path, *overrides: str):
    cfg = compose_config([*SMALL, *overrides], run_dir=tmp_path)
    return cfg, *build_module(cfg, load_splits(cfg))


def test_checkpoint_generation_defaults_never_leak(tmp_path) -> None:
    cfg, module, _, _ = _module(tmp_path)
    model = module.model
    # what bart-large-cnn ships in its generation_config.json
    model.generation_config.min_length, model.generation_config.length_penalty = 56, 2.0
    model.generation_config.no_repeat_ngram_size = 3
    gen = build_generation_config(OmegaConf.create({**cfg.generation, "num_beams": 2}), model)
    assert (gen.min_length or 0, gen.length_penalty, gen.no_repeat_ngram_size, gen.num_beams) == (0, 1.0, 0, 2)
    assert gen.decoder_start_token_id == model.config.decoder_start_token_id  # token ids are kept


@pytest.mark.slow
def test_gradient_checkpointing_trains(tmp_path) -> None:
    _, module, datamodule, _ = _module(tmp_path, "model.gradient_checkpointing=true", "model.tiny.dropout=0.0")
    assert module.model.is_gradient_checkpointing
    batch = next(iter(datamodule.train_dataloader()))
    module.model.train()

    def gradients() -> list[torch.Tensor]:
        module.model.zero_grad(set_to_none=True)
        module.family.loss(module.model, batch, 0.1).backward()
        return [p.grad.clone() for p in module.model.parameters() if p.requires_grad]

    recomputed = gradients()
    module.model.gradient_checkpointing_disable()
    stored = gradients()  # activations kept: the gradients checkpointing must reproduce
    assert len(recomputed) == len(stored) and all(g.abs().sum() > 0 for g in stored)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(recomputed, stored, strict=True))


def test_group_by_length_pads_less(tmp_path) -> None:
    # transformers groups within megabatches of up to 50 batches, at least 4 batches for any grouping
    cfg, module, datamodule, _ = _module(tmp_path, "data.synthetic_sizes.train=640")

    def padding(dm: SummarizationDataModule) -> float:
        torch.manual_seed(0)
        masks = [b["attention_mask"] for b in dm.train_dataloader()]
        return sum(float((m == 0).sum()) for m in masks) / sum(m.numel() for m in masks)

    grouped = datamodule  # the default
    plain = SummarizationDataModule(
        OmegaConf.merge(cfg.data, {"group_by_length": False}), module.family, datamodule.splits, cfg.paths.cache_dir
    )
    assert padding(grouped) < 0.5 * padding(plain)
    ids = sorted(int(i) for b in grouped.train_dataloader() for i in b["idx"])
    assert ids == list(range(len(datamodule.splits["train"])))  # still every example once per epoch


def test_no_weight_decay_on_biases_and_norms(tmp_path) -> None:
    _, module, _, _ = _module(tmp_path, "model=tiny_bart")

    class _Trainer:
        estimated_stepping_batches = 10

    module.trainer = _Trainer()  # type: ignore[assignment]
    opt = module.configure_optimizers()["optimizer"]
    names = {id(p): n for n, p in module.model.named_parameters()}
    decayed = {names[id(p)] for p in opt.param_groups[0]["params"]}
    undecayed = {names[id(p)] for p in opt.param_groups[1]["params"]}
    decay = module.optim["weight_decay"]  # the default, > 0, or the test could not tell the groups apart
    assert decay > 0 and (opt.param_groups[0]["weight_decay"], opt.param_groups[1]["weight_decay"]) == (decay, 0)
    assert any("layer_norm" in n for n in undecayed) and any(n.endswith("bias") for n in undecayed)
    assert not any("layer_norm" in n or n.endswith("bias") for n in decayed)
