"""LoRA and QLoRA on a built model: the ``qlora`` group (peft + bitsandbytes).

The group's config rules (one line each, before any work) live with the schema: ``config.check_qlora``.

* :func:`load_kwargs` - ``from_pretrained`` keywords for a quantized base (``quantization_config=BitsAndBytesConfig``).
* :func:`apply` - on the built (model, tokenizer): quantize a tiny model the real way (save, reload with
  ``quantization_config``), guard the AVX512-BF16 trap, pick per-family target modules, keep the rows of
  tags added to the vocabulary trainable, and wrap it in a peft model.
* :func:`checkpoint_state`, :func:`on_save_checkpoint`, :func:`on_load_checkpoint` - checkpoints hold only
  what trains (adapter weights, trainable extras) plus a fingerprint of the frozen base they belong to.
* :func:`export` - ``export/adapter/`` (the adapter, loadable with :func:`load_adapter`) and a merged full model
  in ``export/`` made by merging into a full-precision copy of the base, never into 4-bit or 8-bit weights.

The AVX512-BF16 trap: on CPUs with AVX512-BF16, bitsandbytes repacks the 4-bit weights for fast inference
during any eval-mode forward without grad (Lightning's sanity check, a validation ``generate``). Training
after that gives zero LoRA gradients or crashes ("a view of a leaf Variable ... in-place operation"), so
every ``bnb.nn.Linear4bit`` gets ``support_avx512bf16_for_cpu = False`` right after loading.
"""

from __future__ import annotations

import atexit
import copy
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig

from sumlab.config.schema import QLORA_BITS as BITS
from sumlab.config.schema import QLORA_COMPUTE_DTYPES, enum_value, method_of
from sumlab.core.errors import SumlabError
from sumlab.core.runtime import resolve_device
from sumlab.family import FAMILIES

COMPUTE_DTYPES = {name: getattr(torch, name) for name in QLORA_COMPUTE_DTYPES}

# Per-family default target modules (name suffixes, as peft matches them). Entries a model lacks are
# fine in a default list (T5 v1.0 has wi, T5 v1.1 / mT5 / Flan-T5 have the gated wi_0 and wi_1).
T5_TARGETS = ["q", "k", "v", "o", "wi", "wo", "wi_0", "wi_1"]
BART_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
GPT2_TARGETS = ["c_attn", "c_proj"]  # Conv1D: fan_in_fan_out (set from the module type)
# Decoder LLMs (Llama 3, SOLAR, Bllossom, Qwen 2.5/3, Gemma 3, EXAONE 4): every linear layer of attention and MLP.
LLM_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEFAULT_TARGETS: dict[str, list[str]] = {
    "t5": T5_TARGETS, "mt5": T5_TARGETS, "umt5": T5_TARGETS, "longt5": T5_TARGETS,
    "bart": BART_TARGETS, "mbart": BART_TARGETS, "pegasus": BART_TARGETS, "pegasus_x": BART_TARGETS,
    "marian": BART_TARGETS, "blenderbot": BART_TARGETS, "blenderbot-small": BART_TARGETS, "plbart": BART_TARGETS,
    "gpt2": GPT2_TARGETS,
    "llama": LLM_TARGETS, "mistral": LLM_TARGETS, "qwen2": LLM_TARGETS, "qwen3": LLM_TARGETS,
    "gemma3_text": LLM_TARGETS, "exaone4": LLM_TARGETS,
}  # fmt: skip
INFO_ATTR = "sumlab_adapter"  # set on the peft model: method and where its full-precision base comes from
META_FILE = "sumlab_adapter.json"  # in export/adapter/: what load_adapter needs besides peft's own files


# --- config -----------------------------------------------------------------------------------------
def compute_dtype(qlora: DictConfig, device: str) -> torch.dtype:
    if qlora.compute_dtype == "auto":  # bf16 on GPU (the QLoRA recipe); fp32 on CPU, where bf16 matmuls are slow
        return torch.bfloat16 if device == "cuda" else torch.float32
    return COMPUTE_DTYPES[qlora.compute_dtype]


def load_kwargs(qlora: Optional[DictConfig], accelerator: Any = "auto") -> dict[str, Any]:
    """``from_pretrained`` keywords that load the base quantized; empty unless the method quantizes."""
    method = method_of(qlora)
    if method not in BITS:
        return {}
    from transformers import BitsAndBytesConfig

    device = resolve_device(accelerator)
    if BITS[method] == 4:
        quant = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=qlora.quant_type, bnb_4bit_use_double_quant=qlora.double_quant,
            bnb_4bit_compute_dtype=compute_dtype(qlora, device),
        )  # fmt: skip
    else:
        quant = BitsAndBytesConfig(load_in_8bit=True)
    where = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if device == "cuda" else torch.device("cpu")
    dtype = (
        compute_dtype(qlora, device) if BITS[method] == 4 else (torch.float16 if device == "cuda" else torch.float32)
    )
    return {"quantization_config": quant, "device_map": {"": where}, "dtype": dtype}


# --- set-up on a built model -----------------------------------------------------------------------
def is_adapted(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def is_quantized(model: Any) -> bool:
    return any(_bnb_layer(m) for m in model.modules())


def _bnb_layer(module: Any) -> bool:
    return type(module).__name__ in ("Linear4bit", "Linear8bitLt") and type(module).__module__.startswith(
        "bitsandbytes"
    )


def guard_avx512bf16(model: Any) -> int:
    """Stop bitsandbytes repacking 4-bit weights on eval forwards (see the module docstring); returns layers guarded."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def _linear_like(module: Any) -> bool:
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (torch.nn.Linear, Conv1D)) or _bnb_layer(module)


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def resolve_targets(model: Any, qlora: DictConfig, preset: Optional[list[str]] = None) -> tuple[list[str], bool]:
    """(target module names, fan_in_fan_out); one clear line when they would adapt nothing.

    ``qlora.target_modules`` wins; else the model preset's ``lora_target_modules``; else the family's defaults.
    """
    from transformers.pytorch_utils import Conv1D

    model_type = getattr(model.config, "model_type", "?")
    names = [n for n, _ in model.named_modules() if n]
    leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n and _linear_like(m)})
    key, wanted = (
        ("qlora.target_modules", qlora.target_modules)
        if qlora.target_modules is not None
        else ("model.lora_target_modules", preset)
    )
    if wanted is None:
        if model_type not in DEFAULT_TARGETS:
            raise SumlabError(
                f"qlora.target_modules is null and sumlab has no defaults for model type {model_type!r} "
                f"(it has them for {sorted(DEFAULT_TARGETS)}): set qlora.target_modules to some of its linear "
                f"layers {leaves}"
            )
        targets = DEFAULT_TARGETS[model_type]
    else:
        targets = [str(t) for t in wanted]
        missing = [t for t in targets if not any(_matches(n, t) for n in names)]
        if missing:
            raise SumlabError(
                f"{key} {missing} match no module of {type(model).__name__}: use names of its "
                f"linear layers {leaves}, or null for the family's defaults"
            )
    matched = [m for n, m in model.named_modules() if any(_matches(n, t) for t in targets)]
    if not matched:
        raise SumlabError(
            f"qlora.target_modules {targets} match no module of {type(model).__name__}: use names of its linear "
            f"layers {leaves}"
        )
    return targets, any(isinstance(m, Conv1D) for m in matched)


def new_token_targets(model: Any, ids: list[int]) -> Any:
    """peft ``trainable_token_indices`` for the rows of added tags, in every vocabulary-sized layer that uses them.

    Tied embeddings (T5, BART, GPT-2 as shipped) train one set of rows that the tied output layer follows;
    untied ones train the rows of each layer. Embeddings shared in a way peft does not tie get one clear line.
    """
    vocab = model.get_input_embeddings().weight.shape[0]
    groups: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if (
            isinstance(module, (torch.nn.Embedding, torch.nn.Linear))
            and weight is not None
            and weight.shape[0] == vocab
        ):
            groups.setdefault(id(weight), []).append(name)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    if len(groups) == 1 and tied:
        return ids  # peft wraps the input embedding and ties every layer tied to it
    if all(len(g) == 1 for g in groups.values()):
        return {g[0]: ids for g in groups.values()}
    raise SumlabError(
        f"cannot train the rows of the {len(ids)} tags added to the vocabulary of {type(model).__name__}: its "
        "embeddings share weights in a way peft does not tie; set qlora.train_new_tokens=false, or "
        "qlora.modules_to_save to the embedding layers"
    )


def _quantize_built(model: Any, family: str, kwargs: dict[str, Any]) -> tuple[Any, Path]:
    """A model built from a config, quantized the real way: saved, reloaded with quantization_config.

    The saved full-precision copy stays (for the process) as the base that export merges into.
    """
    from transformers.utils import logging as hf_logging

    base_dir = Path(tempfile.mkdtemp(prefix="sumlab-base-"))
    atexit.register(shutil.rmtree, base_dir, True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # an internal round trip: no "Writing/Loading" bars for the user
    try:
        model.save_pretrained(base_dir)
        return FAMILIES[family].auto_model.from_pretrained(base_dir, **kwargs), base_dir
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def apply(
    model: Any, tokenizer: Any, qlora: DictConfig, model_cfg: DictConfig, added: int, kwargs: dict[str, Any]
) -> Any:
    """The built model -> a peft model with LoRA on the target modules (base quantized for qlora/lora_8bit)."""
    from peft import get_peft_model

    method, family = method_of(qlora), str(enum_value(model_cfg.family))
    base = base_source(model_cfg, family)
    if method in BITS and not is_quantized(model):  # built from a config: quantize through from_pretrained
        model, base_dir = _quantize_built(model, family, kwargs)
        base["path"] = str(base_dir)
        if model_cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
    targets, fan_in_fan_out = resolve_targets(model, qlora, model_cfg.get("lora_target_modules"))
    if method in BITS:
        model = _prepare_quantized(model, method, targets)
    peft_model = get_peft_model(model, lora_config(model, tokenizer, qlora, family, added, targets, fan_in_fan_out))
    if model_cfg.gradient_checkpointing:
        peft_model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still see inputs needing grad
    setattr(peft_model, INFO_ATTR, {"method": method, "base": base})
    return peft_model


def base_source(model_cfg: DictConfig, family: str) -> dict[str, Any]:
    """Where the full-precision base comes from again at export (a tiny model: the built one, kept in memory)."""
    tiny = model_cfg.get("tiny") is not None
    base: dict[str, Any] = {"family": family, "tiny": tiny}
    if not tiny:
        base.update(path=model_cfg.name_or_path, revision=model_cfg.get("revision"),
                    trust_remote_code=bool(model_cfg.get("trust_remote_code", False)))  # fmt: skip
    return base


def _prepare_quantized(model: Any, method: str, targets: list[str]) -> Any:
    """Check that LoRA targets quantized layers, then freeze the base with norms in fp32 (peft's k-bit preparation)."""
    from peft import prepare_model_for_kbit_training

    quantized = [n for n, m in model.named_modules() if _bnb_layer(m) and any(_matches(n, t) for t in targets)]
    if not quantized:
        raise SumlabError(
            f"qlora={method}: none of the target modules {targets} of {type(model).__name__} was quantized "
            "(bitsandbytes quantizes nn.Linear and Conv1D layers only): use qlora=lora for this model"
        )
    guard_avx512bf16(model)
    # Checkpointing stays as models.build set it (non-reentrant).
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def lora_config(model: Any, tokenizer: Any, qlora: DictConfig, family: str, added: int, targets: list[str],
                fan_in_fan_out: bool) -> Any:  # fmt: skip
    """peft's LoraConfig for the qlora group: targets, extra modules trained in full, the new tag tokens' rows."""
    from peft import LoraConfig, TaskType

    extra = list(qlora.modules_to_save) if qlora.modules_to_save else None
    names = [n for n, _ in model.named_modules() if n]
    for name in extra or []:
        if not any(_matches(n, name) for n in names):
            raise SumlabError(f"qlora.modules_to_save entry {name!r} matches no module of {type(model).__name__}")
    token_ids = list(range(len(tokenizer) - added, len(tokenizer))) if added and qlora.train_new_tokens else None
    return LoraConfig(
        r=int(qlora.r), lora_alpha=float(qlora.alpha), lora_dropout=float(qlora.dropout), target_modules=targets,
        fan_in_fan_out=fan_in_fan_out, bias=qlora.bias, modules_to_save=extra,
        trainable_token_indices=new_token_targets(model, token_ids) if token_ids else None,
        task_type=TaskType.SEQ_2_SEQ_LM if family == "seq2seq" else TaskType.CAUSAL_LM,
    )  # fmt: skip


def trainable_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count their real number of values."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel() * (2 if type(p).__name__ == "Params4bit" else 1)
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


# --- checkpoints -----------------------------------------------------------------------------------
def _inner(module: Any) -> Any:
    """The model inside a LightningModule (its ``model``), or the model itself."""
    return module if is_adapted(module) else getattr(module, "model", module)


def checkpoint_state(module: Any, state_dict: dict[str, Any]) -> dict[str, Any]:
    """The part of a (Lightning module's) state dict a checkpoint keeps: all of it, or only what trains."""
    if not is_adapted(_inner(module)):
        return state_dict
    keep = {n for n, p in module.named_parameters(remove_duplicate=False) if p.requires_grad}
    prefix = "model." if _inner(module) is not module else None
    return {k: v for k, v in state_dict.items() if k in keep or (prefix and not k.startswith(prefix))}


def base_fingerprint(model: Any) -> str:
    """A cheap fingerprint of the frozen base (names, shapes, a sample of values), cached on the model."""
    cached = getattr(model, "_sumlab_base_fingerprint", None)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda item: item[0]):
        if p.requires_grad:
            continue
        sample = p.detach().reshape(-1)[:256]
        digest.update(f"{name}|{tuple(p.shape)}|{p.dtype}|".encode())
        digest.update(f"{sample.double().sum().item():.6e}".encode() if sample.numel() else b"")
    value = digest.hexdigest()[:16]
    object.__setattr__(model, "_sumlab_base_fingerprint", value)
    return value


def on_save_checkpoint(module: Any, checkpoint: dict[str, Any]) -> None:
    """Lightning hook body: keep only trainable tensors, and record which base they belong to."""
    model = _inner(module)
    if not is_adapted(model):
        return
    checkpoint["state_dict"] = checkpoint_state(module, checkpoint["state_dict"])
    checkpoint["sumlab_adapter"] = {
        "method": getattr(model, INFO_ATTR, {}).get("method"),
        "base": base_fingerprint(model),
    }


def on_load_checkpoint(module: Any, checkpoint: dict[str, Any]) -> None:
    """Lightning hook body: an adapter checkpoint resumes only on the frozen base it was trained on."""
    model = _inner(module)
    saved = checkpoint.get("sumlab_adapter")
    if not is_adapted(model):
        if saved is not None:
            raise SumlabError(
                "this checkpoint holds LoRA adapter weights only: resume it with the qlora preset it was trained with"
            )
        return
    if saved is None:
        raise SumlabError("this checkpoint is a full model, not an adapter checkpoint: resume it with qlora=none")
    method = getattr(model, INFO_ATTR, {}).get("method")
    if saved.get("method") != method:
        raise SumlabError(
            f"this checkpoint was trained with qlora={saved.get('method')}, not qlora={method}: resume with that preset"
        )
    if saved.get("base") != base_fingerprint(model):
        raise SumlabError(
            "this adapter checkpoint was trained on a different base model (its frozen weights differ): resume "
            "with the same model preset and seed"
        )


# --- export ----------------------------------------------------------------------------------------
def _full_precision_base(model: Any, tokenizer: Any) -> Any:
    """A full-precision copy of the base, without adapters (never the quantized weights)."""
    info = getattr(model, INFO_ATTR)["base"]
    if not is_quantized(model):
        return copy.deepcopy(model).unload()  # drops the LoRA layers and token rows unmerged: the frozen base
    auto = FAMILIES[info["family"]].auto_model
    kwargs = {"dtype": torch.float32}
    if not info["tiny"]:
        kwargs.update(revision=info.get("revision"), trust_remote_code=info.get("trust_remote_code", False))
    base = auto.from_pretrained(info["path"], **kwargs)
    if base.get_input_embeddings().weight.shape[0] != len(tokenizer):  # tags were added after loading
        base.resize_token_embeddings(len(tokenizer))
    return base


def export(model: Any, tokenizer: Any, out_dir: Path) -> Path:
    """``out_dir/adapter/``: the adapter; ``out_dir``: the merged full-precision model. Both with the tokenizer."""
    from peft import PeftModel

    out_dir = Path(out_dir)
    info = getattr(model, INFO_ATTR)
    adapter_dir = out_dir / "adapter"
    generation_config = copy.deepcopy(model.generation_config)
    base = _full_precision_base(model, tokenizer)
    if info["base"]["tiny"]:  # built from a config: no hub id to find it by, so the adapter ships its base
        base.save_pretrained(adapter_dir / "base")
        base_ref = "base"
    else:
        base_ref = info["base"]["path"]
    model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    generation_config.save_pretrained(adapter_dir)
    meta = {"method": info["method"], "base": base_ref, "family": info["base"]["family"],
            "revision": info["base"].get("revision"), "trust_remote_code": info["base"].get("trust_remote_code", False),
            "vocab_size": len(tokenizer)}  # fmt: skip
    (adapter_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.generation_config = generation_config
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def load_adapter(path: Any, dtype: Optional[torch.dtype] = None) -> tuple[Any, Any]:
    """An exported ``adapter/`` directory -> (peft model on its full-precision base, tokenizer)."""
    from peft import PeftModel
    from transformers import AutoTokenizer, GenerationConfig

    path = Path(path)
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise SumlabError(f"{path} is not a sumlab adapter directory (no {META_FILE}): pass the run's export/adapter")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    base_ref = meta["base"]
    base_path = path / base_ref if (path / base_ref).is_dir() else base_ref
    tokenizer = AutoTokenizer.from_pretrained(path)
    base = FAMILIES[meta["family"]].auto_model.from_pretrained(
        base_path, dtype=dtype or torch.float32, revision=meta.get("revision"),
        trust_remote_code=meta.get("trust_remote_code", False),
    )  # fmt: skip
    if base.get_input_embeddings().weight.shape[0] != len(tokenizer):
        base.resize_token_embeddings(len(tokenizer))
    model = PeftModel.from_pretrained(base, path)
    if (path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(path)
    return model, tokenizer
