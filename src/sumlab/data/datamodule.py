"""Lightning data module: tokenized splits, dynamic padding, optional length-grouped training batches."""

from __future__ import annotations

from typing import Any, Optional

import lightning.pytorch as L
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from transformers.trainer_pt_utils import LengthGroupedSampler

from sumlab.data.sources import Example
from sumlab.family import Causal, Seq2Seq


class SummarizationDataModule(L.LightningDataModule):
    def __init__(self, cfg: DictConfig, family: Seq2Seq | Causal, splits: dict[str, list[Example]]) -> None:
        super().__init__()
        self.cfg = cfg
        self.family = family
        self.splits = splits
        self._encoded: dict[str, list[tuple[dict[str, Any], Optional[str]]]] = {}

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

    def _loader(self, split: str, batch_size: int, train: bool) -> DataLoader:
        data = self.encoded(split)
        sampler = None
        if train and self.cfg.group_by_length:
            # transformers' sampler: shuffled megabatches sorted by length, so batches pad little.
            lengths = [sum(len(v) for k, v in f.items() if k != "idx") for f, _ in data]
            sampler = LengthGroupedSampler(batch_size, lengths=lengths)
        workers = self.cfg.num_workers
        return DataLoader(
            data, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
            collate_fn=self.collate, num_workers=workers, persistent_workers=workers > 0,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.cfg.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", self.cfg.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.cfg.eval_batch_size, train=False)
