"""The `generation` group as a transformers GenerationConfig.

Built fresh from our keys plus the model's own token ids, so a checkpoint's shipped decoding
defaults (bart-large-cnn's min_length=56, length_penalty=2.0, ...) never leak into a run.
"""

from __future__ import annotations

from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from transformers import GenerationConfig

from sumlab.config.predict import generated_sources

# Token ids are the model's, not decoding choices: keep them from its config.
TOKEN_IDS = (
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
)


def model_token_ids(model: Any) -> dict[str, Any]:
    """The model's own token ids (TOKEN_IDS; pad falls back to EOS): what a GenerationConfig keeps from the model.

    ``model``: anything with the model's ``generation_config`` and ``config`` (a model, or predict.py's
    ``LoadedModel`` before its weights are loaded)."""
    ids = {k: getattr(model.generation_config, k, None) for k in TOKEN_IDS}
    ids = {k: v if v is not None else getattr(model.config, k, None) for k, v in ids.items()}
    if ids["pad_token_id"] is None:
        ids["pad_token_id"] = ids["eos_token_id"]
    return ids


def build_generation_config(gen: DictConfig, model: Any) -> GenerationConfig:
    return generation_config_from(gen, model_token_ids(model))


def generation_config_from(gen: DictConfig, ids: dict[str, Any]) -> GenerationConfig:
    """The generation group with token ids taken beforehand (serve.py: workers hold the ids, not the model)."""
    search = dict(num_beams=gen.num_beams, max_new_tokens=gen.max_new_tokens, min_new_tokens=gen.min_new_tokens,
                  do_sample=gen.do_sample, no_repeat_ngram_size=gen.no_repeat_ngram_size,
                  repetition_penalty=gen.repetition_penalty)  # fmt: skip
    if gen.num_beams > 1:
        search.update(length_penalty=gen.length_penalty, early_stopping=gen.early_stopping)
    if gen.do_sample:
        search.update(top_k=gen.top_k, top_p=gen.top_p, temperature=gen.temperature)
    return GenerationConfig(**search, **{k: v for k, v in ids.items() if v is not None})


SAMPLING_KEYS = ("top_k", "top_p", "temperature", "epsilon")


def candidate_settings(decoding: Any) -> Optional[dict[str, Any]]:
    """The decoding keys that decide the candidates (the shard fingerprint covers them; utility and weights only
    decide the selection); None when each input gets the generation group's one output."""
    if decoding is None or decoding.candidates == 1:
        return None
    settings = {"candidates": decoding.candidates, "source": decoding.source}
    sources = generated_sources(decoding.source)
    if "beam" in sources:
        settings["num_beams"] = decoding.num_beams or decoding.candidates
    if "sampling" in sources:
        settings.update({k: decoding[k] for k in SAMPLING_KEYS})
    return settings


def build_candidate_config(gen: DictConfig, decoding: Any, model: Any) -> GenerationConfig:
    """The GenerationConfig that yields decoding.candidates outputs per input: the generation group with the n-best
    beam width, or with sampling (top_k/top_p/temperature/epsilon) in place of its search keys."""
    settings = candidate_settings(decoding)
    if settings is None:
        return build_generation_config(gen, model)
    if settings["source"] == "both":  # predict.mbr.stage_configs splits it into a beam and a sampling stage
        raise ValueError("decoding.source=both has no single GenerationConfig: generate each source in turn")
    search = OmegaConf.to_container(gen, resolve=True)
    if settings["source"] == "beam":
        search.update(num_beams=settings["num_beams"], do_sample=False)
    else:
        search.update(num_beams=1, do_sample=True, top_k=settings["top_k"], top_p=settings["top_p"],
                      temperature=settings["temperature"])  # fmt: skip
    config = build_generation_config(OmegaConf.create(search), model)
    config.num_return_sequences = settings["candidates"]
    if settings.get("epsilon"):
        config.epsilon_cutoff = settings["epsilon"]
    return config
