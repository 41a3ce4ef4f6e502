"""A hub id or a local Hugging Face directory -> (model, tokenizer), with one clear line when it cannot be had.

Gated models (Llama 3, Gemma 3) need an access token: huggingface_hub reads it from the ``HF_TOKEN``
environment variable (or ``hf auth login``); sumlab never takes one from a config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from transformers import AutoTokenizer

from sumlab.core.errors import SumlabError
from sumlab.family import FAMILIES


def load_pretrained(
    name_or_path: str,
    family: str,
    revision: Any = None,
    trust_remote_code: bool = False,
    model_kwargs: Optional[dict[str, Any]] = None,
) -> tuple[Any, Any]:
    """A hub id or local HF directory -> (model, tokenizer); one clear error when it cannot be had.

    ``model_kwargs`` go to the model's ``from_pretrained`` only (e.g. ``quantization_config`` from models.adapters).
    """
    tokenizer = load_tokenizer(name_or_path, revision, trust_remote_code)
    return load_model(name_or_path, family, revision, trust_remote_code, model_kwargs), tokenizer


def load_tokenizer(name_or_path: str, revision: Any = None, trust_remote_code: bool = False) -> Any:
    """The tokenizer alone (with EOS as pad token when it has none)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as ex:
        raise _unloadable(name_or_path, ex) from None
    return pad_as_eos(tokenizer)


def load_model(
    name_or_path: str,
    family: str,
    revision: Any = None,
    trust_remote_code: bool = False,
    model_kwargs: Optional[dict[str, Any]] = None,
) -> Any:
    """The model's weights (the expensive part: predict.py loads them only where they are needed)."""
    kwargs = {"revision": revision, "trust_remote_code": trust_remote_code, **(model_kwargs or {})}
    try:
        return FAMILIES[family].auto_model.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as ex:
        raise _unloadable(name_or_path, ex) from None


def _unloadable(name_or_path: str, ex: Exception) -> SumlabError:
    local = Path(name_or_path).exists()
    where = (
        "that directory holds no loadable model"
        if local
        else (
            "it is neither a local directory nor in the Hugging Face cache, and the hub is unreachable "
            "(gated models also need HF_TOKEN in the environment)"
        )
    )
    return SumlabError(
        f"cannot load model {name_or_path!r}: {where} ({type(ex).__name__}); "
        "set model.name_or_path to a local HF directory, or download it where there is internet"
    )


def pad_as_eos(tokenizer: Any) -> Any:
    """The tokenizer with a pad token: GPT-2 and Llama 3 have none; EOS is the usual stand-in."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
