"""The ROUGE metric counts every example once, however the sampler repeated it across ranks."""

from __future__ import annotations

import pytest
import torch

from sumlab.text.rouge import score_corpus
from sumlab.train.metrics import RougeMetric

PREDS = ["the cat sat", "a dog ran home", "birds fly south", "fish swim"]
REFS = ["the cat sat down", "the dog ran", "birds fly", "fish swim fast"]


def test_repeated_examples_count_once() -> None:
    metric = RougeMetric()
    metric.update(torch.tensor([0, 1]), PREDS[:2], REFS[:2], torch.tensor([3, 4]))
    # a second "rank" whose padded batch repeats example 0 (as DistributedSampler pads)
    metric.update(torch.tensor([2, 3, 0]), [*PREDS[2:], PREDS[0]], [*REFS[2:], REFS[0]], torch.tensor([3, 2, 3]))
    result = metric.compute()
    expected = score_corpus(PREDS, REFS)
    assert result["num_examples"] == 4
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum", "rouge_combined"):
        assert result[key] == pytest.approx(expected[key], abs=1e-12), key
    assert result["gen_len"] == pytest.approx(3.0)
