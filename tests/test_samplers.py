"""Training batch samplers: token budgets hold, every rank gets the same number of batches, the order is
a function of (seed, epoch), and a restored position continues exactly where the loader stopped."""

from __future__ import annotations

import numpy as np
import pytest

from sumlab.data.samplers import EvalBatchSampler, LengthGroupedBatchSampler, ResumableDataLoader, padded_tokens

RNG = np.random.default_rng(0)
LENGTHS = np.stack([RNG.integers(5, 300, 1000), RNG.integers(3, 60, 1000)], 1)  # (source, target) per example


def _epoch(sampler: LengthGroupedBatchSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("world", [1, 2, 3, 8])
@pytest.mark.parametrize(
    "mode", [{"batch_size": 16}, {"max_tokens": 3000}, {"batch_size": 16, "group_by_length": False}]
)
def test_every_example_once_and_equal_batch_counts_across_ranks(world: int, mode: dict) -> None:
    ranks = [LengthGroupedBatchSampler(LENGTHS, seed=3, rank=r, world_size=world, **mode) for r in range(world)]
    for epoch in (0, 1):
        per_rank = [_epoch(s, epoch) for s in ranks]
        assert len({len(b) for b in per_rank}) == 1 and all(len(s) == len(per_rank[0]) for s in ranks)
        seen = [i for batches in per_rank for b in batches for i in b]
        assert set(seen) == set(range(len(LENGTHS)))
        assert len(seen) - len(LENGTHS) <= max(len(b) for bs in per_rank for b in bs) * (
            world - 1
        )  # only padding repeats


def test_token_budget_is_never_exceeded_except_a_lone_overlong_example() -> None:
    sampler = LengthGroupedBatchSampler(LENGTHS, max_tokens=3000, seed=1)
    batches = _epoch(sampler, 0)
    assert all(padded_tokens(LENGTHS, b) <= 3000 for b in batches)
    assert sum(len(b) for b in batches) / len(batches) > 8  # budgets are filled, not one example each
    lengths = LENGTHS.copy()
    lengths[7] = [900, 200]  # 1100 tokens alone, over a 1000 budget: a batch of its own, not dropped
    batches = _epoch(LengthGroupedBatchSampler(lengths, max_tokens=1000, seed=1), 0)
    assert [7] in batches
    assert all(padded_tokens(lengths, b) <= 1000 for b in batches if b != [7])


def test_length_grouping_pads_less_and_order_depends_on_seed_and_epoch_only() -> None:
    def padding(batches: list[list[int]]) -> float:
        return 1 - sum(int(LENGTHS[b].sum()) for b in batches) / sum(padded_tokens(LENGTHS, b) for b in batches)

    grouped = LengthGroupedBatchSampler(LENGTHS, 16, seed=5)
    plain = LengthGroupedBatchSampler(LENGTHS, 16, seed=5, group_by_length=False)
    assert padding(_epoch(grouped, 0)) < 0.5 * padding(_epoch(plain, 0))
    again = LengthGroupedBatchSampler(LENGTHS, 16, seed=5)
    assert _epoch(grouped, 1) == _epoch(again, 1) != _epoch(again, 2)
    assert _epoch(grouped, 1) != _epoch(LengthGroupedBatchSampler(LENGTHS, 16, seed=6), 1)
    token = LengthGroupedBatchSampler(LENGTHS, max_tokens=3000, seed=5)
    assert len(_epoch(token, 0)) == len(_epoch(token, 1)) == len(token)  # the LR schedule counts on it
    assert _epoch(token, 0) != _epoch(token, 1)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_state_resumes_at_the_next_batch(num_workers: int) -> None:
    def loader() -> ResumableDataLoader:
        sampler = LengthGroupedBatchSampler(LENGTHS[:200], 8, seed=2)
        return ResumableDataLoader(list(range(200)), batch_sampler=sampler, num_workers=num_workers,
                                   collate_fn=lambda items: items)  # fmt: skip

    full = loader()
    full.batch_sampler.set_epoch(1)
    expected = list(full)
    first = loader()
    first.batch_sampler.set_epoch(1)
    it = iter(first)
    seen = [next(it) for _ in range(5)]  # workers have prefetched further: the state counts what was yielded
    state = first.state_dict()
    assert state["consumed"] == 5 and state["epoch"] == 1

    second = loader()
    second.load_state_dict(state)
    second.batch_sampler.set_epoch(1)  # Lightning sets the epoch again after restoring
    rest = list(second)
    assert seen + rest == expected
    assert second.state_dict()["consumed"] == len(expected)  # a second resume in the same epoch counts from the start
    second.batch_sampler.set_epoch(2)
    assert len(list(second)) == len(expected)  # the next epoch is whole again


def test_resume_on_a_different_number_of_ranks_skips_what_was_trained() -> None:
    two = [LengthGroupedBatchSampler(LENGTHS, 16, seed=4, rank=r, world_size=2) for r in range(2)]
    state = two[0].state_dict(consumed=6)  # 12 global batches done
    one = LengthGroupedBatchSampler(LENGTHS, 16, seed=4)
    one.load_state_dict(state)
    assert list(one) == one.global_batches(0)[12:]


def test_eval_batches_sorted_and_split_with_one_input_on_many_ranks() -> None:
    sampler = EvalBatchSampler([3, 9, 1, 7], 2)
    assert list(sampler) == [[1, 3], [0, 2]]
    ranks = [EvalBatchSampler([5], 4, rank=r, world_size=3) for r in range(3)]
    assert [list(s) for s in ranks] == [
        [[0]],
        [[0]],
        [[0]],
    ]  # no rank empty (Lightning refuses that); repeats dropped by index
    assert [s.real_batches for s in ranks] == [1, 0, 0]  # ranks 1 and 2 only repeat: left out of the loss
    assert [len(EvalBatchSampler([], 4, rank=r, world_size=2)) for r in range(2)] == [0, 0]
