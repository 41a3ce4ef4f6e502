"""The Lightning side of prediction: the module that generates one batch per step, and this rank's data.

Every rank runs both. With CTranslate2 the engine is built in ``setup`` (which every rank runs, also one
without batches): local rank 0 converts once, the others wait at a barrier, then each loads the converted model.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import datasets
import lightning.pytorch as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from sumlab.data.bucketing import BucketBatchSampler
from sumlab.data.cache import source_column
from sumlab.family import Causal, Seq2Seq
from sumlab.generation import engines
from sumlab.models.loading import LoadedModel

STATS = ("examples", "batches", "input_tokens", "input_padding", "generated_tokens")


class PredictModule(L.LightningModule):
    """Generates one batch per step with its engine and returns the records for the shard writer.

    With CTranslate2 the transformers model is not a submodule (Lightning must not move it to a GPU): it is
    only needed to convert, once, in ``setup`` (which every rank runs, also one without batches), and then
    dropped. Token and padding counts are summed over ranks by ``gather_stats`` after ``Trainer.predict``:
    the predict hooks do not run on a rank without batches, so they cannot hold a collective call.
    """

    def __init__(self, loaded: LoadedModel, family: Seq2Seq | Causal, generation_config: Any, fast_cache: bool,
                 choice: engines.Choice, cache_dir: str, seed: Optional[int]) -> None:  # fmt: skip
        super().__init__()
        # LightningModule.__init__ resets this on the instance, so a class attribute would not count.
        self.allow_zero_length_dataloader_with_multiple_devices = True  # a rank may get no batch of a short input
        self.family, self.generation_config, self.choice = family, generation_config, choice
        self.engine: engines.HFEngine | engines.CT2Engine | None = None
        if choice.backend == "hf":
            self.model = loaded.model
            self.engine = engines.HFEngine(self.model, family, generation_config, fast_cache)
        else:
            self._loaded, self._cache_dir, self._seed = loaded, cache_dir, seed
        self.conversion_seconds: Optional[float] = None
        self.stats = dict.fromkeys(STATS, 0)
        self.seconds = 0.0

    def setup(self, stage: str) -> None:
        if self.engine is not None:
            return
        loaded, trainer = self._loaded, self.trainer
        target = engines.conversion_target(loaded, str(self.choice.compute_type), self._cache_dir)
        if trainer.local_rank == 0:  # once per machine; a shared disk sees one rename win
            self.conversion_seconds = engines.convert(
                loaded.model, loaded.tokenizer, target, str(self.choice.compute_type)
            )
        trainer.strategy.barrier("ctranslate2 conversion")
        self.engine = engines.CT2Engine(target, self.family, self.generation_config, str(self.choice.compute_type),
                                         trainer.strategy.root_device, engines.cpu_threads(), self._seed)  # fmt: skip
        self._loaded = loaded.model = None  # the transformers weights are not needed any more

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if self.choice.backend == "ctranslate2":
            # Lists of token ids, which CTranslate2 places itself; Lightning's default would walk every int
            # (a third of the predict time at 300 short inputs).
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_predict_start(self) -> None:
        self._started = time.perf_counter()

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        assert self.engine is not None
        texts, lengths = self.engine.generate(batch)
        self.count_batch(batch, int(sum(lengths)))
        records = [
            {"id": i, "prediction": t, "gen_len": n} for i, t, n in zip(batch["ids"], texts, lengths, strict=True)
        ]
        return {"records": records}

    def count_batch(self, batch: dict[str, Any], generated_tokens: int) -> None:
        """Add one generated batch to this rank's stats."""
        examples, width = len(batch["ids"]), max(batch["lengths"])
        self.stats["examples"] += examples
        self.stats["batches"] += 1
        self.stats["input_tokens"] += width * examples
        self.stats["input_padding"] += width * examples - sum(batch["lengths"])
        self.stats["generated_tokens"] += generated_tokens

    def on_predict_end(self) -> None:
        self.seconds = time.perf_counter() - self._started

    def gather_stats(self, strategy: Any) -> None:
        """Totals over ranks (every rank calls this, after Trainer.predict); the slowest rank's seconds."""
        values = torch.tensor([float(self.stats[k]) for k in STATS], device=strategy.root_device)
        totals = strategy.reduce(values, reduce_op="sum")
        slowest = strategy.reduce(torch.tensor(self.seconds, device=strategy.root_device), reduce_op="max")
        self.stats = {k: int(v) for k, v in zip(STATS, totals.tolist(), strict=True)}
        self.seconds = float(slowest)


class PredictData(L.LightningDataModule):
    """The rows still to do, memory-mapped from the tokenized cache, in length buckets; this rank's share.

    Lengths come from the cache's ``source_length`` column and rows are read a batch at a time, so a rank's
    private memory does not grow with the corpus.
    """

    def __init__(self, rows: datasets.Dataset, todo: np.ndarray, batch_size: int, sort: bool, collate: Any,
                 num_workers: int) -> None:  # fmt: skip
        super().__init__()
        self.allow_zero_length_dataloader_with_multiple_devices = True
        self.source = source_column(rows.column_names)
        self.lengths = rows.data.column("source_length").to_numpy()[todo]
        self.rows = rows.select_columns(["id", self.source])
        if len(todo) < len(rows):  # a resumed run: an indices mapping over the same files, not a copy
            self.rows = self.rows.select(todo)
        self._collate, self.batch_size, self.sort, self.num_workers = collate, batch_size, sort, num_workers

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self._collate([{self.source: r[self.source]} for r in rows])
        batch["ids"] = [r["id"] for r in rows]
        batch["lengths"] = [len(r[self.source]) for r in rows]
        return batch

    def predict_dataloader(self) -> DataLoader:
        sampler = BucketBatchSampler(
            self.lengths,
            self.batch_size,
            sort=self.sort,
            rank=self.trainer.global_rank,
            world_size=self.trainer.world_size,
        )
        return DataLoader(self.rows, batch_sampler=sampler, collate_fn=self.collate, num_workers=self.num_workers)
