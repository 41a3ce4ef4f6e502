"""Files a person reads are written whole or not at all; short stable hashes of config values; what ran it."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path, PurePath
from typing import Any, Callable, Optional, TextIO

from filelock import FileLock
from omegaconf import OmegaConf

from sumlab.core.errors import SumlabError

PACKAGES = (
    "sumlab",
    "torch",
    "transformers",
    "lightning",
    "hydra-core",
    "tokenizers",
    "torchmetrics",
    "peft",
    "ctranslate2",
)


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)  # read it the only way POSIX offers: set, then restore at once
    os.umask(mask)
    return mask


def temp_dir(parent: Path, prefix: str) -> Path:
    """A new directory under ``parent`` to fill and then rename into place, with the permissions a plain mkdir
    gives (mkdtemp's are 0700: a teammate could not read a cache or conversion built this way)."""
    parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    path.chmod(0o777 & ~_umask())
    return path


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[TextIO]:
    """A text file written under a temporary name beside ``path`` and renamed to it when the block ends without an
    error (else removed): a reader never sees half a file, and a large one is streamed, not built in memory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide outputs from the rest of a team
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_user_file(path: Path, role: str) -> str:
    """A file a user names (predictions, references, an old config): UTF-8 with or without a BOM, not blank; else
    one SumlabError line naming the file, the problem and the fix."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SumlabError(f"{role} file not found: {path}; check the path") from None
    except UnicodeDecodeError as ex:
        raise SumlabError(
            f"{role} file {path} is not UTF-8 (bad byte at offset {ex.start}); re-save it as UTF-8"
        ) from None
    except OSError as ex:
        raise SumlabError(f"cannot read {role} file {path}: {ex.strerror}; check the path") from None
    if not text.strip():
        raise SumlabError(f"{role} file {path} is empty")
    return text


def json_objects(text: str, path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of JSONL text; a line that is not a JSON object is one error."""
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as ex:
            raise SumlabError(f"{path} line {lineno} is not valid JSON ({ex.msg}); fix or remove that line") from None
        if not isinstance(record, dict):
            raise SumlabError(f'{path} line {lineno} is not a JSON object; write one {{"field": "text"}} per line')
        yield lineno, record


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary name beside ``path``, then rename: a reader never sees half a file."""
    with atomic_file(path) as f:
        f.write(text)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def plain(value: Any) -> Any:
    """A config node as resolved plain containers; any other value unchanged."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def stable_hash(value: Any, length: int = 16) -> str:
    """A short hash of plain data, the same in every process and run (key order ignored)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]


def digest(*parts: Any) -> str:
    """A short stable hash of config values (containers included), for directory names and fingerprints."""
    return stable_hash([plain(p) for p in parts], 8)


def path_name(value: Any) -> str:
    """A readable directory-name part of a model path or hub id: outputs/train/<run>/export -> <run>."""
    parts = [p for p in PurePath(str(value)).parts if p not in ("/", ".", "..", "export", "checkpoints")]
    name = parts[-1] if parts else "model"
    name = re.sub(r"\.ckpt$", "", name)
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name)[-80:] or "model"


def file_identity(path: Path) -> str:
    """Size and a hash of the head and tail of a (weights) file: cheap, and differs between trainings."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
        if size > 1 << 21:
            fh.seek(-(1 << 20), 2)
            h.update(fh.read(1 << 20))
    return f"{size}:{h.hexdigest()[:16]}"


def file_sha256(path: Path) -> str:
    """The full sha256 of a file, read in 1 MiB blocks (never whole into memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def build_dir_once(target: Path, build: Callable[[Path], None], complete: Callable[[Path], bool]) -> bool:
    """Build the directory ``target`` unless ``complete(target)``; whether this call built it.

    ``build(tmp)`` fills a temporary sibling ``.<name>.tmp-*``, renamed to ``target`` when done: a directory
    with the final name is always complete. A file lock beside it (``.<name>.lock``, released by the kernel
    when its holder dies) makes processes that start together (ranks, sweep workers) wait for one build, and
    lets the builder remove the temporary siblings of a build that was killed (SIGKILL, OOM): nobody else can
    be writing them, so they neither accumulate nor confuse a later run. ``complete`` must be cheap and true
    only of a finished build (e.g. "its config.json exists").
    """
    if complete(target):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / f".{target.name}.lock")):
        if complete(target):  # built while this process waited
            return False
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = temp_dir(target.parent, f".{target.name}.tmp-")
        try:
            build(tmp)
            os.rename(tmp, target)
        except OSError:
            if not complete(target):  # a builder on another machine (no shared lock) finished first
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return True


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def git_commit(root: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
