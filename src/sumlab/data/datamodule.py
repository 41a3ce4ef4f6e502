"""Lightning data module: tokenized splits, dynamic padding, length-grouped (or token-budget) batches."""

from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as L
import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from sumlab.data.samplers import EvalBatchSampler, LengthGroupedBatchSampler, ResumableDataLoader
from sumlab.data.sources import Example
from sumlab.family import Causal, Seq2Seq


class SummarizationDataModule(L.LightningDataModule):
    def __init__(self, cfg: DictConfig, family: Seq2Seq | Causal, splits: dict[str, list[Example]], seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.family = family
        self.splits = splits
        self._encoded: dict[str, list[tuple[dict[str, Any], Optional[str]]]] = {}
        self.seed = seed  # the training order is a function of (seed, epoch) only

    def encoded(self, split: str) -> list[tuple[dict[str, Any], Optional[str]]]:
        """(features with the example's position "idx", reference summary) per example, tokenized once."""
        if split not in self._encoded:
            cfg = self.cfg
            self._encoded[split] = [
                (
                    {"idx": i, **self.family.features(e["text"], e["summary"], cfg.max_source_length, cfg.max_target_length)},
                    e["summary"],
                )
                for i, e in enumerate(self.splits[split])
            ]
        return self._encoded[split]

    def collate(self, items: list[tuple[dict[str, Any], Optional[str]]]) -> dict[str, Any]:
        batch = self.family.collate([features for features, _ in items])
        batch["references"] = [reference for _, reference in items]
        return batch

    def lengths(self, split: str) -> np.ndarray:
        """Per example, the length of each padded training tensor: (source, target), or (sequence,) for causal."""
        return np.array(
            [[len(f["input_ids"]), len(f.get("labels", ()))] if "input_ids" in f
             else [len(f["prompt_ids"]) + len(f.get("target_ids", ()))] for f, _ in self.encoded(split)]
        )  # fmt: skip

    def _loader(self, split: str, batch_size: int, train: bool) -> DataLoader:
        data = self.encoded(split)
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if train:  # shuffled by (seed, epoch), the same batch count on every rank, resumable mid-epoch
            sampler = LengthGroupedBatchSampler(
                self.lengths(split), batch_size, self.cfg.max_tokens, self.seed, self.cfg.group_by_length, rank, world
            )
        else:  # longest first: generation pads each batch to its longest source
            sources = [len(f["input_ids"] if "input_ids" in f else f["prompt_ids"]) for f, _ in data]
            sampler = EvalBatchSampler(sources, batch_size, rank=rank, world_size=world)
        workers = self.cfg.num_workers
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
