"""Shards, resume and merge: every input exactly once, in input order, written atomically.

Layout of an output directory::

    shards/meta.json       fingerprint of model + data + generation settings (written first, by rank 0)
    shards/rank{R}.jsonl   one line per finished example, appended and flushed batch by batch
    predictions.jsonl      {"id", "prediction"[, "reference"]} in input order   } temporary name, then
    predictions.csv        id_header,summary_header (output.format=csv)           } renamed: a file that
    metrics.json           ROUGE (with references), speed, lengths, padding         } exists is complete

A killed run leaves shards whose complete lines are kept; a line cut short by the kill has no
newline yet and is dropped (and cut off before the rank appends again). Re-running skips those ids.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as L
from lightning.pytorch.callbacks import BasePredictionWriter

from sumlab.core.errors import SumlabError
from sumlab.core.io import write_atomic, write_json

SHARDS = "shards"
META = "meta.json"
PREDICTIONS = "predictions.jsonl"
CSV_FILE = "predictions.csv"
METRICS = "metrics.json"
FINAL_FILES = (PREDICTIONS, CSV_FILE, METRICS)


def shard_dir(out: Path) -> Path:
    return out / SHARDS


def check_writable(out: Path) -> None:
    """The output directory exists (or is created) and takes files; one clear line otherwise."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as ex:
        raise SumlabError(
            f"output directory {out} is not writable ({ex.strerror or type(ex).__name__}): set output.dir"
        ) from None


def prepare(out: Path, meta: dict[str, Any], overwrite: bool, is_zero: bool) -> None:
    """Refuse to replace a finished output; check that existing shards belong to this same job; write meta."""
    shards = shard_dir(out)
    if (out / PREDICTIONS).exists():
        if not overwrite:
            raise SumlabError(
                f"{out / PREDICTIONS} exists and is complete: pass output.overwrite=true to predict again, "
                "or choose another output.dir"
            )
        if is_zero:
            for name in FINAL_FILES:
                (out / name).unlink(missing_ok=True)
            shutil.rmtree(shards, ignore_errors=True)
    elif overwrite and is_zero:
        shutil.rmtree(shards, ignore_errors=True)
    meta_file = shards / META
    if meta_file.is_file():
        try:
            old = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise SumlabError(f"{meta_file} is damaged: delete {shards} or pass output.overwrite=true") from None
        if old.get("fingerprint") != meta["fingerprint"]:
            what = [k for k in ("model", "data", "generation") if old.get(k) != meta.get(k)] or ["settings"]
            raise SumlabError(
                f"the shards in {shards} were written for a different {' and '.join(what)}: "
                "pass output.overwrite=true to discard them, or choose another output.dir"
            )
    elif any(shards.glob("rank*.jsonl")):
        raise SumlabError(
            f"{shards} holds shards without {META}: they cannot be checked; delete them or pass output.overwrite=true"
        )
    elif is_zero:
        write_json(meta_file, meta)


def _complete_lines(path: Path) -> Iterable[str]:
    data = path.read_bytes()
    end = data.rfind(b"\n")
    if end < 0:
        return []
    return data[: end + 1].decode("utf-8", errors="replace").splitlines()


def _records(out: Path) -> Iterator[dict[str, Any]]:
    """Every finished record in the shards (cut lines dropped), shard by shard."""
    for shard in sorted(shard_dir(out).glob("rank*.jsonl")):
        for line in _complete_lines(shard):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "id" in record:
                yield record


def read_shards(out: Path) -> dict[str, dict[str, Any]]:
    """id -> record of every finished example in any shard (first occurrence wins; cut lines dropped)."""
    done: dict[str, dict[str, Any]] = {}
    for record in _records(out):
        done.setdefault(str(record["id"]), record)
    return done


def done_ids(out: Path) -> set[str]:
    """The ids of every finished example in the shards (without holding their records: candidates are large)."""
    return {str(record["id"]) for record in _records(out)}


def count_shard_lines(out: Path) -> int:
    """Complete lines in all shards: equals the number of inputs when nothing was generated twice."""
    return sum(len(list(_complete_lines(s))) for s in shard_dir(out).glob("rank*.jsonl"))


class ShardWriter(BasePredictionWriter):
    """Appends each batch's records to shards/rank{R}.jsonl and flushes before the next batch starts."""

    def __init__(self, out: Path) -> None:
        super().__init__(write_interval="batch")
        self.out = Path(out)
        self._file: Optional[io.TextIOBase] = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # setup/teardown run on every rank; the predict hooks do not on a rank without batches, which
        # must still leave its (empty) shard.
        path = shard_dir(self.out) / f"rank{trainer.global_rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():  # drop a line a kill cut short, so the next record starts on its own line
            data = path.read_bytes()
            keep = data.rfind(b"\n") + 1
            if keep != len(data):
                with open(path, "r+b") as f:
                    f.truncate(keep)
        self._file = open(path, "a", encoding="utf-8")

    def write_on_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any, batch_indices: Optional[Sequence[int]],
        batch: Any, batch_idx: int, dataloader_idx: int,
    ) -> None:  # fmt: skip
        assert self._file is not None
        self._file.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in prediction["records"]))
        self._file.flush()
        os.fsync(self._file.fileno())

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.close()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def merge(out: Path, examples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The shards' records in input order; SumlabError unless their ids are exactly the dataset's."""
    done = read_shards(out)
    wanted = [e["id"] for e in examples]
    missing = [i for i in wanted if i not in done]
    extra = sorted(set(done) - set(wanted))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} input ids have no prediction (first: {missing[0]!r})")
        if extra:
            parts.append(f"{len(extra)} predicted ids are not in the input (first: {extra[0]!r})")
        raise SumlabError(f"cannot merge the shards in {shard_dir(out)}: {'; '.join(parts)}")
    rows = []
    for e in examples:
        record = done[e["id"]]
        row = {"id": e["id"], "prediction": record["prediction"]}
        if e.get("summary") is not None:
            row["reference"] = e["summary"]
        row["gen_len"] = record.get("gen_len")
        rows.append(row)
    return rows


def read_predictions(out: Path) -> list[dict[str, Any]]:
    """The rows of a finished output's predictions.jsonl, in input order."""
    return [json.loads(line) for line in (out / PREDICTIONS).read_text(encoding="utf-8").splitlines() if line.strip()]


def write_outputs(
    out: Path, rows: Sequence[dict[str, Any]], fmt: str, id_header: str, summary_header: str
) -> list[Path]:
    """predictions.jsonl (and .csv) under temporary names, then renamed: a file that exists is complete."""
    written = []
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([id_header, summary_header])
        w.writerows([r["id"], r["prediction"]] for r in rows)
        write_atomic(out / CSV_FILE, buf.getvalue())
        written.append(out / CSV_FILE)
    lines = (
        json.dumps({k: r[k] for k in ("id", "prediction", "reference") if k in r}, ensure_ascii=False) for r in rows
    )
    write_atomic(out / PREDICTIONS, "".join(line + "\n" for line in lines))  # last: its presence means "complete"
    written.insert(0, out / PREDICTIONS)
    return written
