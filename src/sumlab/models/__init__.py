"""Build (model, tokenizer) for a model preset, top to bottom:

1. the weights: a hub id or local HF directory (:mod:`.hub`, quantized when ``qlora`` says so), a llama.cpp
   GGUF file dequantized once into a cached HF directory (:mod:`.gguf`), or a tiny model built from a config
   with a tokenizer trained on the data or a real one (``model.tiny.tokenizer``, :mod:`.tiny`);
2. the tokenizer's extras: data tags as whole tokens (:mod:`.tags`), end-of-turn tokens that stop generation;
3. memory: gradient checkpointing;
4. LoRA / QLoRA adapters (:mod:`.adapters`);
5. speed: CPU dropout from fewer random draws (:mod:`.dropout`, ``model.fast_dropout``).

The family (:mod:`sumlab.family`) then turns examples into features for this (model, tokenizer).
:mod:`.loading` turns a ``model_dir`` (run, export, checkpoint, HF dir, hub name) back into a model.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from omegaconf import DictConfig

from sumlab.config.schema import enabled, enum_value
from sumlab.family import end_of_turn_ids
from sumlab.models import adapters, dropout, gguf
from sumlab.models.hub import load_pretrained
from sumlab.models.tags import add_tags
from sumlab.models.tiny import cached_tiny_tokenizer, real_tokenizer, tiny_model, train_tiny_tokenizer
from sumlab.text.tags import find_tags

__all__ = ["add_tags", "build", "find_tags", "load_pretrained", "stop_token_ids", "tiny_model", "train_tiny_tokenizer"]


def stop_token_ids(model: Any, tokenizer: Any, end_of_turn: list[str]) -> list[int]:
    """EOS ids of the model plus its end-of-turn tokens: generation stops at any of them."""
    eos = model.generation_config.eos_token_id
    ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
    return ids + [i for i in end_of_turn_ids(tokenizer, end_of_turn) if i not in ids]


def build(
    model_cfg: DictConfig,
    data_cfg: DictConfig,
    train_texts: list[str],
    cache_dir: str,
    qlora_cfg: Optional[DictConfig] = None,
    accelerator: Any = "auto",
) -> tuple[Any, Any, int]:
    """(model, tokenizer, number of tags added) for the configured preset; with LoRA/QLoRA (``qlora_cfg``)
    a peft model."""
    quantized_load = adapters.load_kwargs(qlora_cfg, accelerator)  # empty unless the base loads quantized
    tags = find_tags(train_texts, data_cfg.special_token_pattern) if data_cfg.special_tokens else []
    if model_cfg.tiny is not None:
        if model_cfg.tiny.get("tokenizer"):  # .get: run configs saved before the key
            tokenizer = real_tokenizer(model_cfg.tiny.tokenizer)
        else:
            regex = re.compile(data_cfg.special_token_pattern)
            plain = [regex.sub(" ", t) for t in train_texts] if tags else train_texts
            tokenizer = cached_tiny_tokenizer(model_cfg.tiny, plain, cache_dir)
        added = add_tags(None, tokenizer, tags)  # before the model exists: its vocabulary includes them
        model = tiny_model(model_cfg.tiny, tokenizer)
    else:
        if model_cfg.get("gguf_file"):  # from here on an ordinary local HF directory
            model_cfg = gguf.as_local(model_cfg, cache_dir)
        model, tokenizer = load_pretrained(
            model_cfg.name_or_path,
            enum_value(model_cfg.family),
            model_cfg.revision,
            model_cfg.trust_remote_code,
            model_kwargs=quantized_load,
        )
        added = add_tags(model, tokenizer, tags)
    if model_cfg.get("chat_template"):  # exported with the model: any HF user's generate stops at end of turn
        model.generation_config.eos_token_id = stop_token_ids(model, tokenizer, list(model_cfg.end_of_turn))
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if enabled(qlora_cfg):  # after tags: their embedding rows stay trainable
        model = adapters.apply(model, tokenizer, qlora_cfg, model_cfg, added, quantized_load)
    if model_cfg.get(
        "fast_dropout", True
    ):  # after adapters: LoRA's dropout too (.get: run configs saved before the key)
        dropout.enable(model)
    return model, tokenizer, added
