"""The guarded beam-search speed-up: same sequences and scores as transformers' own code, and off where unchecked."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration
from transformers.cache_utils import EncoderDecoderCache

from sumlab.generation import beam_cache


def _model() -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(
        T5Config(
            vocab_size=97,
            d_model=32,
            d_kv=16,
            d_ff=64,
            num_layers=2,
            num_heads=2,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)  # varied logits: beams diverge and get reordered
    return model.eval()


@pytest.mark.slow  # over 2 s (make test-fast)
def test_parity_with_transformers_beam_search() -> None:
    assert beam_cache.supported()  # the installed transformers is one this was checked on
    model = _model()
    ids = torch.randint(2, 97, (5, 17), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 12:] = 0
    mask[3, 5:] = 0
    cfg = GenerationConfig(
        num_beams=4,
        max_new_tokens=20,
        early_stopping=True,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        output_scores=True,
        return_dict_in_generate=True,
    )
    plain = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)
    original = EncoderDecoderCache.reorder_cache
    with beam_cache.fast_beam_cache() as applied:
        assert applied and EncoderDecoderCache.reorder_cache is not original
        fast = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)
    assert EncoderDecoderCache.reorder_cache is original  # restored
    assert torch.equal(plain.sequences, fast.sequences)
    assert torch.allclose(plain.sequences_scores, fast.sequences_scores)
    assert len({tuple(s.tolist()) for s in plain.sequences}) > 1


def test_off_for_untested_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(beam_cache.transformers, "__version__", "6.1.0")
    original = EncoderDecoderCache.reorder_cache
    with beam_cache.fast_beam_cache() as applied:
        assert not applied and EncoderDecoderCache.reorder_cache is original


def test_off_when_reorder_cache_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    def reorder_cache(self, beam_idx):  # noqa: ANN001, ANN202 - a different implementation than the checked one
        self.self_attention_cache.reorder_cache(beam_idx)

    monkeypatch.setattr(EncoderDecoderCache, "reorder_cache", reorder_cache)
    assert not beam_cache.supported()
