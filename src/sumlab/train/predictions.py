"""The test step's predictions, one line per example: ``test_predictions.jsonl`` in the run directory.

Each rank appends its test batches to ``.test_predictions/rank{R}.jsonl`` as they are generated (nothing is held in
memory); after the test, global rank 0 merges the shards into the dataset's order with each example once (a batch
that a rank short of one repeats is not written; any example seen twice is dropped by its index), streams them to a
temporary name that is renamed when complete, and removes the shards. A line: ``id``, ``prediction``, ``reference``
(or ``references``, a list) and the example's ROUGE as the test step scored it (ROUGE_KEYS), so that the analysis
and the leaderboard need not score it again. The bootstrap interval of the mean rouge_combined goes to metrics.json.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as L
import numpy as np
from lightning.pytorch.callbacks import Callback

from sumlab.core.io import atomic_file
from sumlab.core.stats import bootstrap_mean
from sumlab.text.rouge import ROUGE_KEYS

TEST_PREDICTIONS = "test_predictions.jsonl"
SHARDS = ".test_predictions"
_COMBINED = ("rouge1", "rouge2", "rougeL")  # rouge_combined is their mean


class TestPredictionWriter(Callback):
    """Writes what ``SummarizationModule.test_step`` returns to this rank's shard, one ``idx<TAB>json`` line each."""

    def __init__(self, run_dir: str | Path) -> None:
        self.shards = Path(run_dir) / SHARDS
        self._file: Any = None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.shards.mkdir(parents=True, exist_ok=True)
        self._file = open(self.shards / f"rank{trainer.global_rank}.jsonl", "w", encoding="utf-8")

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:  # fmt: skip
        if outputs is None:  # a repeated batch
            return
        self._file.write("".join(f"{i}\t{json.dumps(r, ensure_ascii=False)}\n" for i, r in _records(outputs)))

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close()
        trainer.strategy.barrier()  # every shard complete before rank 0 merges them

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _records(outputs: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(idx, line record) per example of a test batch."""
    for idx, id_, prediction, refs, scores in zip(outputs["idx"], outputs["ids"], outputs["predictions"],
                                                  outputs["references"], outputs["scores"], strict=True):  # fmt: skip
        record = {"id": id_, "prediction": prediction, "references" if isinstance(refs, list) else "reference": refs}
        yield idx, {**record, **dict(zip(ROUGE_KEYS, scores, strict=True))}


def _index(shards: list[Path]) -> np.ndarray:
    """Per shard line: example index, shard, byte offset and length of its JSON, and its rouge_combined."""
    rows = []
    for number, shard in enumerate(shards):
        offset = 0
        with open(shard, "rb") as f:
            for line in f:
                head, _, body = line.partition(b"\t")
                scores = json.loads(body)
                combined = sum(scores[k] for k in _COMBINED) / len(_COMBINED)
                rows.append((int(head), number, offset + len(head) + 1, len(body), combined))
                offset += len(line)
    dtype = [("idx", np.int64), ("shard", np.int32), ("offset", np.int64), ("length", np.int64), ("combined", float)]
    return np.array(rows, dtype=dtype)


def merge(run_dir: str | Path, expected: Optional[float], world_size: int) -> dict[str, Any]:
    """Rank 0, after the test: test_predictions.jsonl from the ranks' shards (a stale one of an earlier, larger run
    in the same directory is ignored); returns metrics.json's ``intervals``: the bootstrap interval of the mean
    per-example rouge_combined. Empty (and no file) without shards, or when they hold fewer examples than the test
    scored (``expected``: ranks on nodes that do not share the run directory)."""
    run_dir = Path(run_dir)
    shards = [s for s in (run_dir / SHARDS / f"rank{r}.jsonl" for r in range(world_size)) if s.is_file()]
    index = _index(shards)
    _, first = np.unique(index["idx"], return_index=True)  # sorted by index, the first occurrence of each
    kept = index[first]
    if not len(kept) or (expected is not None and len(kept) != expected):
        if shards:
            print(f"note: {run_dir / SHARDS} holds {len(kept)} of the {expected} test examples (a run directory "
                  f"not shared by every node?): {TEST_PREDICTIONS} not written", file=sys.stderr)  # fmt: skip
        return {}
    with atomic_file(run_dir / TEST_PREDICTIONS) as out, contextlib.ExitStack() as stack:
        files = [stack.enter_context(open(s, "rb")) for s in shards]
        for row in kept:
            f = files[row["shard"]]
            f.seek(row["offset"])
            out.write(f.read(row["length"]).decode("utf-8"))
    shutil.rmtree(run_dir / SHARDS, ignore_errors=True)
    return {"test/rouge_combined": {**bootstrap_mean(kept["combined"]).as_dict(), "examples": len(kept)}}
