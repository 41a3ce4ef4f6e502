"""Lightning data module: tokenized splits from the cache (memory-mapped Arrow), dynamic padding, and
length-grouped (or token-budget) training batches that resume mid-epoch (data/samplers.py).

Under DDP, Lightning runs ``prepare_data`` on each node's local rank 0 while the other ranks wait; it
builds any missing cache, then every rank's ``setup`` memory-maps the same files. Rows are turned into
Python lists one batch at a time, so a process's private memory does not grow with the corpus.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import datasets
import lightning.pytorch as L
import numpy as np
import torch
from datasets.distributed import split_dataset_by_node
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from sumlab.core.errors import SumlabError
from sumlab.data.cache import TokenizedCache
from sumlab.data.samplers import EvalBatchSampler, LengthGroupedBatchSampler, ResumableDataLoader
from sumlab.family import Causal, Seq2Seq

FEATURE_KEYS = ("input_ids", "labels", "prompt_ids", "target_ids")


class StreamLoader(DataLoader):
    """A streamed split's loader, reshuffled every epoch: Lightning calls ``set_epoch`` on samplers only
    (``_set_sampler_epoch``), never on an IterableDataset, whose buffer shuffle would then repeat epoch 0's
    order. The epoch is read when iteration starts: after ``on_train_epoch_start``, and on a resumed run
    the restored one."""

    def __init__(self, *args: Any, epoch: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch = epoch

    def __iter__(self) -> Any:
        self.dataset.set_epoch(self._epoch())  # before workers copy the dataset
        return super().__iter__()


class SummarizationDataModule(L.LightningDataModule):
    def __init__(self, cfg: DictConfig, family: Seq2Seq | Causal, splits: dict[str, datasets.Dataset], cache_dir: str,
                 seed: int = 0) -> None:  # fmt: skip
        """``splits``: raw rows per split, as `sources.load_raw` returns them; tokenized under ``cache_dir``."""
        super().__init__()
        self.cfg = cfg
        self.family = family
        self.splits = splits
        self.cache = TokenizedCache(cfg, family, cache_dir)
        self._tokenized: dict[str, datasets.Dataset] = {}
        self.seed = seed  # the training order is a function of (seed, epoch) only

    def prepare_data(self) -> None:
        for split, raw in self.splits.items():
            if not isinstance(raw, datasets.IterableDataset):  # streams are tokenized as they are read
                self.cache.prepare(raw, split)

    def setup(self, stage: Optional[str] = None) -> None:
        for split in self.splits:
            self.tokenized(split)

    def tokenized(self, split: str) -> datasets.Dataset | datasets.IterableDataset:
        """The split's tokenized rows: idx, id, token ids (int32), source_length, length, summary/references."""
        if split not in self._tokenized:
            raw = self.splits[split]
            if isinstance(raw, datasets.IterableDataset):
                self._tokenized[split] = self._stream(raw, split)
            else:
                self._tokenized[split] = self.cache.dataset(raw, split)
        return self._tokenized[split]

    def _stream(self, raw: datasets.IterableDataset, split: str) -> datasets.IterableDataset:
        """data.streaming: tokenized lazily; training rows shuffled within a buffer; each rank reads its own rows."""
        ds = self.cache.stream(raw, split)
        if split == "train":
            ds = ds.shuffle(seed=self.seed, buffer_size=self.cfg.shuffle_buffer)  # the run's seed, like the samplers
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            ds = split_dataset_by_node(ds, rank=trainer.global_rank, world_size=trainer.world_size)
        return ds

    def lengths(self, split: str) -> np.ndarray:
        """Tokens per example (source + target), read from the length column without Python lists."""
        ds = self.tokenized(split)
        if isinstance(ds, datasets.IterableDataset):
            raise SumlabError("lengths are not known before reading a stream: not available with data.streaming=true")
        return ds.data.column("length").to_numpy()

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.family.collate([{k: r[k] for k in ("idx", *FEATURE_KEYS) if k in r} for r in rows])
        batch["references"] = [r["references"] if "references" in r else r.get("summary") for r in rows]
        batch["ids"] = [r["id"] for r in rows]  # for the test step's test_predictions.jsonl
        return batch

    def padded_lengths(self, split: str) -> np.ndarray:
        """Per example, the length of each padded training tensor: (source, target), or (sequence,) for causal."""
        length = self.lengths(split)
        if self.family.name != "seq2seq":
            return length[:, None]
        source = self.tokenized(split).data.column("source_length").to_numpy()
        return np.stack([source, length - source], axis=1)

    def _loader(self, split: str, batch_size: int, train: bool) -> DataLoader:
        data = self.tokenized(split)
        workers = self.cfg.num_workers
        if isinstance(data, datasets.IterableDataset):  # order is the stream's (shuffled in _stream)
            return StreamLoader(
                data, batch_size=batch_size, collate_fn=self.collate, num_workers=workers,
                epoch=lambda: self.trainer.current_epoch if self.trainer is not None else 0,
            )  # fmt: skip
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if train:  # shuffled by (seed, epoch), the same batch count on every rank, resumable mid-epoch
            sampler = LengthGroupedBatchSampler(
                self.padded_lengths(split),
                batch_size,
                self.cfg.max_tokens,
                self.seed,
                self.cfg.group_by_length,
                rank,
                world,
            )
        else:  # longest first: generation pads each batch to its longest source
            sources = data.data.column("source_length").to_numpy()
            sampler = EvalBatchSampler(sources, batch_size, rank=rank, world_size=world)
        # its own generator: creating the loader's iterator draws a seed, which must not advance the global
        # torch RNG (dropout) differently in an interrupted and a resumed run
        return (ResumableDataLoader if train else DataLoader)(
            data, batch_sampler=sampler, collate_fn=self.collate, num_workers=workers,
            persistent_workers=workers > 0, generator=torch.Generator().manual_seed(self.seed),
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.cfg.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", self.cfg.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.cfg.eval_batch_size, train=False)
