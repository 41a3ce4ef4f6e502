"""Rules across config keys that a type cannot express; each raises one SumlabError line naming the key and the fix.

Run before any work: training's :func:`validate`, and the group checks predict.py shares (data, generation).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sumlab.config.predict import CANDIDATE_SOURCES, generated_sources
from sumlab.config.schema import (
    DATA_SOURCES,
    QLORA_BIASES,
    QLORA_BITS,
    QLORA_COMPUTE_DTYPES,
    QLORA_QUANT_TYPES,
    ROUGE_MONITORS,
    TrainConfig,
    enum_value,
    method_of,
)
from sumlab.core.errors import SumlabError
from sumlab.core.runtime import check_precision, resolve_device
from sumlab.text.mbr import UTILITIES
from sumlab.text.prompts import prompt_fields
from sumlab.text.rouge import MULTI_REFERENCE, TOKENIZERS


def check_schema(cfg: DictConfig, schema: type) -> None:
    """Re-check the composed config against its schema.

    Hydra checks types while composing, but a `+group.key=value` override opens the node and slips an
    unknown key past the schema; merging into a fresh structured config catches it.
    """
    plain = OmegaConf.create({k: v for k, v in OmegaConf.to_container(cfg).items() if k != "hydra"})
    try:
        OmegaConf.merge(OmegaConf.structured(schema), plain)
    except OmegaConfBaseException as ex:
        key = getattr(ex, "full_key", None) or "?"
        raise SumlabError(
            f"config key {key}: {str(ex).splitlines()[0]} (see `python train.py --cfg job` for the keys)"
        ) from None


def validate(cfg: DictConfig) -> None:
    """Every rule of a training config; raises SumlabError naming the key and what is allowed."""
    check_schema(cfg, TrainConfig)
    check_precision(str(cfg.trainer.precision), cfg.model.safe_precisions, cfg.model.name_or_path)
    check_metrics(cfg.metrics)
    if cfg.metrics.mode not in ("min", "max"):
        raise SumlabError(f"metrics.mode={cfg.metrics.mode} is unknown: use min or max")
    monitorable = [f"val/{k}" for k in ROUGE_MONITORS]
    if cfg.metrics.monitor not in monitorable:  # else Lightning fails only after the first epoch
        raise SumlabError(f"metrics.monitor={cfg.metrics.monitor} is not logged: use one of {monitorable}")
    check_data(cfg.data)
    if cfg.data.streaming and cfg.trainer.max_steps < 1:  # else the LR schedule has no length to span
        raise SumlabError("data.streaming=true: a stream has no length; set trainer.max_steps")
    if not 0.0 <= cfg.optim.warmup_ratio < 1.0:
        raise SumlabError(f"optim.warmup_ratio={cfg.optim.warmup_ratio} must be in [0, 1)")
    if not 0.0 <= cfg.optim.label_smoothing < 1.0:
        raise SumlabError(f"optim.label_smoothing={cfg.optim.label_smoothing} must be in [0, 1)")
    check_generation(cfg.generation)
    if cfg.model.tiny is None and cfg.model.name_or_path in (None, "", "???"):
        raise SumlabError("model.name_or_path is empty: name a hub model or a local directory, or pick model=tiny_t5")
    check_prompt(cfg.model, cfg.data)
    check_qlora(cfg)


def check_metrics(metrics: Any) -> None:
    """The metrics group's scorer keys (training and predict.py; predict's tokenizer may be null: the run's)."""
    if metrics.tokenizer is not None and metrics.tokenizer not in TOKENIZERS:
        raise SumlabError(f"metrics.tokenizer={metrics.tokenizer} is unknown: use one of {list(TOKENIZERS)}")
    for token in metrics.remove_tokens or ():
        if not isinstance(token, str) or not token:  # "" would put a space between every two characters
            raise SumlabError(f"metrics.remove_tokens holds {token!r}: list non-empty strings, e.g. ['<usr>', '</s>']")
    if metrics.multi_reference not in MULTI_REFERENCE:
        raise SumlabError(
            f"metrics.multi_reference={metrics.multi_reference} is unknown: use one of {list(MULTI_REFERENCE)}"
        )


def check_prompt(model: DictConfig, data: DictConfig) -> None:
    """Chat-template prompting and packing rules (the family applies them; these fail before any work)."""
    family = enum_value(model.family)
    if model.get("chat_template"):
        if family != "causal":
            raise SumlabError(
                "model.chat_template=true is for decoder-only models: set model.family=causal, or chat_template=false"
            )
        prompt_fields(model.prompt.user)
    if data.get("packing") and family != "causal":
        raise SumlabError(
            "data.packing=true packs decoder-only training rows: use it with model.family=causal, "
            "or set data.packing=false"
        )


def check_data(data: DictConfig) -> None:
    """The data group's rules (training and predict.py)."""
    if data.source not in DATA_SOURCES:
        raise SumlabError(f"data.source={data.source} is unknown: use one of {list(DATA_SOURCES)}")
    files = data.get("train_file")
    if not (files is None or isinstance(files, str) or _paths(files)):
        raise SumlabError(
            f"data.train_file={files} is not a file: give a path, or a list of paths (original + augmented files)"
        )
    for key in ("max_source_length", "max_target_length", "batch_size", "eval_batch_size"):
        if data[key] < 1:
            raise SumlabError(f"data.{key}={data[key]} must be at least 1")
    if data.max_tokens is not None and data.max_tokens < 1:
        raise SumlabError(f"data.max_tokens={data.max_tokens} must be at least 1 (or null for data.batch_size batches)")
    if data.preprocessing_num_workers is not None and data.preprocessing_num_workers < 1:
        raise SumlabError(
            f"data.preprocessing_num_workers={data.preprocessing_num_workers} must be at least 1 (or null)"
        )
    if data.streaming and data.source == "synthetic":
        raise SumlabError("data.streaming=true needs files or a hub dataset: the synthetic set is generated in memory")
    if data.streaming and data.max_tokens is not None:
        raise SumlabError("data.max_tokens needs every length before training: not available with data.streaming=true")


def _paths(value: Any) -> bool:
    return OmegaConf.is_list(value) and len(value) > 0 and all(isinstance(v, str) and v for v in value)


def check_generation(gen: DictConfig) -> None:
    """The generation group's rules (training and predict.py)."""
    if gen.num_beams < 1 or gen.max_new_tokens < 1:
        raise SumlabError("generation.num_beams and generation.max_new_tokens must be at least 1")
    if gen.min_new_tokens > gen.max_new_tokens:
        raise SumlabError(
            f"generation.min_new_tokens={gen.min_new_tokens} exceeds generation.max_new_tokens={gen.max_new_tokens}"
        )


def check_qlora(cfg: DictConfig) -> None:
    """The qlora group's rules; one SumlabError line naming the key and the fix."""
    q = cfg.get("qlora")
    method = method_of(q)
    if method == "none":
        return
    if q.r < 1:
        raise SumlabError(f"qlora.r={q.r} must be at least 1: it is the LoRA rank (8 to 64 is usual)")
    if q.alpha <= 0:
        raise SumlabError(f"qlora.alpha={q.alpha} must be positive (the update is scaled by alpha / r; 2 x r is usual)")
    if not 0.0 <= q.dropout < 1.0:
        raise SumlabError(f"qlora.dropout={q.dropout} must be in [0, 1)")
    if q.bias not in QLORA_BIASES:
        raise SumlabError(f"qlora.bias={q.bias} is unknown: use one of {list(QLORA_BIASES)}")
    if q.target_modules is not None and len(q.target_modules) == 0:
        raise SumlabError(
            "qlora.target_modules=[] adapts nothing: list module names, or null for the family's defaults"
        )
    try:
        import peft  # noqa: F401
    except ImportError:
        raise SumlabError(f"qlora={method} needs peft: pip install 'sumlab[lora]'") from None
    if method not in QLORA_BITS:
        return
    if q.quant_type not in QLORA_QUANT_TYPES:
        raise SumlabError(f"qlora.quant_type={q.quant_type} is unknown: use one of {list(QLORA_QUANT_TYPES)}")
    if q.compute_dtype != "auto" and q.compute_dtype not in QLORA_COMPUTE_DTYPES:
        raise SumlabError(
            f"qlora.compute_dtype={q.compute_dtype} is unknown: use auto or one of {list(QLORA_COMPUTE_DTYPES)}"
        )
    if q.compute_dtype == "float16" and "16-mixed" not in cfg.model.safe_precisions:  # the preset's fp16 rule
        raise SumlabError(
            f"qlora.compute_dtype=float16 is not safe for model {cfg.model.name_or_path} (its activations overflow "
            "in fp16): use qlora.compute_dtype=bfloat16 or auto"
        )
    device = resolve_device(cfg.trainer.accelerator)
    if device not in ("cpu", "cuda"):
        raise SumlabError(
            f"qlora={method} quantizes with bitsandbytes, which runs on CUDA GPUs and the CPU, not on "
            f"{device} (trainer.accelerator={cfg.trainer.accelerator}): "
            "use trainer.accelerator=gpu or cpu, or qlora=lora"
        )
    strategy = str(cfg.trainer.strategy).lower()
    if "fsdp" in strategy or "deepspeed" in strategy:
        raise SumlabError(
            f"qlora={method} with trainer.strategy={cfg.trainer.strategy} is not supported (sharding quantized "
            "weights needs a matching quant storage): use trainer.strategy=ddp or auto, or qlora=lora"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise SumlabError(f"qlora={method} needs bitsandbytes: pip install 'sumlab[lora]'") from None


def check_decoding(decoding: Any, models: int) -> None:
    """predict.py's decoding group (candidates, their source, MBR utility, weights) for `models` model_dir entries."""
    if decoding.candidates < 1:
        raise SumlabError(f"decoding.candidates={decoding.candidates} must be at least 1")
    if decoding.source not in CANDIDATE_SOURCES:
        raise SumlabError(f"decoding.source={decoding.source} is unknown: use one of {list(CANDIDATE_SOURCES)}")
    if decoding.utility not in UTILITIES:
        raise SumlabError(f"decoding.utility={decoding.utility} is unknown: use one of {list(UTILITIES)}")
    sources = generated_sources(decoding.source)
    if "beam" in sources and decoding.num_beams is not None and decoding.num_beams < decoding.candidates:
        raise SumlabError(
            f"decoding.num_beams={decoding.num_beams} is below decoding.candidates={decoding.candidates}: a beam "
            "search returns at most num_beams candidates; raise num_beams (or null: as many as candidates)"
        )
    if "sampling" in sources:
        if not 0.0 < decoding.top_p <= 1.0 or decoding.temperature <= 0 or decoding.top_k < 0:
            raise SumlabError(
                f"decoding.top_p={decoding.top_p}, temperature={decoding.temperature}, top_k={decoding.top_k}: "
                "top_p must be in (0, 1], temperature above 0, top_k at least 0"
            )
        if not 0.0 <= decoding.epsilon < 1.0:
            raise SumlabError(f"decoding.epsilon={decoding.epsilon} must be in [0, 1)")
    weights = decoding.weights
    if weights is not None and (len(weights) != models or not all(w > 0 for w in weights)):
        raise SumlabError(
            f"decoding.weights={list(weights)} must be {models} positive numbers, one per model_dir entry"
        )
    if decoding.select_only and not decoding.candidates_from:
        raise SumlabError(
            "decoding.select_only=true selects from an earlier output's candidates: pass "
            "decoding.candidates_from=<its output directory>"
        )
