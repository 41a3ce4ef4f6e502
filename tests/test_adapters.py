"""LoRA and QLoRA (sumlab.adapters): training, the AVX512-BF16 guard, trainable-only checkpoints and resume,
merged export, and one clear line for each bad input."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from conftest import TINY_RUN, assert_train_error, compose_config, train_in_process, train_steps
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from sumlab.core.errors import SumlabError
from sumlab.models import adapters, tiny_model, train_tiny_tokenizer
from sumlab.train.runner import build_module, load_splits

ARCHS = ("t5", "bart", "gpt2")
METHODS = ("lora", "qlora")
# Small adapters on tiny models; max_source_length keeps CPU 4-bit matmuls quick.
ADAPTER_RUN = [*TINY_RUN, "qlora.r=8", "qlora.alpha=16", "qlora.dropout=0.0", "data.max_source_length=96",
               "data.max_target_length=32", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
               "trainer.limit_test_batches=1", "generation.max_new_tokens=4", "~callbacks.early_stopping"]  # fmt: skip


def overrides(arch: str, method: str, *extra: str) -> list[str]:
    return [f"model=tiny_{arch}", f"qlora={method}", *ADAPTER_RUN, *extra]


def build(arch: str, method: str, tmp_path: Path, *extra: str):
    cfg = compose_config(overrides(arch, method, *extra), run_dir=tmp_path)
    L.seed_everything(cfg.seed)
    splits = load_splits(cfg)
    module, datamodule, added = build_module(cfg, splits)
    return cfg, module, datamodule, added


def first_batch(datamodule, split: str = "train") -> dict:
    loader = datamodule.train_dataloader() if split == "train" else datamodule.val_dataloader()
    return next(iter(loader))


def lora_grads(model) -> list[float]:
    return [p.grad.abs().sum().item() for n, p in model.named_parameters() if "lora_B" in n and p.grad is not None]


def frozen_base_only(model) -> None:
    """Nothing but adapter tensors trains."""
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    assert all(("lora_" in n or "trainable_tokens" in n) for n in trainable), trainable


# --- training -------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ARCHS)
def test_trains_after_validation_pass(arch: str, method: str, tmp_path: Path) -> None:
    """Loss falls, and LoRA gradients stay non-zero after an eval-mode pass (generate, as validation does)."""
    _, module, datamodule, added = build(arch, method, tmp_path)
    model = module.model
    assert adapters.is_adapted(model) and added > 0
    assert adapters.is_quantized(model) == (method == "qlora")
    frozen_base_only(model)
    batch, val_batch = first_batch(datamodule), first_batch(datamodule, "validation")

    module.eval()
    with torch.no_grad():  # what Lightning's validation does: loss, then generate
        module.family.loss(model, val_batch, 0.0)
        module.generate(val_batch)
    module.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for step in range(10):
        optimizer.zero_grad()
        loss = module.family.loss(model, batch, 0.0)
        loss.backward()
        if step == 0:
            grads = lora_grads(model)
            assert grads and all(g > 0 for g in grads), grads
        optimizer.step()
        losses.append(loss.item())
    print(f"{arch}/{method}: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    # A random base with rank-8 adapters learns slowly, but steadily: a clear fall within 10 steps.
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05 and losses[-1] < losses[0], losses


@pytest.mark.slow
def test_avx512bf16_guard(tmp_path: Path) -> None:
    """Every 4-bit layer is guarded; an unguarded one is repacked by an eval forward on CPUs with AVX512-BF16."""
    import bitsandbytes as bnb
    from bitsandbytes.functional import has_avx512bf16

    _, module, datamodule, _ = build("bart", "qlora", tmp_path)
    layers = [m for m in module.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(layer.support_avx512bf16_for_cpu is False for layer in layers)
    module.eval()
    with torch.no_grad():
        module.generate(first_batch(datamodule, "validation"))
    assert not any(getattr(layer.weight.quant_state, "packing_format_for_cpu", False) for layer in layers)
    if not has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16: the trap itself cannot be shown here")
    layer = next(m for m in layers if m.in_features % 64 == 0)  # bitsandbytes' CPU repacking wants whole blocks
    layer.support_avx512bf16_for_cpu = True  # unguarded: the trap springs
    with torch.no_grad():
        layer(torch.randn(2, layer.in_features))
    assert getattr(layer.weight.quant_state, "packing_format_for_cpu", False)


# --- checkpoints and resume -------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_trainable_only_and_resume(arch: str, method: str, tmp_path: Path) -> None:
    base = overrides(arch, method, "test=false", "export=false", f"paths.output_dir={tmp_path}")
    first = tmp_path / "train" / "first"
    train_in_process(base, first)
    steps = json.loads((first / "metrics.json").read_text())["global_step"]
    assert steps == 2

    ckpt = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    cfg = compose_config(overrides(arch, method), run_dir=tmp_path / "probe")
    L.seed_everything(cfg.seed)
    module, _, _ = build_module(cfg, load_splits(cfg))
    trainable = {n for n, p in module.named_parameters(remove_duplicate=False) if p.requires_grad}
    assert set(ckpt["state_dict"]) == trainable  # adapter weights only: no frozen (or 4-bit) base tensor
    saved = sum(v.numel() for v in ckpt["state_dict"].values())
    total = sum(p.numel() for p in module.parameters())
    assert saved < total / 2, (saved, total)
    assert ckpt["sumlab_adapter"]["method"] == method

    second = tmp_path / "train" / "second"
    train_in_process([*base, "ckpt_path=last", "trainer.max_epochs=2"], second)
    metrics = json.loads((second / "metrics.json").read_text())
    assert metrics["resumed_from"].startswith(str(first))
    assert metrics["global_step"] == 2 * steps  # continued, not restarted


# --- export -----------------------------------------------------------------------------------------
def _train_a_little(module, datamodule, steps: int = 6) -> None:
    train_steps(module, first_batch(datamodule), steps, lr=2e-2)


def _auto(arch: str):
    return AutoModelForCausalLM if arch == "gpt2" else AutoModelForSeq2SeqLM


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_merged_export_matches_adapter(arch: str, tmp_path: Path) -> None:
    """LoRA: export/ (merged) generates the adapter model's greedy text, and export/adapter reloads too."""
    _, module, datamodule, _ = build(arch, "lora", tmp_path)
    _train_a_little(module, datamodule)
    batch = first_batch(datamodule, "validation")
    with torch.no_grad():
        expected = module.family.generate(module.model, batch, module.generation_config)

    out = adapters.export(module.model, module.tokenizer, tmp_path / "export")
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "config.json").is_file()
    merged = _auto(arch).from_pretrained(out).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert len(AutoTokenizer.from_pretrained(out)) == len(module.tokenizer)
    reloaded, tokenizer = adapters.load_adapter(out / "adapter")
    reloaded.eval()
    with torch.no_grad():
        got_merged = module.family.generate(merged, batch, module.generation_config)
        got_adapter = module.family.generate(reloaded, batch, module.generation_config)
    decode = module.tokenizer.batch_decode
    assert decode(got_merged, skip_special_tokens=True) == decode(expected, skip_special_tokens=True)
    assert decode(got_adapter, skip_special_tokens=True) == decode(expected, skip_special_tokens=True)
    assert len(tokenizer) == len(module.tokenizer)


@pytest.mark.slow
def test_qlora_run_exports_full_precision_merge(tmp_path: Path) -> None:
    """A QLoRA run: export/ is a full-precision model (merged into the fp base, never 4-bit) that reloads."""
    run_dir = tmp_path / "run"
    train_in_process(overrides("t5", "qlora", "test=false"), run_dir)
    export = run_dir / "export"
    config = json.loads((export / "config.json").read_text())
    assert "quantization_config" not in config
    merged = AutoModelForSeq2SeqLM.from_pretrained(export)
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    tokenizer = AutoTokenizer.from_pretrained(export)
    ids = tokenizer(["summarize: #Person1#: hello there"], return_tensors="pt")
    assert merged.generate(**ids, max_new_tokens=4).shape[0] == 1
    model, _ = adapters.load_adapter(export / "adapter")
    assert adapters.is_adapted(model) and not adapters.is_quantized(model)


@pytest.mark.slow
def test_qlora_local_model_with_added_tags(tmp_path: Path) -> None:
    """The pretrained path: from_pretrained(quantization_config=...), tags added after loading train their rows."""
    texts = ["hello there how are you", "fine thanks and you", "see you at noon"] * 20
    tokenizer = train_tiny_tokenizer("bart", 300, texts)
    cfg = compose_config(["model=tiny_bart", *TINY_RUN], run_dir=tmp_path)
    model = tiny_model(cfg.model.tiny, tokenizer)
    model.save_pretrained(tmp_path / "local")
    tokenizer.save_pretrained(tmp_path / "local")
    cfg, module, datamodule, added = build(
        "bart", "qlora", tmp_path, f"model.name_or_path={tmp_path / 'local'}", "model.tiny=null"
    )
    assert added > 0 and adapters.is_quantized(module.model)
    assert any("trainable_tokens_delta" in n for n, p in module.model.named_parameters() if p.requires_grad)
    _train_a_little(module, datamodule, steps=2)
    out = adapters.export(module.model, module.tokenizer, tmp_path / "export")
    merged = AutoModelForSeq2SeqLM.from_pretrained(out)
    assert merged.get_input_embeddings().weight.shape[0] == len(module.tokenizer)
    assert json.loads((out / "adapter" / adapters.META_FILE).read_text())["base"] == str(tmp_path / "local")


@pytest.mark.slow  # over 2 s (make test-fast)
def test_gradient_checkpointing_with_adapters(tmp_path: Path) -> None:
    _, module, datamodule, _ = build("t5", "lora", tmp_path, "model.gradient_checkpointing=true")
    base = module.model.get_base_model()
    assert base.is_gradient_checkpointing
    module.train()
    module.family.loss(module.model, first_batch(datamodule), 0.0).backward()
    assert all(g > 0 for g in lora_grads(module.model))


# --- bad input: one line each -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["qlora=lora", "qlora.r=0"], ["qlora.r=0", "at least 1"]),
        (["qlora=qlora", "qlora.r=0"], ["qlora.r=0"]),
        (
            ["qlora=lora", "qlora.target_modules=[nope,q]"],
            ["['nope']", "match no module", "T5ForConditionalGeneration"],
        ),
        (["qlora=qlora", "trainer.accelerator=mps"], ["bitsandbytes", "mps", "trainer.accelerator=gpu or cpu"]),
        (["qlora=qlora", "trainer.strategy=fsdp"], ["trainer.strategy=fsdp", "qlora=lora"]),
        (["qlora=qlora", "qlora.compute_dtype=float16"], ["float16", "not safe", "bfloat16"]),
        (["qlora=qlora", "qlora.target_modules=[shared]"], ["was quantized", "qlora=lora"]),
        (["qlora=lora", "qlora.modules_to_save=[nothing_here]"], ["modules_to_save", "nothing_here"]),
    ],
)
def test_bad_input_one_line(capsys, tmp_path: Path, extra: list[str], needles: list[str]) -> None:
    assert_train_error(capsys, ["model=tiny_t5", *TINY_RUN, *extra], tmp_path, *needles)


def test_unknown_family_needs_targets(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delitem(adapters.DEFAULT_TARGETS, "t5")
    assert_train_error(capsys, ["model=tiny_t5", *TINY_RUN, "qlora=qlora"], tmp_path,
                    "no defaults for model type 't5'", "qlora.target_modules")  # fmt: skip


def test_unknown_method_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="method"):
        compose_config(["qlora=lora", "qlora.method=dora"], run_dir=tmp_path)


def test_adapter_checkpoint_needs_its_preset(tmp_path: Path) -> None:
    """A LoRA checkpoint resumed without adapters (or on another base) gets one clear line."""
    _, module, _, _ = build("t5", "lora", tmp_path)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    cfg = compose_config(["model=tiny_t5", *TINY_RUN], run_dir=tmp_path)
    L.seed_everything(cfg.seed)
    full, _, _ = build_module(cfg, load_splits(cfg))
    with pytest.raises(SumlabError, match="qlora preset"):
        full.on_load_checkpoint(checkpoint)
    _, other, _, _ = build("t5", "lora", tmp_path, "seed=7")
    with pytest.raises(SumlabError, match="different base"):
        other.on_load_checkpoint(checkpoint)
