"""The `generation` group as a transformers GenerationConfig.

Built fresh from our keys plus the model's own token ids, so a checkpoint's shipped decoding
defaults (bart-large-cnn's min_length=56, length_penalty=2.0, ...) never leak into a run.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig
from transformers import GenerationConfig

# Token ids are the model's, not decoding choices: keep them from its config.
TOKEN_IDS = (
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
)


def build_generation_config(gen: DictConfig, model: Any) -> GenerationConfig:
    """``model``: anything with the model's ``generation_config`` and ``config`` (a model, or predict.py's
    ``LoadedModel`` before its weights are loaded)."""
    ids = {k: getattr(model.generation_config, k, None) for k in TOKEN_IDS}
    ids = {k: v if v is not None else getattr(model.config, k, None) for k, v in ids.items()}
    if ids["pad_token_id"] is None:
        ids["pad_token_id"] = ids["eos_token_id"]
    search = dict(num_beams=gen.num_beams, max_new_tokens=gen.max_new_tokens, min_new_tokens=gen.min_new_tokens,
                  do_sample=gen.do_sample, no_repeat_ngram_size=gen.no_repeat_ngram_size,
                  repetition_penalty=gen.repetition_penalty)  # fmt: skip
    if gen.num_beams > 1:
        search.update(length_penalty=gen.length_penalty, early_stopping=gen.early_stopping)
    if gen.do_sample:
        search.update(top_k=gen.top_k, top_p=gen.top_p, temperature=gen.temperature)
    return GenerationConfig(**search, **{k: v for k, v in ids.items() if v is not None})
