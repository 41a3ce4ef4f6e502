"""The summarizer behind serve.py: predict.py's prompts and CTranslate2 engine, one engine per worker process.

:func:`prepare` runs once in the server's main process: it loads `model_dir` as predict.py does
(``models.loading.load``), checks that CTranslate2 honours the model and the default settings, converts it once
(cached beside the model, shared with predict.py) and keeps what a worker needs in an :class:`EngineSpec` (the
tokenizer, the prompt settings, the model's token ids): the transformers model is then dropped, so each worker
loads only the converted model. :class:`Summarizer` is a worker's engine: texts -> the family's features (the
same ``features`` call as training and predict.py) -> ``CT2Engine.generate`` with the request's settings.
"""

from __future__ import annotations

import copy
import gc
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from sumlab.config.serve import CLIENT_SETTINGS
from sumlab.core.errors import SumlabError
from sumlab.text.prompts import ChatPrompt

DEFAULT_MAX_SOURCE = 512  # data.max_source_length's default, for a model without a training run


@dataclass
class EngineSpec:
    """Everything a worker needs to build its engine; picklable (LitServe sends it to each worker process)."""

    path: str  # the converted CTranslate2 model
    compute_type: str
    device: str  # cpu or cuda: what the compute type was chosen for
    tokenizer: Any
    family: str  # seq2seq | causal
    prefix: str
    separator: str
    chat: Optional[ChatPrompt]
    token_ids: dict[str, Any]  # the model's (generation.config.model_token_ids)
    defaults: dict[str, Any]  # the generation group: the settings a request starts from
    max_source_length: int
    engine_batch_size: int
    source: str  # what model_dir turned out to be, for the start-up line
    conversion_seconds: float


def prepare(cfg: DictConfig) -> EngineSpec:
    """Load, check, convert once; the transformers model is freed before the workers start."""
    from transformers.utils import logging as hf_logging

    from sumlab.core.runtime import resolve_device
    from sumlab.family import make_family
    from sumlab.generation import engines
    from sumlab.generation.config import build_generation_config, model_token_ids
    from sumlab.models.loading import load

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the API processes are forked after tokenizing here
    hf_logging.disable_progress_bar()  # "Loading weights" bars would bury the start-up lines
    loaded = load(str(cfg.model_dir), cfg.model, cfg.paths.cache_dir)
    family = make_family(loaded.family, loaded.tokenizer, loaded.prefix, loaded.separator, chat=loaded.chat)
    named = [f for f in getattr(family, "fields", ()) if f != "text"]
    if named:
        raise SumlabError(
            f"model.prompt.user names {{{named[0]}}}: serve.py summarizes a text alone; pass "
            "model.prompt.user='...{text}...' without other columns"
        )
    gen = build_generation_config(cfg.generation, loaded.model)
    missing = engines.ct2_unsupported(gen, loaded.family, loaded.model)
    if missing is not None:
        raise SumlabError(f"serve.py runs CTranslate2, which cannot honour {missing}: change it, or use predict.py")
    device = "cuda" if resolve_device(cfg.accelerator) == "cuda" else "cpu"  # CTranslate2 runs on these two
    compute_type = engines.resolve_compute_type(str(cfg.compute_type), device, loaded.safe_precisions)
    target = engines.conversion_target(loaded, compute_type, cfg.paths.cache_dir)
    seconds = engines.convert(loaded.model, loaded.tokenizer, target, compute_type)
    spec = EngineSpec(
        path=str(target), compute_type=compute_type, device=device, tokenizer=loaded.tokenizer,
        family=loaded.family, prefix=loaded.prefix, separator=loaded.separator, chat=loaded.chat,
        token_ids=model_token_ids(loaded.model), defaults=OmegaConf.to_container(cfg.generation, resolve=True),
        max_source_length=int(cfg.max_source_length or loaded.max_source_length or DEFAULT_MAX_SOURCE),
        engine_batch_size=int(cfg.engine_batch_size), source=loaded.source, conversion_seconds=seconds,
    )  # fmt: skip
    del loaded, family
    gc.collect()
    return spec


def settings_of(spec: EngineSpec, changes: dict[str, Any]) -> dict[str, Any]:
    """The server's generation group with a request's changes (CLIENT_SETTINGS only) on top."""
    return {**spec.defaults, **{k: v for k, v in changes.items() if k in CLIENT_SETTINGS}}


def unsupported(spec: EngineSpec, settings: dict[str, Any]) -> Optional[str]:
    """Why these settings cannot run exactly as predict.py would run them, else None."""
    from sumlab.generation import engines
    from sumlab.generation.config import generation_config_from

    if settings["min_new_tokens"] > settings["max_new_tokens"]:
        return f"min_new_tokens={settings['min_new_tokens']} exceeds max_new_tokens={settings['max_new_tokens']}"
    missing = engines.ct2_unsupported_setting(generation_config_from(OmegaConf.create(settings), spec.token_ids),
                                              spec.family)  # fmt: skip
    return None if missing is None else f"CTranslate2 cannot honour {missing.removeprefix('generation.')}"


class Summarizer:
    """One worker's engine: CTranslate2 on its device, with predict.py's prompts."""

    def __init__(self, spec: EngineSpec, device: str, threads: int) -> None:
        import torch

        from sumlab.family import make_family
        from sumlab.generation import engines
        from sumlab.generation.config import generation_config_from

        self.spec = spec
        self.family = make_family(spec.family, spec.tokenizer, spec.prefix, spec.separator, chat=spec.chat)
        base = generation_config_from(OmegaConf.create(spec.defaults), spec.token_ids)
        self.engine = engines.CT2Engine(Path(spec.path), self.family, base, spec.compute_type, torch.device(device),
                                        threads, seed=None)  # fmt: skip

    def summarize(self, texts: list[str], settings: dict[str, Any]) -> tuple[list[str], float]:
        """Summaries of `texts` with one settings group, and the seconds the engine took."""
        from sumlab.generation import engines
        from sumlab.generation.config import generation_config_from

        rows = [self.family.features(t, None, self.spec.max_source_length, 0) for t in texts]
        options, _ = engines.ct2_options(generation_config_from(OmegaConf.create(settings), self.spec.token_ids),
                                         self.family.name)  # fmt: skip
        options["max_batch_size"] = self.spec.engine_batch_size
        view = copy.copy(self.engine)  # the worker's engine (its translator shared) with this group's options
        view.options = options
        started = time.perf_counter()
        summaries, _ = view.generate(view.collate(rows))
        return summaries, time.perf_counter() - started
