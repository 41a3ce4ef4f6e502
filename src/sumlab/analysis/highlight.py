"""Which words of a prediction match its reference, as ROUGE counts them: character spans for HTML marks.

Kinds: ``unigram`` (a token counted by ROUGE-1: each token type at most as often as it occurs on both sides),
``bigram`` (both tokens of a bigram counted by ROUGE-2) and ``lcs`` (a token on one longest common subsequence:
ROUGE-L). A token can carry several kinds: one span per (token, kind). Tokens are the ROUGE tokenizer's
(``sumlab.text.rouge.tokenize``), located in the text chunk by chunk, so a span covers the word a token came from
("running" for the stemmed token "run").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KINDS = ("unigram", "bigram", "lcs")


@dataclass(frozen=True)
class Span:
    """``text[start:end]`` is a matched word; ``kind`` is one of KINDS."""

    start: int
    end: int
    kind: str

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Highlighted:
    """A text and its matched spans, sorted by (start, kind)."""

    text: str
    spans: tuple[Span, ...]

    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


def highlights(prediction: str, reference: str, tokenizer: str = "default") -> dict[str, Highlighted]:
    """{"prediction": ..., "reference": ...}: each side's words that match the other, by kind."""
    raise NotImplementedError


def to_html(highlighted: Highlighted, kind: str = "lcs") -> str:
    """The text HTML-escaped, each span of ``kind`` wrapped in ``<mark class="<kind>">``."""
    raise NotImplementedError
