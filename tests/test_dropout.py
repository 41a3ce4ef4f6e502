"""model.fast_dropout: torch's dropout distribution from fewer random draws, and attention unchanged apart
from where its dropout mask comes from."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from sumlab.models import dropout
from sumlab.models.dropout import ATTENTION, FastDropout


@pytest.mark.parametrize(("p", "dtype"), [(0.1, torch.float32), (0.5, torch.float32), (0.1, torch.bfloat16)])
def test_mask_drops_with_probability_p_and_keeps_the_mean(p: float, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    x = torch.ones(1_000_003, dtype=dtype)  # not a multiple of 4 lanes
    y = dropout.dropout(x, p)
    assert y.dtype == dtype
    dropped = float((y == 0).float().mean())
    assert dropped == pytest.approx(p, abs=2e-3)  # 4 standard deviations of a binomial mean at n = 1e6
    kept = y[y != 0]
    scale = 1 / (1 - p) if dtype == torch.float32 else float(torch.tensor(1 / (1 - p)).to(dtype))
    assert torch.all(kept == kept[0]) and float(kept[0]) == pytest.approx(scale, rel=1e-4)
    assert float(y.float().mean()) == pytest.approx(1.0, abs=5e-3)
    for lane in range(4):  # each 16-bit lane of a 64-bit draw is uniform, the top one (sign bit) included
        assert float((y[lane::4] == 0).float().mean()) == pytest.approx(p, abs=4e-3)


def test_gradient_is_the_same_mask_and_seeded_draws_repeat() -> None:
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(1)
    y = dropout.dropout(x, 0.3)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, torch.where(y != 0, torch.full_like(y, 1 / (1 - round(0.3 * 65536) / 65536)), 0.0))
    torch.manual_seed(1)
    assert torch.equal(dropout.dropout(x, 0.3), y)
    assert torch.equal(dropout.dropout(x, 0.3, training=False), x)
    assert torch.equal(dropout.dropout(x, 0.0), x)


def _models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    t5 = T5Config(vocab_size=50, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4, dropout_rate=0.2,
                  decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)  # fmt: skip
    # hidden dropout: F.dropout calls, torch's
    bart = BartConfig(vocab_size=50, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                      decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, dropout=0.0,
                      attention_dropout=0.2, max_position_embeddings=64)  # fmt: skip
    gpt2 = GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=64, attn_pdrop=0.2)
    # grouped KV heads
    llama = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=4,
                        num_key_value_heads=2, attention_dropout=0.2, max_position_embeddings=64)  # fmt: skip
    models = {"t5": T5ForConditionalGeneration(t5), "bart": BartForConditionalGeneration(bart),
              "gpt2": GPT2LMHeadModel(gpt2), "llama": LlamaForCausalLM(llama)}  # fmt: skip
    return {name: model.eval() for name, model in models.items()}


def _logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.randint(2, 50, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # padding: masks that are not all-true
    mask[2, 3:] = 0
    if model.config.is_encoder_decoder:
        return model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :5]).logits
    return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("name", ["t5", "bart", "gpt2", "llama"])
def test_training_forward_equals_sdpa_when_nothing_is_dropped(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _models()[name]
    with torch.no_grad():
        expected = _logits(reference)  # eval mode: sdpa, no dropout
    fast = dropout.enable(copy.deepcopy(reference)).train()
    assert fast.config._attn_implementation == ATTENTION
    assert not [m for m in fast.modules() if type(m) is torch.nn.Dropout]
    drawn: list[int] = []

    def keep_everything(x: torch.Tensor, p: float) -> torch.Tensor:
        drawn.append(x.dim())
        return torch.ones_like(x)

    monkeypatch.setattr(dropout, "keep_scale", keep_everything)
    with torch.no_grad():
        got = _logits(fast)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert 4 in drawn  # the attention weights' mask came from the fast path, not SDPA's own dropout
    if name in ("t5", "gpt2"):  # their hidden dropouts are nn.Dropout modules
        assert 3 in drawn


@pytest.mark.parametrize("mask_kind", ["none_causal", "bool", "float", "t5_bias"])
def test_attention_function_matches_sdpa(mask_kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 5, 8, generator=g) for _ in range(3))
    module = torch.nn.Module().train()
    module.is_causal = mask_kind == "none_causal"
    kwargs: dict = {"scaling": None}
    mask = None
    if mask_kind in ("bool", "t5_bias"):
        mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
        mask[1, :, :, 3:] = False
        mask[1, :, 4, :] = False  # a query row that sees nothing: SDPA gives zeros
    if mask_kind == "float":
        mask = torch.randn(2, 1, 5, 5, generator=g)
    if mask_kind == "t5_bias":
        kwargs = {"scaling": 1.0, "position_bias": torch.randn(1, 4, 5, 5, generator=g)}
    monkeypatch.setattr(dropout, "keep_scale", lambda x, p: torch.ones_like(x))
    got, _ = dropout.attention(module, q, k, v, mask, dropout=0.1, **kwargs)
    expected, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=0.0, **kwargs)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_gradient_checkpointing_recomputes_the_same_masks() -> None:
    model = dropout.enable(_models()["t5"]).train()
    checkpointed = copy.deepcopy(model)
    checkpointed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ids = torch.randint(2, 50, (4, 12), generator=torch.Generator().manual_seed(0))
    grads = []
    for m in (model, checkpointed):
        torch.manual_seed(3)
        m(input_ids=ids, labels=ids[:, :6].contiguous(), use_cache=False).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_exported_config_keeps_no_custom_attention(tmp_path: Path) -> None:
    model = dropout.enable(_models()["bart"])
    model.save_pretrained(tmp_path)
    assert ATTENTION not in (tmp_path / "config.json").read_text()
    loaded = BartForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.config._attn_implementation == "sdpa"
    assert not any(isinstance(m, FastDropout) for m in loaded.modules())
    assert json.loads((tmp_path / "config.json").read_text())["attention_dropout"] == 0.2
