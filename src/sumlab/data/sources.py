"""Read and check one split as a 🤗 `datasets.Dataset`: local files, a hub dataset, or the synthetic set.

Rows stay in Arrow files (datasets' own cache, memory-mapped): nothing here holds a split in Python
lists. Every check that can fail on the data runs here, before any tokenization, and raises one
SumlabError line naming the row, column or key to fix.
"""

from __future__ import annotations

import codecs
import csv
import ctypes
import json
import logging
import re
import string
import sys
from pathlib import Path
from typing import Any, Optional

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from omegaconf import DictConfig

from sumlab.core.errors import SumlabError
from sumlab.data import synthetic

FILE_KEY = {"train": "train_file", "validation": "validation_file", "test": "test_file"}
LIMIT_KEY = {"train": "max_train_samples", "validation": "max_eval_samples", "test": "max_predict_samples"}
HUB_SPLIT_KEY = {"train": "train_split", "validation": "validation_split", "test": "test_split"}
# datasets' packaged builders; TSV is CSV with a tab separator
READERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}

Example = dict  # {"id": str, "text": str, "summary": str | None[, "references": list[str]]}


def split_paths(cfg: DictConfig, split: str) -> list[Path]:
    """The configured files of a split (data.train_file may list several), resolved against data.dir; [] for none."""
    names = cfg.get(FILE_KEY[split])
    if not names:
        return []
    paths = [Path(name).expanduser() for name in ([names] if isinstance(names, str) else names)]
    return [Path(cfg.dir).expanduser() / p if not p.is_absolute() and cfg.get("dir") else p for p in paths]


def source_of(cfg: DictConfig, split: str) -> str:
    """synthetic, files or hub: a preset with a hub name reads local files when they exist, else the hub."""
    if cfg.source in ("synthetic", "hub"):
        return cfg.source
    if cfg.get("dataset_name") and not any(p.exists() for p in split_paths(cfg, split)):
        return "hub"
    return "files"


def has_split(cfg: DictConfig, split: str) -> bool:
    """Whether the split is configured at all (a file key or a hub dataset)."""
    return cfg.source != "files" or bool(split_paths(cfg, split)) or bool(cfg.get("dataset_name"))


def load_raw(
    cfg: DictConfig,
    split: str,
    require_summary: bool = True,
    seed: int = 0,
    limit_key: Optional[str] = None,
    cache_dir: Optional[str] = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """The split's rows as read (every column), checked and limited; memory-mapped unless synthetic.

    ``cache_dir``: where datasets keeps its Arrow copy of files and hub data (None: its own default).
    The first N rows are kept where ``limit_key`` (default: the split's own max_*_samples key) is set.
    With data.streaming an IterableDataset: rows are read as they are used, so only its columns are
    checked up front (a bad cell fails when it is reached).
    """
    source = source_of(cfg, split)
    limit = cfg.get(limit_key or LIMIT_KEY[split])
    if source == "files":
        return _load_files(cfg, split, require_summary, cache_dir, limit)
    if source == "synthetic":
        ds = datasets.Dataset.from_list(synthetic.generate_split(split, int(cfg.synthetic_sizes[split]), seed))
        where = f"the synthetic {split} split"
    else:
        ds, where = _from_hub(cfg, split, cache_dir), f"{cfg.dataset_name} ({cfg.get(HUB_SPLIT_KEY[split])} split)"
    return _checked(ds, cfg, where, split, require_summary, limit)


def _checked(
    ds: datasets.Dataset | datasets.IterableDataset,
    cfg: DictConfig,
    where: str,
    split: str,
    require_summary: bool,
    limit: Optional[int],
) -> datasets.Dataset | datasets.IterableDataset:
    if isinstance(ds, datasets.IterableDataset):
        return _check_stream(ds, cfg, where, require_summary, limit)
    return check(ds, cfg, where, split, require_summary, limit)


def _load_files(
    cfg: DictConfig, split: str, require_summary: bool, cache_dir: Optional[str], limit: Optional[int]
) -> datasets.Dataset | datasets.IterableDataset:
    """The split's file, or its files read as one split (data.train_file: the original and augmented ones).

    Each file is checked on its own, so an error names the file and its row. The split keeps the columns every file
    has: columns of some files only (an augmented file's provenance: the original's id, the method, the model) are
    left out, and no column reaches the model input unless data.source_template or a chat prompt names it.
    """
    paths = split_paths(cfg, split)
    if not paths:
        raise SumlabError(f"data.{FILE_KEY[split]} is not set: pass data.{FILE_KEY[split]}=path/to/{split}.jsonl")
    streaming = bool(cfg.get("streaming"))
    one = len(paths) == 1
    parts = [
        _checked(_from_file(path, cache_dir, streaming), cfg, str(path), split, require_summary, limit if one else None)
        for path in paths
    ]
    if one:
        return parts[0]
    ds = _concatenate(parts, paths, cfg, split)
    if streaming:
        return ds.take(limit) if limit is not None else ds
    if limit is not None and limit < len(ds):
        ds = ds.select(range(limit))
    if cfg.id_column and cfg.id_column in ds.column_names and not _ids_unique(ds, cfg.id_column):
        raise _duplicate_id_error(ds, [len(p) for p in parts], paths, cfg, split)
    return ds


def _concatenate(parts: list[Any], paths: list[Path], cfg: DictConfig, split: str) -> Any:
    """The columns every file has, typed as the first file types them (ids as text), one file after another."""
    if cfg.id_column:
        having = [str(path) for path, part in zip(paths, parts, strict=True) if cfg.id_column in part.column_names]
        lacking = [str(path) for path, part in zip(paths, parts, strict=True) if cfg.id_column not in part.column_names]
        if having and lacking:
            raise SumlabError(
                f"column {cfg.id_column!r} (data.id_column) not in {lacking[0]}, though {having[0]} has it: "
                f"give every file of data.{FILE_KEY[split]} ids, or set data.id_column=null"
            )
    shared = [c for c in parts[0].column_names if all(c in part.column_names for part in parts[1:])]
    first = parts[0].features
    target = datasets.Features({c: datasets.Value("string") if c == cfg.id_column else first[c] for c in shared})
    aligned = []
    for path, part in zip(paths, parts, strict=True):
        part = part.select_columns(shared)
        if part.features == target:
            aligned.append(part)
        elif isinstance(part, datasets.IterableDataset):
            # concatenated streams read each part's own source: the cast must be a step of the stream itself
            aligned.append(part.map(batched=True, features=target))
        else:
            try:
                aligned.append(part.cast(target))
            except Exception:  # datasets/pyarrow raise several types for an impossible cast
                column = next(c for c in shared if part.features[c] != target[c])
                raise SumlabError(
                    f"column {column!r} of {path} holds {part.features[column]}, but {paths[0]} holds "
                    f"{target[column]}: give the files of data.{FILE_KEY[split]} the same column types"
                ) from None
    return datasets.concatenate_datasets(aligned)


def _duplicate_id_error(
    ds: datasets.Dataset, sizes: list[int], paths: list[Path], cfg: DictConfig, split: str
) -> SumlabError:
    """Names an id found in two of the files, and both files (error path only: reads the ids)."""
    ends, seen = np.cumsum(sizes), {}
    for row, value in enumerate(ds[cfg.id_column]):
        path = paths[int(np.searchsorted(ends, row, side="right"))]
        if value in seen:
            return SumlabError(
                f"id {value!r} (data.id_column={cfg.id_column}) is in both {seen[value]} and {path}: ids must be "
                f"unique across data.{FILE_KEY[split]}'s files; give augmented rows their own ids "
                f"(e.g. {value}#aug1), or set data.id_column=null"
            )
        seen[value] = path
    return SumlabError(f"ids in column {cfg.id_column!r} of data.{FILE_KEY[split]} are not unique")


def _check_stream(
    ds: datasets.IterableDataset, cfg: DictConfig, where: str, require_summary: bool, limit: Optional[int]
) -> datasets.IterableDataset:
    ds = ds._resolve_features()  # reads the first rows: their columns are checked like a file's
    columns = list(ds.column_names)
    for column, key, needed in (
        (cfg.text_column, "text_column", True),
        (cfg.summary_column, "summary_column", require_summary),
    ):
        if needed and column not in columns:
            raise SumlabError(f"column {column!r} (data.{key}) not in {where}; it has {columns}: set data.{key}")
    check_template(cfg, columns, where)
    return ds.take(limit) if limit is not None else ds


def load_split(
    cfg: DictConfig,
    split: str,
    require_summary: bool = True,
    seed: int = 0,
    limit_key: Optional[str] = None,
    cache_dir: Optional[str] = None,
    keep_columns: bool = False,
) -> list[Example]:
    """Examples of one split as {"id", "text", "summary"} (+ "references"), template and clean-up applied.

    ``keep_columns``: each example also gets "fields", the row's raw columns (a chat prompt's ``{topic}``).

    For callers that want Python rows (prediction, tests); training tokenizes `load_raw` in Arrow instead.
    """
    ds = load_raw(cfg, split, require_summary, seed, limit_key, cache_dir)
    examples: list[Example] = []
    for batch in ds.iter(batch_size=1000):  # a Dataset or, with data.streaming, an IterableDataset
        start = len(examples)
        columns = normalize(
            batch, range(start, start + len(batch[cfg.text_column])), cfg, with_references=split != "train"
        )
        if keep_columns:
            columns["fields"] = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        examples += [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]
    return examples


# --- reading ------------------------------------------------------------------------------------


def _from_file(
    path: Path, cache_dir: Optional[str], streaming: bool = False
) -> datasets.Dataset | datasets.IterableDataset:
    if not path.is_file():
        raise SumlabError(f"data file not found: {path} (check data.dir and the data.*_file keys)")
    if path.stat().st_size == 0:
        raise SumlabError(f"data file is empty: {path}")
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise SumlabError(
            f"unsupported data file type {path.suffix!r}: {path} (use .jsonl, .json, .csv, .tsv or .parquet)"
        )
    _writable(cache_dir)
    kwargs: dict[str, Any] = {}
    if kind == "csv":
        header = _csv_header(path)
        # every cell as text, empty cells as "" (not NaN), as Excel and pandas' dtype=str read them
        kwargs = {"sep": "\t" if path.suffix.lower() == ".tsv" else ",", "keep_default_na": False,
                  "encoding": "utf-8-sig",
                  "features": datasets.Features({c: datasets.Value("string") for c in header})}  # fmt: skip
    try:
        ds = datasets.load_dataset(
            kind, data_files=str(path), split="train", cache_dir=cache_dir, streaming=streaming, **kwargs
        )
    except PermissionError as ex:
        raise not_writable(ex.filename or cache_dir) from None
    except Exception as ex:  # the readers (pyarrow, pandas) raise many types for a malformed file
        _check_utf8(path)
        if kind == "json":
            _check_json(path)
        cause = str(ex.__cause__ or ex).splitlines()[0][:200] if str(ex.__cause__ or ex) else type(ex).__name__
        raise SumlabError(f"cannot read {kind.upper()} file {path}: {cause}") from None
    if streaming:
        return ds
    release_memory()
    if len(ds) == 0:
        raise SumlabError(f"data file has no rows: {path}")
    return ds


def release_memory() -> None:
    """Hand back what a one-time conversion (file -> Arrow, tokenization) freed but the allocators keep.

    Arrow's pool and glibc's heap keep freed buffers (80 MB after converting a 15 MB JSONL file); the
    process that built a cache trains on, so it would otherwise carry them for the whole run.
    """
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim this way
        pass


def _csv_header(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        try:
            first = f.readline()
        except UnicodeDecodeError:
            _check_utf8(path)
    if not first.strip():
        raise SumlabError(f"data file is empty: {path}")
    return next(csv.reader([first], delimiter="\t" if path.suffix.lower() == ".tsv" else ","))


def _check_utf8(path: Path) -> None:
    """A non-UTF-8 file gets its own line; only called once a reader failed, so good files are read once."""
    decoder, offset = codecs.getincrementaldecoder("utf-8")(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as ex:
                raise SumlabError(
                    f"data file is not UTF-8: {path} (byte {offset + ex.start}); "
                    "re-save it as UTF-8, e.g. iconv -f cp949 -t utf-8"
                ) from None
            offset += len(chunk)


def _writable(cache_dir: Optional[str]) -> None:
    if cache_dir is not None:
        try:
            Path(cache_dir).expanduser().mkdir(parents=True, exist_ok=True)
        except OSError:
            raise not_writable(cache_dir) from None


def _check_json(path: Path) -> None:
    """Name the first line that is not JSON (pyarrow's message counts blocks, not lines); error path only."""
    with open(path, encoding="utf-8-sig") as f:
        if f.read(4096).lstrip().startswith("["):
            f.seek(0)
            try:
                json.load(f)
            except json.JSONDecodeError as ex:
                raise SumlabError(f"invalid JSON in {path}: {ex}") from None
            return
        f.seek(0)
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError as ex:
                    raise SumlabError(f"invalid JSON on line {number} of {path}: {ex.msg}") from None


def not_writable(where: Any) -> SumlabError:
    return SumlabError(
        f"cache directory is not writable: {where}: set paths.cache_dir (env SUMLAB_CACHE_DIR) to a writable directory"
    )


def _from_hub(cfg: DictConfig, split: str, cache_dir: Optional[str]) -> datasets.Dataset:
    name, hub_split = cfg.dataset_name, cfg.get(HUB_SPLIT_KEY[split])
    if not name:
        raise SumlabError("data.source=hub needs data.dataset_name (e.g. abisee/cnn_dailymail)")
    _writable(cache_dir)
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # offline, its retry warnings would bury the one line that says what to do
    try:
        ds = datasets.load_dataset(
            name,
            cfg.get("dataset_config_name"),
            revision=cfg.get("revision"),
            split=hub_split,
            cache_dir=cache_dir,
            **({"streaming": True} if cfg.get("streaming") else {}),
        )
        release_memory()
        return ds
    except PermissionError as ex:
        raise not_writable(ex.filename or cache_dir) from None
    except ValueError as ex:
        if "split" in str(ex).lower():
            raise SumlabError(
                f"dataset {name} has no split {hub_split!r}: set data.{HUB_SPLIT_KEY[split]} "
                f"({str(ex).splitlines()[0][:160]})"
            ) from None
        raise _hub_error(cfg, split, ex) from None
    except Exception as ex:  # offline, unknown name, gated: datasets raises many types
        raise _hub_error(cfg, split, ex) from None
    finally:
        hub_log.setLevel(level)


def _hub_error(cfg: DictConfig, split: str, ex: Exception) -> SumlabError:
    paths = split_paths(cfg, split)
    local = (
        f"or put the files under data.dir={cfg.get('dir')} ({', '.join(p.name for p in paths)})"
        if paths
        else f"or set data.{FILE_KEY[split]}=path/to/{split}.jsonl"
    )
    return SumlabError(
        f"cannot load dataset {cfg.dataset_name!r} ({type(ex).__name__}): it is not in the local cache and the hub "
        f"is unreachable or does not have it; download it where there is internet, {local}"
    )


# --- checks ---------------------------------------------------------------------------------------


def check(
    ds: datasets.Dataset, cfg: DictConfig, where: str, split: str, require_summary: bool, limit: Optional[int]
) -> datasets.Dataset:
    """Columns, cell types, empty rows, ids, references and template placeholders, then the row limit."""
    columns = list(ds.column_names)
    if cfg.text_column not in columns:
        raise SumlabError(
            f"column {cfg.text_column!r} (data.text_column) not in {where}; it has {columns}: set data.text_column"
        )
    has_summary = cfg.summary_column in columns
    if require_summary and not has_summary:
        raise SumlabError(
            f"column {cfg.summary_column!r} (data.summary_column) not in {where}; it has {columns}: "
            "set data.summary_column"
        )
    check_template(cfg, columns, where)
    texts = [cfg.text_column] + ([cfg.summary_column] if has_summary else [])
    for column in texts:
        _check_strings(ds, column, where, skip_empty=bool(cfg.get("skip_empty")))
    if cfg.get("skip_empty"):
        ds = _drop_empty(ds, texts, where)
    if limit is not None and limit < len(ds):
        ds = ds.select(range(limit))
    if len(ds) == 0:
        raise SumlabError(
            f"no rows left in {where} (after data.skip_empty and the max_*_samples limit): nothing to use"
        )
    if cfg.id_column and cfg.id_column in columns:
        if not _ids_unique(ds, cfg.id_column):
            raise SumlabError(
                f"ids in column {cfg.id_column!r} of {where} are not unique: fix them or set data.id_column=null"
            )
    if split != "train" and reference_columns(cfg, columns):
        _check_references(ds, cfg, where)
    return ds


def _ids_unique(ds: datasets.Dataset, column: str) -> bool:
    ids = ds.data.column(column) if ds._indices is None else pa.chunked_array([ds[column][:]])
    return pc.count_distinct(ids.cast(pa.string())).as_py() == len(ds)


def _check_strings(ds: datasets.Dataset, column: str, where: str, skip_empty: bool) -> None:
    """Every cell a string; null only when data.skip_empty drops it. Names the first bad row (from 1)."""
    feature = ds.features[column]
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        if skip_empty:
            return
        nulls = pc.is_null(ds.data.column(column))
        if pc.any(nulls).as_py():
            row = int(np.flatnonzero(nulls.to_numpy(zero_copy_only=False))[0]) + 1
            raise SumlabError(
                f"row {row} of {where}: column {column!r} is empty (null): "
                "fill it, or drop such rows with data.skip_empty=true"
            )
        return
    # A number or list column, or datasets' Json type for mixed cells: find the first offender (error path only).
    for row, value in enumerate(ds[column], 1):
        if value is None and skip_empty:
            continue
        if not isinstance(value, str):
            kind = "null" if value is None else type(value).__name__
            hint = "drop such rows with data.skip_empty=true" if value is None else "every cell must be text"
            raise SumlabError(f"row {row} of {where}: column {column!r} holds a {kind}, not text: {hint}")


def _drop_empty(ds: datasets.Dataset, columns: list[str], where: str) -> datasets.Dataset:
    keep = np.ones(len(ds), dtype=bool)
    for column in columns:
        cells = ds.data.column(column)
        keep &= ~pc.fill_null(pc.equal(pc.utf8_trim_whitespace(cells), ""), True).to_numpy(zero_copy_only=False)
    dropped = int((~keep).sum())
    if dropped:
        print(
            f"note: data.skip_empty: dropped {dropped} of {len(ds)} rows "
            f"with an empty {' or '.join(map(repr, columns))} in {where}",
            file=sys.stderr,
        )
        ds = ds.select(np.flatnonzero(keep))
    return ds


def reference_columns(cfg: DictConfig, columns: list[str]) -> list[str]:
    """The configured reference columns this split has (validation often has only the summary)."""
    wanted = list(cfg.get("reference_columns") or [])
    present = [c for c in wanted if c in columns]
    if wanted and len(present) not in (0, len(wanted)):
        missing = [c for c in wanted if c not in columns]
        raise SumlabError(f"reference columns {missing} (data.reference_columns) not in the data; it has {columns}")
    return present


def scored_against(cfg: DictConfig, columns: list[str]) -> str:
    """What a scored split's predictions are compared with, in words: a named reference column that the split
    lacks falls back to data.summary_column silently in scoring, so training prints this per split."""
    present = reference_columns(cfg, columns)
    if present:
        return f"data.reference_columns {present}"
    named = list(cfg.get("reference_columns") or [])
    summary = f"{cfg.summary_column!r} (data.summary_column)" if cfg.summary_column in columns else "no reference"
    return summary + (f"; it has none of data.reference_columns {named}" if named else "")


def _check_references(ds: datasets.Dataset, cfg: DictConfig, where: str) -> None:
    names = reference_columns(cfg, list(ds.column_names))
    if len(names) == 1 and isinstance(ds.features[names[0]], (datasets.List, datasets.Sequence, datasets.LargeList)):
        cells = ds.data.column(names[0]) if ds._indices is None else pa.chunked_array([ds[names[0]][:]])
        lengths = pc.fill_null(pc.list_value_length(cells), 0).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths.min() == 0 or lengths.min() != lengths.max()):
            row = (
                int(np.flatnonzero(lengths != lengths.max())[0] if lengths.min() else np.flatnonzero(lengths == 0)[0])
                + 1
            )
            raise SumlabError(
                f"row {row} of {where}: column {names[0]!r} (data.reference_columns) "
                f"holds {int(lengths[row - 1])} references, "
                f"others {int(lengths.max())}: every row needs the same number, at least one"
            )
        if pc.any(pc.is_null(pc.list_flatten(cells))).as_py():
            raise SumlabError(
                f"column {names[0]!r} of {where} (data.reference_columns) holds a null reference: fill it in"
            )
        return
    for name in names:
        _check_strings(ds, name, where, skip_empty=False)


def placeholders(template: str) -> list[str]:
    try:
        return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as ex:
        raise SumlabError(
            f"data.source_template={template!r} is not a valid template ({ex}): write columns as {{name}}"
        ) from None


def check_template(cfg: DictConfig, columns: list[str], where: str) -> None:
    unknown = [p for p in placeholders(cfg.get("source_template", "{text}")) if p != "text" and p not in columns]
    if unknown:
        raise SumlabError(
            f"data.source_template names {unknown[0]!r}, not a column of {where} "
            f"(it has {columns}; {{text}} is data.text_column)"
        )


# --- from raw rows to examples (one batched function: datasets.map and load_split share it) ---------------

_LITERAL_NEWLINE = re.compile(r"\\n")
_SPACES = re.compile(r"[^\S\n]+")  # runs of whitespace other than newlines: the line (turn) structure stays
_SPACE_AROUND_NEWLINE = re.compile(r" ?\n ?")


def clean(text: str, cfg: DictConfig) -> str:
    """The configured clean-up switches, in order: literal \\n -> newline, collapse whitespace, strip."""
    if cfg.get("unescape_newlines"):
        text = _LITERAL_NEWLINE.sub("\n", text)
    if cfg.get("collapse_whitespace"):
        text = _SPACE_AROUND_NEWLINE.sub("\n", _SPACES.sub(" ", text))
    if cfg.get("strip"):
        text = text.strip()
    return text


def normalize(batch: dict[str, list], indices: Any, cfg: DictConfig, with_references: bool) -> dict[str, list]:
    """A batch of raw rows -> {"id", "text", "summary"} (+ "references"); ``indices`` are the rows' positions."""
    n = len(batch[cfg.text_column])
    tidy = (
        (lambda t: clean(t, cfg))
        if any(cfg.get(k) for k in ("unescape_newlines", "collapse_whitespace", "strip"))
        else (lambda t: t)
    )
    template = cfg.get("source_template", "{text}")
    texts = [tidy(t or "") for t in batch[cfg.text_column]]
    if template != "{text}":
        fields = [p for p in placeholders(template) if p != "text"]
        texts = [template.format_map({**{f: batch[f][i] for f in fields}, "text": t}) for i, t in enumerate(texts)]
    ids = batch[cfg.id_column] if cfg.id_column and cfg.id_column in batch else indices
    out: dict[str, list] = {"id": [str(i) for i in ids], "text": texts}
    summaries = batch.get(cfg.summary_column)
    out["summary"] = [tidy(s or "") for s in summaries] if summaries is not None else [None] * n
    refs = reference_columns(cfg, list(batch)) if with_references else []
    if refs:
        rows = (
            batch[refs[0]] if len(refs) == 1 and isinstance(batch[refs[0]][0], list) else zip(*(batch[r] for r in refs))
        )
        out["references"] = [[tidy(r) for r in row] for row in rows]
    return out


class Texts:
    """Each row's text then summary, read a batch at a time (models.build scans them for tags and tokenizers).

    Re-iterable like a list, without holding the split in Python strings.
    """

    def __init__(
        self, ds: datasets.Dataset | datasets.IterableDataset, cfg: DictConfig, batch_size: int = 1000
    ) -> None:
        self.ds, self.cfg, self.batch_size = ds, cfg, batch_size

    def __iter__(self) -> Any:
        start = 0
        for batch in self.ds.iter(batch_size=self.batch_size):
            stop = start + len(batch[self.cfg.text_column])
            ex = normalize(batch, range(start, stop), self.cfg, with_references=False)
            start = stop
            for text, summary in zip(ex["text"], ex["summary"], strict=True):
                yield text
                if summary is not None:
                    yield summary
