"""Batches of similar source length, split across ranks as whole batches.

Generation cost grows with the padded batch width, so padding every batch to its own longest input
only pays off when a batch holds inputs of similar length: sort by length, then cut into batches.
Under DDP each rank takes every world_size-th batch (round robin, so the long batches are shared
out too); the batches themselves do not depend on the number of ranks, so N processes produce the
same outputs as one. No example is repeated to even the ranks out: prediction needs no collective
per step, and the merge restores the input order by id.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


def length_batches(lengths: Sequence[int], batch_size: int, sort: bool = True) -> list[list[int]]:
    """Positions into `lengths` grouped in batches: longest first when sorting (ties keep input order)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)) if sort else list(range(len(lengths)))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class BucketBatchSampler(Sampler[list[int]]):
    """A batch sampler (DataLoader(batch_sampler=...)) over length-sorted batches, this rank's share only."""

    def __init__(
        self, lengths: Sequence[int], batch_size: int, sort: bool = True, rank: int = 0, world_size: int = 1
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        self.batches = length_batches(lengths, batch_size, sort)[rank::world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of the padded batch tensors that is padding (what sorting saves)."""
    total = sum(max(lengths[i] for i in b) * len(b) for b in batches if b)
    real = sum(lengths[i] for b in batches for i in b)
    return 1.0 - real / total if total else 0.0
