"""Schema of `python predict.py` (conf/predict.yaml); the field comments document each key.

Kept free of torch/lightning imports: ``sumlab.setup()`` registers it before Hydra parses the command line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from sumlab.config import DataConfig, GenerationConfig, PathsConfig, TrainerConfig
from sumlab.rundir import plain, stable_hash

OUTPUT_FORMATS = ("jsonl", "csv")


@dataclass
class PredictDataConfig(DataConfig):
    split: str = "test"  # which split to predict: train, validation or test (data=files: its *_file key)


@dataclass
class PredictPromptConfig:
    system: Optional[str] = None  # chat: the system turn; null: the run's, else the training default
    user: Optional[str] = None  # chat: the user turn, with {text}; null: the run's, else the training default


@dataclass
class PredictModelConfig:
    """How to run the model in `model_dir`; null means: as it was trained (the run's config), else a default."""

    family: Optional[str] = None  # seq2seq or causal; null: the run's, else from the model's config
    prefix: Optional[str] = None  # prepended to each source; null: the run's, else "summarize: " for T5-type models
    separator: Optional[str] = None  # causal only, prompt/summary separator; null: the run's, else "\nTL;DR:\n"
    chat_template: Optional[bool] = None  # causal: prompt through the tokenizer's chat template; null: the run's, else off
    prompt: PredictPromptConfig = field(default_factory=PredictPromptConfig)  # chat prompts; null keys: the run's
    end_of_turn: Optional[list[str]] = None  # chat: tokens that stop generation; null: the run's, else EOS
    revision: Optional[str] = None  # hub revision, for a hub name
    trust_remote_code: bool = False


@dataclass
class PredictMetricsConfig:
    tokenizer: Optional[str] = None  # ROUGE words: default, whitespace or kiwi; null: the training run's, else default
    multi_reference: str = "mean"  # with data.reference_columns: mean or max of each ROUGE F1 over an example's references


@dataclass
class OutputConfig:
    dir: Optional[str] = None  # where predictions go; null: this run's Hydra directory (deterministic: re-run resumes)
    format: str = "jsonl"  # jsonl: predictions.jsonl only; csv: also predictions.csv (competition layout)
    overwrite: bool = False  # replace a complete earlier output (and discard its shards)
    id_header: str = "fname"  # CSV column of the example ids
    summary_header: str = "summary"  # CSV column of the predictions


@dataclass
class PredictConfig:
    task_name: str = "predict"  # output_dir/<task_name>/ holds prediction runs
    run_name: str = MISSING  # the output directory's name (by default from model, data, split and generation)
    model_dir: str = MISSING  # a sumlab run dir, its export/, a .ckpt of a run, a local HF dir or a hub name
    seed: int = 42  # the synthetic data's seed (same as training's), and sampling
    batch_size: int = 16  # examples per generate() call, per device
    sort_by_length: bool = True  # batches of similar source length (order restored in the output)
    fast_beam_cache: bool = True  # beam search: skip re-copying the cross-attention cache (guarded, see beam_cache.py)
    backend: str = "auto"  # auto (CTranslate2 where it honours the model and every setting, else hf), ctranslate2, hf
    compute_type: str = "auto"  # CTranslate2's: auto (float32 on CPU, bfloat16/float16 on GPU), float32, int8, int8_float32, ...
    model: PredictModelConfig = field(default_factory=PredictModelConfig)
    data: PredictDataConfig = MISSING
    trainer: TrainerConfig = MISSING
    generation: GenerationConfig = MISSING
    metrics: PredictMetricsConfig = field(default_factory=PredictMetricsConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    paths: PathsConfig = MISSING


def digest(*parts: Any) -> str:
    """A short stable hash of config values (containers included), for directory names and fingerprints."""
    return stable_hash([plain(p) for p in parts], 8)


def path_name(value: Any) -> str:
    """A readable directory-name part of a model path or hub id: outputs/train/<run>/export -> <run>."""
    parts = [p for p in PurePath(str(value)).parts if p not in ("/", ".", "..", "export", "checkpoints")]
    name = parts[-1] if parts else "model"
    name = re.sub(r"\.ckpt$", "", name)
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name)[-80:] or "model"


def register_predict_configs(cs: ConfigStore) -> None:
    cs.store(name="predict_schema", node=PredictConfig)
    for name, resolver in (("sumlab_digest", digest), ("sumlab_path_name", path_name)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
