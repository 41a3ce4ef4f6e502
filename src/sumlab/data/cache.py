"""Tokenized splits, built once with `Dataset.map(batched=True, num_proc=...)` and memory-mapped by every reader.

A split's cache directory under ``<paths.cache_dir>/data`` is named by a key over everything that
changes its tokens: the raw rows (datasets' fingerprint, plus path, size and mtime of a local file, or
the hub name and revision), the tokenizer (its full serialization and special tokens), the family (its
class source and settings), the template, clean-up switches, lengths and reference columns. A changed
tokenizer therefore never finds an old cache. The directory is built under a temporary name and renamed
when complete, so a reader (another rank, a sweep trial) sees a whole cache or none; a file lock per key
makes processes that start together (torchrun ranks, parallel sweep workers, predict.py's ranks) wait for
one build instead of each tokenizing the corpus.

Why not datasets' own map cache alone: its fingerprint hashes the map function with dill, which is slow
for a closure holding a tokenizer, and it lives next to the source's cache files (none for in-memory
synthetic data); an explicit key also lets us prove what invalidates it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import datasets
import numpy as np
import pyarrow.compute as pc
from datasets.fingerprint import Hasher
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from sumlab.core.io import temp_dir
from sumlab.data.sources import normalize, not_writable, reference_columns, release_memory, source_of, split_paths

FORMAT = 2  # bump when the layout of the tokenized columns (or meta.json) changes
META = "meta.json"
# keys of data.* that change the tokenized rows (batch sizes, workers and samplers do not)
DATA_KEYS = ("text_column", "summary_column", "id_column", "reference_columns", "max_source_length",
             "max_target_length", "source_template", "unescape_newlines", "collapse_whitespace", "strip")  # fmt: skip


def tokenizer_identity(tokenizer: Any) -> str:
    """A digest of everything the tokenizer does: vocabulary, merges, normalizer, added tokens, templates."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # truncation/padding are per-call state that encoding itself changes, not what the tokenizer does
        state = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
    parts = [type(tokenizer).__name__,
             json.dumps(state, sort_keys=True) if backend is not None else Hasher.hash(tokenizer),
             json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str), str(len(tokenizer)),
             str(getattr(tokenizer, "chat_template", None)), str(getattr(tokenizer, "padding_side", None))]  # fmt: skip
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def family_identity(family: Any) -> str:
    """The family's code and settings (prefix, separator, ...): a changed encoder must not reuse old tokens."""
    # private attributes are derived state (collators, the chat-prompt memo), not settings
    settings = {k: v for k, v in vars(family).items() if k != "tokenizer" and not k.startswith("_")}
    return hashlib.sha256((inspect.getsource(type(family)) + Hasher.hash(settings)).encode()).hexdigest()


def _file_origin(path: Path) -> dict[str, Any]:
    stat = os.stat(path)
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns}


def cache_key(raw: datasets.Dataset, cfg: DictConfig, family: Any, split: str) -> str:
    data = OmegaConf.to_container(cfg, resolve=True)
    origin: dict[str, Any] = {"source": source_of(cfg, split), "fingerprint": raw._fingerprint}
    if origin["source"] == "files":
        # every file of the split (data.train_file may list several): a change to any of them is a new key
        origin["files"] = [_file_origin(path) for path in split_paths(cfg, split)]
    elif origin["source"] == "hub":
        origin.update(
            name=data.get("dataset_name"), config=data.get("dataset_config_name"), revision=data.get("revision")
        )
    parts = {
        "format": FORMAT, "split": split, "origin": origin, "rows": len(raw),
        "data": {k: data.get(k) for k in DATA_KEYS}, "tokenizer": tokenizer_identity(family.tokenizer),
        "family": family_identity(family),
    }  # fmt: skip
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _encode(
    batch: dict[str, list], indices: list[int], cfg: DictConfig, family: Any, with_references: bool
) -> dict[str, list]:
    ex = normalize(batch, indices, cfg, with_references)
    has_summary = ex["summary"][0] is not None
    named = getattr(family, "fields", ())  # columns a chat prompt names besides {text}, e.g. {topic}
    feats = [
        family.features(t, s if has_summary else None, cfg.max_source_length, cfg.max_target_length,
                        fields={f: batch[f][j] for f in named if f in batch} if named else None)
        for j, (t, s) in enumerate(zip(ex["text"], ex["summary"], strict=True))
    ]  # fmt: skip
    out: dict[str, list] = {"idx": list(indices), "id": ex["id"]}
    for key in feats[0]:
        out[key] = [f[key] for f in feats]
    source_key = next(iter(feats[0]))  # input_ids / prompt_ids: what generation reads
    out["source_length"] = [len(f[source_key]) for f in feats]
    out["length"] = [sum(len(v) for v in f.values()) for f in feats]
    if has_summary:
        out["summary"] = ex["summary"]
    if "references" in ex:
        out["references"] = ex["references"]
    return out


def _features(family: Any, has_summary: bool, with_references: bool) -> datasets.Features:
    ids = datasets.List(datasets.Value("int32"))  # int32: half the bytes of Python's default int64
    keys = family.feature_keys
    spec = {"idx": datasets.Value("int64"), "id": datasets.Value("string"), keys[0]: ids}
    if has_summary:
        spec[keys[1]] = ids
    spec.update(source_length=datasets.Value("int32"), length=datasets.Value("int32"))
    if has_summary:
        spec["summary"] = datasets.Value("string")
    if with_references:
        spec["references"] = datasets.List(datasets.Value("string"))
    return datasets.Features(spec)


class TokenizedCache:
    """Build-if-missing and load for one data config and family; counts what it built (tests, logs)."""

    def __init__(self, cfg: DictConfig, family: Any, root: str, overwrite: Optional[bool] = None) -> None:
        """``overwrite``: rebuild an existing cache once in this process (default: data.overwrite_cache)."""
        self.cfg, self.family = cfg, family
        self.overwrite = bool(cfg.get("overwrite_cache")) if overwrite is None else overwrite
        self.root = Path(root).expanduser() / "data"
        self.built: list[str] = []  # splits tokenized by this object (not found in the cache)

    def path(self, raw: datasets.Dataset, split: str) -> Path:
        name = str(self.cfg.get("name") or "data").replace("/", "_")
        return self.root / f"{name}-{split}-{cache_key(raw, self.cfg, self.family, split)}"

    def prepare(self, raw: datasets.Dataset, split: str) -> Path:
        """The split's cache directory, built now when missing (or when data.overwrite_cache is set)."""
        path = self.path(raw, split)
        rebuild = self.overwrite and split not in self.built
        if (path / META).is_file() and not rebuild:
            return path
        try:
            (self.root / ".locks").mkdir(parents=True, exist_ok=True)  # beside, not among, the cache directories
            lock = FileLock(str(self.root / ".locks" / f"{path.name}.lock"))
            lock.acquire()
        except OSError as ex:
            raise not_writable(self.root) from ex
        try:  # a process that waited on the lock finds the build done (unless it asked to overwrite)
            if rebuild or not (path / META).is_file():
                self._build_into(raw, split, path)
        finally:
            lock.release()
        return path

    def _build_into(self, raw: datasets.Dataset, split: str, path: Path) -> None:
        try:
            tmp = temp_dir(self.root, ".tmp-")
        except OSError as ex:
            raise not_writable(self.root) from ex
        started = time.perf_counter()
        try:
            self._build(raw, split, tmp)
            if path.exists():  # overwrite_cache
                old = path.with_name(f".old-{path.name}-{os.getpid()}")
                path.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(path)
        except OSError:
            if not (path / META).is_file():  # a builder on another machine (no shared lock) finished first
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        release_memory()
        self.built.append(split)
        print(
            f"data: tokenized {split} ({len(raw)} rows, {time.perf_counter() - started:.1f} s) into {path}", flush=True
        )

    def _encoding(self, raw: datasets.Dataset | datasets.IterableDataset, split: str) -> dict[str, Any]:
        """Dataset.map arguments shared by the cached build and data.streaming."""
        has_summary = self.cfg.summary_column in raw.column_names
        with_refs = split != "train" and bool(reference_columns(self.cfg, list(raw.column_names)))
        return dict(function=_encode, batched=True, with_indices=True, remove_columns=raw.column_names,
                    fn_kwargs={"cfg": self.cfg, "family": self.family, "with_references": with_refs},
                    features=_features(self.family, has_summary, with_refs))  # fmt: skip

    def stream(self, raw: datasets.IterableDataset, split: str) -> datasets.IterableDataset:
        return raw.map(**self._encoding(raw, split))

    def _build(self, raw: datasets.Dataset, split: str, out: Path) -> None:
        workers = self.cfg.get("preprocessing_num_workers") or None
        workers = min(workers, len(raw)) if workers and workers > 1 else None
        tokenized = raw.map(
            **self._encoding(raw, split), num_proc=workers, cache_file_name=str(out / "tokens.arrow"),
            new_fingerprint=out.name, load_from_cache_file=False, desc=f"tokenizing {split}",
        )  # fmt: skip
        files = [Path(f["filename"]).name for f in tokenized.cache_files]
        meta = {"split": split, "rows": len(tokenized), "files": files, "digest": rows_digest(tokenized)}
        (out / META).write_text(json.dumps(meta), encoding="utf-8")

    @staticmethod
    def load(path: Path) -> datasets.Dataset:
        """Memory-mapped: the rows stay on disk, pages are shared by every process reading them."""
        meta = json.loads((path / META).read_text(encoding="utf-8"))
        parts = [datasets.Dataset.from_file(str(path / f)) for f in meta["files"]]
        return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)

    def dataset(self, raw: datasets.Dataset, split: str) -> datasets.Dataset:
        return self.load(self.prepare(raw, split))

    @staticmethod
    def digest(path: Path) -> str:
        """The split's ``rows_digest``, computed once when the cache was built."""
        return json.loads((path / META).read_text(encoding="utf-8"))["digest"]


def source_column(columns: Any) -> str:
    """The tokenized column generation reads: input_ids (seq2seq) or prompt_ids (causal)."""
    return "input_ids" if "input_ids" in columns else "prompt_ids"


def rows_digest(ds: datasets.Dataset) -> str:
    """A digest of every row's id and source token ids (what generation reads), from Arrow a chunk at a time.

    Identifies "the same input" for predict.py's resume check: the texts as the model sees them (template,
    clean-up, truncation), not the file they came from.
    """
    source = source_column(ds.column_names)
    h = hashlib.sha256()
    for batch in ds.data.table.select(["id", source]).to_batches(max_chunksize=10_000):
        ids, tokens = batch.column(0), batch.column(1)
        h.update("\0".join(ids.to_pylist()).encode())
        h.update(pc.list_value_length(tokens).to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
        h.update(pc.list_flatten(tokens).to_numpy(zero_copy_only=False).astype(np.int32).tobytes())
    return h.hexdigest()
