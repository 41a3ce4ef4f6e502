"""Training and evaluation batch samplers: length-grouped, token-budgeted, rank-aware and resumable.

Training order is a pure function of ``(seed, epoch)``: every rank computes the same global list of
batches and takes every ``world_size``-th one, so ranks never exchange indices and a resumed run
rebuilds the exact order of the interrupted one. The global list is padded with repeats of its first
batches so every rank gets the same number of batches (a rank that runs out first would hang the
others' gradient all-reduce). Lightning's ``use_distributed_sampler`` must therefore stay off: it
cannot inject its DistributedSampler into a batch sampler, and these already split the work.

Mid-epoch resume uses Lightning 2.6's own mechanism: the fit loop saves ``state_dict()`` of every
train loader that has one (``CombinedLoader._state_dicts``) and hands it back to ``load_state_dict``
before the first batch of a restarted epoch. :class:`ResumableDataLoader` is that loader; it counts the
batches it has *yielded* (not what workers prefetched), and the sampler restarts from there.
torchdata's StatefulDataLoader does the same for arbitrary samplers but copies torch's DataLoader
internals per torch release; counting yielded batches over a deterministic order needs neither.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Optional

import numpy as np
from torch.utils.data import DataLoader, Sampler

from sumlab.data.bucketing import length_batches

MEGABATCH_BATCHES = 50  # batch_size mode: batches per shuffled megabatch sorted by length (transformers' factor)


def _as_columns(lengths: Any) -> np.ndarray:
    """(n, k) int array: one column per padded tensor of a training batch (seq2seq: source, target)."""
    array = np.asarray(lengths, dtype=np.int64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"lengths must be 1-D or 2-D, got shape {array.shape}")
    return array


def padded_tokens(columns: np.ndarray, batch: Sequence[int]) -> int:
    """Tokens of a batch once each column is padded to its longest member: what a token budget counts."""
    return int(len(batch) * columns[list(batch)].max(0).sum()) if len(batch) else 0


def token_budget_batches(columns: np.ndarray, order: np.ndarray, max_tokens: int) -> list[list[int]]:
    """Consecutive runs of ``order`` whose padded size stays within ``max_tokens``.

    An example that alone exceeds the budget (only possible when max_tokens is below the configured
    truncation lengths) gets a batch of its own rather than being dropped.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    widths = np.zeros(columns.shape[1], dtype=np.int64)
    for i in order.tolist():
        grown = np.maximum(widths, columns[i])
        if current and (len(current) + 1) * int(grown.sum()) > max_tokens:
            batches.append(current)
            current, grown = [], columns[i]
        current.append(i)
        widths = grown
    if current:
        batches.append(current)
    return batches


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffled training batches of similar length, this rank's share, resumable mid-epoch.

    ``batch_size`` mode (``max_tokens=None``): transformers' megabatch scheme (a random permutation cut
    into megabatches of ``MEGABATCH_BATCHES`` batches, each sorted by length, then cut into batches),
    with the batch order shuffled too. ``group_by_length=False`` gives plain shuffled batches.

    ``max_tokens`` mode: all examples sorted by length (random tie-breaks each epoch), cut into batches
    whose padded size stays within the budget, batch order shuffled. Sorting globally keeps the number
    of batches the same every epoch, which the LR schedule and Lightning's epoch length rely on.
    """

    def __init__(
        self,
        lengths: Any,
        batch_size: int = 16,
        max_tokens: Optional[int] = None,
        seed: int = 0,
        group_by_length: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        if batch_size < 1 or (max_tokens is not None and max_tokens < 1):
            raise ValueError(f"batch_size ({batch_size}) and max_tokens ({max_tokens}) must be at least 1")
        self.columns = _as_columns(lengths)
        self.batch_size, self.max_tokens, self.seed = batch_size, max_tokens, seed
        self.group_by_length = group_by_length
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.start = 0  # batches of this epoch already consumed (set by load_state_dict), skipped once
        self._len: Optional[int] = None

    @property
    def sampler(self) -> "LengthGroupedBatchSampler":
        # Lightning calls set_epoch on `loader.sampler` and `loader.batch_sampler.sampler` only
        # (lightning.fabric.utilities.data._set_sampler_epoch), never on the batch sampler itself.
        return self

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.start = 0  # a restored position belongs to the epoch it was saved in
        self.epoch = epoch

    def global_batches(self, epoch: int) -> list[list[int]]:
        """Every rank's batches for ``epoch``, before the round-robin split (a pure function of seed, epoch)."""
        n = len(self.columns)
        rng = np.random.default_rng([self.seed, epoch])
        if self.max_tokens is not None:
            keys = [rng.random(n)] + [self.columns[:, c] for c in reversed(range(self.columns.shape[1]))]
            order = np.lexsort(keys)[::-1]  # longest first; ties broken at random
            batches = token_budget_batches(self.columns, order, self.max_tokens)
        elif self.group_by_length:
            perm = rng.permutation(n)
            size = self.batch_size * MEGABATCH_BATCHES
            total = self.columns.sum(1)
            batches = []
            for mega in (perm[i : i + size] for i in range(0, n, size)):
                mega = mega[np.argsort(-total[mega], kind="stable")]
                batches += [mega[j : j + self.batch_size].tolist() for j in range(0, len(mega), self.batch_size)]
        else:
            perm = rng.permutation(n)
            batches = [perm[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        batches = [batches[j] for j in rng.permutation(len(batches))]
        short = -len(batches) % self.world_size
        return (batches * self.world_size)[: len(batches) + short]

    def rank_batches(self, epoch: int) -> list[list[int]]:
        return self.global_batches(epoch)[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start = self.start, 0
        yield from self.rank_batches(self.epoch)[start:]

    def __len__(self) -> int:
        if self._len is None:  # the same every epoch (see the class docstring)
            self._len = len(self.rank_batches(0))
        return self._len

    def state_dict(self, consumed: int) -> dict[str, Any]:
        return {"epoch": self.epoch, "consumed": consumed, "world_size": self.world_size, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        # Batches are dealt round robin from one global list: n consumed per rank out of w ranks is
        # the first n*w of that list, wherever the run resumes (a restart on fewer or more processes
        # repeats at most world_size-1 batches).
        self.start = int(state["consumed"]) * int(state.get("world_size", 1)) // self.world_size


class ResumableDataLoader(DataLoader):
    """A DataLoader whose ``state_dict()`` is the position of its batch sampler in the current epoch.

    Lightning's fit loop saves it in every checkpoint and restores it when a run restarts mid-epoch;
    the sampler then skips the batches already trained on. ``__iter__`` is lazy (a generator) so the
    order is read at the first batch, after Lightning has called ``set_epoch``.
    """

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        self._consumed = self.batch_sampler.start
        for batch in super().__iter__():
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return self.batch_sampler.state_dict(getattr(self, "_consumed", 0))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batch_sampler.load_state_dict(state)


class EvalBatchSampler(Sampler[list[int]]):
    """Validation/test: longest-first length-sorted batches dealt round robin, the same count per rank.

    Generation cost follows the padded width, so sorted batches generate faster; scores are
    order-independent (RougeMetric keys every score by example index). Ranks short of a batch repeat
    the shortest ones: Lightning refuses an empty loader on one rank; the repeats are dropped by index
    before any ROUGE mean, and this rank's batches from ``real_batches`` on are left out of the loss.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, sort: bool = True, rank: int = 0, world_size: int = 1
    ) -> None:
        batches = length_batches(lengths, batch_size, sort)
        self.real_batches = len(range(rank, len(batches), world_size))  # the repeats come after them
        short = -len(batches) % world_size
        if batches and short:
            batches += (batches[::-1] * world_size)[:short]
        self.batches = batches[rank::world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
