"""Schema of `python predict.py` (conf/predict.yaml); the field comments document each key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from sumlab.config.schema import DataConfig, GenerationConfig, PathsConfig, TrainerConfig

OUTPUT_FORMATS = ("jsonl", "csv")
CANDIDATE_SOURCES = ("beam", "sampling", "both")


def generated_sources(source: str) -> tuple[str, ...]:
    """What decoding.source generates, in pool order: `both` is the n-best, then as many samples."""
    return ("beam", "sampling") if source == "both" else (source,)


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
    # causal: prompt through the tokenizer's chat template; null: the run's, else off
    chat_template: Optional[bool] = None
    prompt: PredictPromptConfig = field(default_factory=PredictPromptConfig)  # chat prompts; null keys: the run's
    end_of_turn: Optional[list[str]] = None  # chat: tokens that stop generation; null: the run's, else EOS
    revision: Optional[str] = None  # hub revision, for a hub name
    trust_remote_code: bool = False


@dataclass
class PredictMetricsConfig:
    # ROUGE words: default, whitespace, kiwi or rouge_pkg; null: the training run's, else default
    tokenizer: Optional[str] = None
    remove_tokens: Optional[list[str]] = None  # replaced by a space before scoring; null: the training run's, else none
    # with data.reference_columns: mean or max of each ROUGE F1 over an example's references
    multi_reference: str = "mean"


@dataclass
class OutputConfig:
    dir: Optional[str] = None  # where predictions go; null: this run's Hydra directory (deterministic: re-run resumes)
    format: str = "jsonl"  # jsonl: predictions.jsonl only; csv: also predictions.csv (competition layout)
    overwrite: bool = False  # replace a complete earlier output (and discard its shards)
    id_header: str = "fname"  # CSV column of the example ids
    summary_header: str = "summary"  # CSV column of the predictions


@dataclass
class DecodingConfig:
    """How each input's summary is chosen (conf/decoding): the generation group's one output, or minimum-Bayes-risk
    (MBR) selection: several candidates per input (and per model, with a list of model_dir), keeping the one with
    the highest weighted mean ROUGE (`utility`) against all of them (sumlab.text.mbr). Candidates are kept in
    candidates.jsonl."""

    # candidates per input and model; 1: the generation group's output (with one model: no selection at all)
    candidates: int = 1
    # beam: the n-best of one beam search (generation.* as set, beams from num_beams); sampling: independent samples;
    # both: the n-best and as many samples, pooled (2 x candidates per input and model; each generated in turn)
    source: str = "beam"
    num_beams: Optional[int] = None  # source=beam/both: beam width, at least `candidates`; null: `candidates`
    top_k: int = 0  # source=sampling/both: sample from the k likeliest tokens; 0: no top-k cut
    top_p: float = 1.0  # source=sampling/both: nucleus, the smallest token set with this much probability
    temperature: float = 1.0  # source=sampling/both: <1 sharper, >1 flatter
    epsilon: float = 0.0  # source=sampling/both: drop tokens below this probability (epsilon sampling; backend hf only)
    utility: str = "rougeL"  # MBR utility: rouge1, rouge2, rougeL or rouge_combined F1 (metrics.tokenizer's words)
    weights: Optional[list[float]] = None  # one positive weight per model_dir entry (its candidates); null: equal
    select_only: bool = False  # no generation: select again from the candidates.jsonl of candidates_from
    # select_only: a finished MBR output directory (or its candidates.jsonl), or a list of them (their candidates are
    # pooled: an ensemble of runs generated apart); model_dir names the models to keep, as their `model` field does
    candidates_from: Any = None


@dataclass
class PredictConfig:
    task_name: str = "predict"  # output_dir/<task_name>/ holds prediction runs
    run_name: str = MISSING  # the output directory's name (by default from model, data, split and generation)
    # a sumlab run dir, its export/, a .ckpt of a run, a local HF dir or a hub name; or a list of them (an ensemble:
    # each generates decoding.candidates per input in turn, then MBR selects among all of them)
    model_dir: Any = MISSING
    seed: int = 42  # the synthetic data's seed (same as training's), and sampling
    batch_size: int = 16  # examples per generate() call, per device
    sort_by_length: bool = True  # batches of similar source length (order restored in the output)
    fast_beam_cache: bool = True  # beam search: skip re-copying the cross-attention cache (guarded, see beam_cache.py)
    backend: str = "auto"  # auto (CTranslate2 where it honours the model and every setting, else hf), ctranslate2, hf
    # CTranslate2's: auto (float32 on CPU, bfloat16/float16 on GPU), float32, int8, int8_float32, ...
    compute_type: str = "auto"
    model: PredictModelConfig = field(default_factory=PredictModelConfig)
    data: PredictDataConfig = MISSING
    trainer: TrainerConfig = MISSING
    generation: GenerationConfig = MISSING
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    metrics: PredictMetricsConfig = field(default_factory=PredictMetricsConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    paths: PathsConfig = MISSING


def listed(value: Any) -> list[str]:
    """A key that takes one path or a list of them (model_dir, decoding.candidates_from) as a list, in order."""
    if isinstance(value, str) or value is None:
        return [value] if value else []
    return [str(v) for v in value]
