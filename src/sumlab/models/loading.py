"""`model_dir` -> the model, its tokenizer and how it was trained to read inputs.

Accepted: a sumlab run directory (its ``export/``), an ``export/`` directory, a Lightning checkpoint
of a sumlab run (``<run>/checkpoints/*.ckpt``: its weights in the run's exported model, or the model
rebuilt from the run's config), any local Hugging Face directory, or a hub name. The run's
``.hydra/config.yaml`` supplies the family, T5 prefix, causal separator or chat prompt (template use,
system and user turns, end-of-turn tokens) and ROUGE tokenizer, so prompts are built as in training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from sumlab.config.schema import enum_value
from sumlab.core.errors import SumlabError
from sumlab.core.io import file_identity, stable_hash
from sumlab.core.runtime import safe_precisions
from sumlab.data.sources import load_split
from sumlab.models import build
from sumlab.models.hub import load_pretrained
from sumlab.text.prompts import DEFAULT_SEPARATOR, DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_PROMPT, T5_PREFIX, ChatPrompt

T5_TYPES = ("t5", "mt5", "umt5", "longt5")  # checkpoints that read T5_PREFIX before a text to summarize


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    family: str  # seq2seq | causal
    prefix: str
    separator: str
    chat: Optional[ChatPrompt]  # causal chat-template prompting, as the run was trained (None: separator format)
    rouge_tokenizer: Optional[str]  # the training run's metrics.tokenizer, when known
    safe_precisions: list[str]  # the run's model.safe_precisions, else by model type (core.runtime.safe_precisions)
    source: str  # what model_dir turned out to be, for messages and metrics.json
    home: Optional[Path] = None  # the local model directory (export/, HF dir); None for a hub name
    max_source_length: Optional[int] = None  # the training run's data.max_source_length, when known
    identity: dict[str, Any] = field(default_factory=dict)  # what makes "the same model", for shard fingerprints
    rouge_remove: Optional[list[str]] = None  # the training run's metrics.remove_tokens, when known


def _run_config(run_dir: Path) -> Optional[DictConfig]:
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return None
    try:
        return OmegaConf.load(path)
    except Exception as ex:  # a hand-edited or truncated file: say which
        raise SumlabError(
            f"cannot read the run config {path}: {type(ex).__name__}; the run directory is damaged"
        ) from None


def _select(cfg: Optional[DictConfig], key: str) -> Any:
    if cfg is None:
        return None
    try:
        return OmegaConf.select(cfg, key, default=None)
    except Exception:  # an interpolation that only resolves inside the training job
        return None


def _string_list(value: Any) -> Optional[list[str]]:
    """A list of strings from a run config, else None (a damaged value falls back like a missing one)."""
    if OmegaConf.is_list(value) or isinstance(value, list):
        items = list(value)
        return items if all(isinstance(v, str) for v in items) else None
    return None


def _weights_identity(directory: Path) -> dict[str, str]:
    files = sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.bin")) + sorted(directory.glob("*.ckpt"))
    return {f.name: file_identity(f) for f in files}


def _is_hf_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve(model_dir: str) -> tuple[str, Path | str, Optional[Path], Optional[Path]]:
    """(kind, HF dir or hub name, run dir or None, checkpoint or None) for a `model_dir` value."""
    path = Path(model_dir).expanduser()
    if path.is_file():
        if path.suffix != ".ckpt":
            raise SumlabError(
                f"model_dir={model_dir} is a file but not a checkpoint: pass a run directory, its export/, "
                "a .ckpt of a sumlab run, a Hugging Face model directory or a hub name"
            )
        run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        return "checkpoint", run / "export", run, path
    if path.is_dir():
        if (path / "export").is_dir() and _is_hf_dir(path / "export"):
            return "run", path / "export", path, None
        if _is_hf_dir(path):
            run = path.parent if (path.parent / ".hydra" / "config.yaml").is_file() else None
            return ("export" if run else "hf_dir"), path, run, None
        hint = (
            " (a run that is still training or failed has no export/: pass one of its checkpoints/*.ckpt)"
            if (path / ".hydra").is_dir()
            else ""
        )
        raise SumlabError(
            f"model_dir={model_dir} holds no model: expected a sumlab run directory with export/, an export/ "
            f"or Hugging Face directory with config.json, or a .ckpt file{hint}"
        )
    looks_local = model_dir.startswith((".", "/", "~")) or model_dir.count("/") > 1 or "\\" in model_dir
    if looks_local:
        raise SumlabError(f"model_dir={model_dir}: no such file or directory")
    return "hub", model_dir, None, None


def _family_of(config: Any) -> str:
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"


def _chat_prompt(overrides: DictConfig, run_cfg: Optional[DictConfig]) -> Optional[ChatPrompt]:
    """The run's chat prompt, with predict's non-null model.* keys on top."""
    run_model = _select(run_cfg, "model")
    run_chat = ChatPrompt.from_config(run_model) if run_model is not None else None
    use = overrides.get("chat_template")
    if not (run_chat is not None if use is None else use):
        return None
    base = run_chat or ChatPrompt(DEFAULT_SYSTEM_PROMPT, DEFAULT_USER_PROMPT)
    prompt, end_of_turn = overrides.get("prompt") or {}, overrides.get("end_of_turn")
    return ChatPrompt(
        base.system if prompt.get("system") is None else prompt.get("system"), prompt.get("user") or base.user,
        base.end_of_turn if end_of_turn is None else tuple(end_of_turn),
    )  # fmt: skip


def load(model_dir: str, overrides: DictConfig, cache_dir: str) -> LoadedModel:
    from transformers import AutoConfig

    kind, where, run, ckpt = resolve(model_dir)
    run_cfg = _run_config(run) if run is not None else None
    family = overrides.family or (enum_value(_select(run_cfg, "model.family")) if run_cfg is not None else None)
    if family is None:
        try:
            family = _family_of(
                AutoConfig.from_pretrained(
                    str(where), revision=overrides.revision, trust_remote_code=overrides.trust_remote_code
                )
            )
        except (OSError, ValueError) as ex:
            if kind == "hub":
                raise SumlabError(
                    f"cannot load model {model_dir!r}: not a local path, and not a hub model in the Hugging Face "
                    f"cache ({type(ex).__name__}); pass a run directory, an export/ or a model downloaded beforehand"
                ) from None
            if kind != "checkpoint":
                raise SumlabError(
                    f"model_dir={model_dir}: its config.json is not a model config ({type(ex).__name__})"
                ) from None
    if family not in ("seq2seq", "causal"):
        raise SumlabError(f"model.family={family} is unknown: use seq2seq or causal")
    if kind == "checkpoint":
        model, tokenizer = _from_checkpoint(ckpt, run, run_cfg, family, cache_dir)
    else:
        model, tokenizer = load_pretrained(str(where), family, overrides.revision, overrides.trust_remote_code)
    model.eval()
    model_type = getattr(model.config, "model_type", "")
    prefix = overrides.prefix
    if prefix is None:
        run_prefix = _select(run_cfg, "model.prefix")
        prefix = run_prefix if run_prefix is not None else (T5_PREFIX if model_type in T5_TYPES else "")
    separator = overrides.separator
    if separator is None:
        separator = _select(run_cfg, "model.separator") or DEFAULT_SEPARATOR
    identity: dict[str, Any] = {"kind": kind, "family": family, "prefix": prefix, "model_type": model_type}
    if kind == "hub":
        identity.update(name=model_dir, revision=overrides.revision)
    else:
        identity["weights"] = {ckpt.name: file_identity(ckpt)} if ckpt is not None else _weights_identity(Path(where))
        identity["config"] = stable_hash(model.config.to_dict())
    chat = _chat_prompt(overrides, run_cfg) if family == "causal" else None
    if family == "causal":
        identity["separator"] = separator
        identity["chat"] = None if chat is None else [chat.system, chat.user, list(chat.end_of_turn)]
    return LoadedModel(
        model=model, tokenizer=tokenizer, family=family, prefix=prefix, separator=separator, chat=chat,
        rouge_tokenizer=_select(run_cfg, "metrics.tokenizer"), source=f"{kind}: {where}", identity=identity,
        max_source_length=_select(run_cfg, "data.max_source_length"),
        safe_precisions=safe_precisions(model_type, _select(run_cfg, "model.safe_precisions")),
        home=None if kind == "hub" else ckpt.parent if ckpt is not None else Path(where),
        rouge_remove=_string_list(_select(run_cfg, "metrics.remove_tokens")),
    )  # fmt: skip


def _from_checkpoint(
    ckpt: Path, run: Path, run_cfg: Optional[DictConfig], family: str, cache_dir: str
) -> tuple[Any, Any]:
    """The run's model with the checkpoint's weights: the run's export/ as skeleton, else rebuilt from its config."""
    import torch

    try:
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)
        state = checkpoint["state_dict"]
    except Exception as ex:  # torch raises many types for a truncated or foreign file
        raise SumlabError(
            f"cannot read checkpoint {ckpt}: {type(ex).__name__}; pass a Lightning .ckpt written by sumlab"
        ) from None
    weights = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    if not weights:
        raise SumlabError(f"checkpoint {ckpt} holds no sumlab model weights (no 'model.*' keys)")
    export = run / "export"
    if _is_hf_dir(export):
        model, tokenizer = load_pretrained(str(export), family)
    elif run_cfg is not None:
        model, tokenizer = _rebuild(run_cfg, cache_dir)
    else:
        raise SumlabError(
            f"checkpoint {ckpt}: its run directory {run} has neither export/ nor .hydra/config.yaml "
            "to rebuild the model from"
        )
    own = model.state_dict()
    # Tied weights (lm_head = shared embedding) are saved once by HF and twice by Lightning: compare what both have.
    missing = [k for k in own if k not in weights]
    bad = [k for k, v in weights.items() if k not in own or own[k].shape != v.shape]
    if bad or len(missing) > len(own) // 2:
        raise SumlabError(f"checkpoint {ckpt} does not fit the model of its run ({len(bad)} mismatched tensors)")
    model.load_state_dict(weights, strict=False)
    return model, tokenizer


def _rebuild(run_cfg: DictConfig, cache_dir: str) -> tuple[Any, Any]:
    try:
        data_cfg, model_cfg = run_cfg.data, run_cfg.model
        cache = str(OmegaConf.select(run_cfg, "paths.cache_dir") or cache_dir)
        train = load_split(data_cfg, "train", seed=int(run_cfg.seed), cache_dir=cache)
        texts = [t for e in train for t in (e["text"], e["summary"])]
        model, tokenizer, _ = build(model_cfg, data_cfg, texts, cache)
    except SumlabError as ex:
        raise SumlabError(f"cannot rebuild the checkpoint's model from its run config: {ex}") from None
    return model, tokenizer
