from __future__ import annotations

import re
from collections import Counter

import pytest

from sumlab.data.synthetic import (
    CITIES,
    DAYS,
    NAMES,
    NUMBERS,
    SPECIAL_TOKENS,
    SPLIT_SEEDS,
    generate,
    generate_split,
)


def words(text: str) -> list[str]:
    """Lowercased words; masks/tags and times like 7:30 stay single tokens."""
    return re.findall(r"#\w+#|\d+(?::\d+)?|[a-z]+", text.lower())


def unigram_f1(pred: list[str], ref: list[str]) -> float:
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    p, r = overlap / len(pred), overlap / len(ref)
    return 2 * p * r / (p + r)


def coverage(summary: list[str], dialogue: list[str]) -> float:
    """Share of summary words that occur in the dialogue, i.e. could be copied from it."""
    seen = set(dialogue)
    return sum(w in seen for w in summary) / len(summary)


@pytest.fixture(scope="module")
def data() -> list[dict]:
    return generate(500, seed=0)


def test_deterministic() -> None:
    assert generate(50, 3) == generate(50, 3)
    assert generate(50, 3) != generate(50, 4)


def test_format(data: list[dict]) -> None:
    for ex in data:
        assert set(ex) == {"id", "dialogue", "summary", "topic"}
        lines = ex["dialogue"].split("\n")
        assert 4 <= len(lines) <= 10
        assert all(re.match(r"#Person[123]#: \S", line) for line in lines), ex["dialogue"]
        assert 50 <= len(ex["dialogue"].split()) <= 150
        assert 12 <= len(ex["summary"].split()) <= 35
    assert len({ex["topic"] for ex in data}) >= 8
    masked = sum(bool(re.search(r"#(?!Person)\w+#", ex["dialogue"])) for ex in data)
    assert masked > len(data) // 2


def test_special_tokens_listed(data: list[dict]) -> None:
    # Every emitted tag is listed (so a tokenizer can keep it whole), and every listed one is emitted.
    used = {tok for ex in data for tok in re.findall(r"#\w+#", ex["dialogue"] + ex["summary"])}
    assert used == set(SPECIAL_TOKENS)


def test_summary_slots_come_from_dialogue(data: list[dict]) -> None:
    slots = {w.lower() for w in DAYS + NUMBERS + NAMES + CITIES}
    for ex in data:
        dialogue = set(words(ex["dialogue"]))
        for w in words(ex["summary"]):
            if w in slots or w[0].isdigit():
                assert w in dialogue, (w, ex)


def test_distractors_present(data: list[dict]) -> None:
    # Some dialogues mention a day the summary does not use (e.g. a rejected booking day).
    days = {d.lower() for d in DAYS}
    extra = sum(bool((set(words(ex["dialogue"])) - set(words(ex["summary"]))) & days) for ex in data)
    assert extra > len(data) // 10


def test_splits_differ() -> None:
    splits = {split: generate_split(split, 1000, seed=0) for split in SPLIT_SEEDS}
    assert splits["train"][42]["id"] == "synthetic_train_00042"
    train = {ex["dialogue"] for ex in splits["train"]}
    for split in ("validation", "test"):
        shared = sum(ex["dialogue"] in train for ex in splits[split])
        assert shared < 0.01 * len(splits[split])


def test_learnability_proxy(data: list[dict]) -> None:
    summaries = [words(ex["summary"]) for ex in data]
    dialogues = [words(ex["dialogue"]) for ex in data]
    n = len(data)
    # Always emitting the most common summary is a poor baseline...
    common = words(Counter(ex["summary"] for ex in data).most_common(1)[0][0])
    baseline = sum(unigram_f1(common, s) for s in summaries) / n
    # ...while most summary words can be copied from the summary's own dialogue, not from another one.
    own = sum(coverage(s, d) for s, d in zip(summaries, dialogues)) / n
    other = sum(coverage(s, d) for s, d in zip(summaries, dialogues[1:] + dialogues[:1])) / n
    assert own > 0.75
    assert baseline < own - 0.4
    assert other < own - 0.3
    # What cannot be copied comes from a small, fixed set of template words.
    template = {w for s, d in zip(summaries, dialogues) for w in set(s) - set(d)}
    assert len(template) < 80
