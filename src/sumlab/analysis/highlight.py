"""Which words of a prediction match its reference, as ROUGE counts them: character spans for HTML marks.

Kinds: ``unigram`` (a token counted by ROUGE-1: each token type at most as often as it occurs on both sides),
``bigram`` (both tokens of a bigram counted by ROUGE-2) and ``lcs`` (a token on one longest common subsequence:
ROUGE-L). A token can carry several kinds: one span per (token, kind). Tokens are the ROUGE tokenizer's
(``sumlab.text.rouge.tokenize``), located in the text chunk by chunk, so a span covers the word a token came from
("running" for the stemmed token "run").
"""

from __future__ import annotations

import collections
import html
import re
import unicodedata
from dataclasses import asdict, dataclass
from typing import Any

from sumlab.text.rouge import tokenize

KINDS = ("unigram", "bigram", "lcs")
_CHUNK_RE = re.compile(r"\S+")  # every ROUGE tokenizer splits at whitespace: tokens never cross a chunk


@dataclass(frozen=True)
class Span:
    """``text[start:end]`` is a matched word; ``kind`` is one of KINDS."""

    start: int
    end: int
    kind: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Highlighted:
    """A text (NFC-normalized, as ROUGE reads it) and its matched spans, sorted by (start, kind)."""

    text: str
    spans: tuple[Span, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "spans": [s.as_dict() for s in self.spans]}


def token_spans(text: str, tokenizer: str) -> list[tuple[str, int, int]]:
    """(token, start, end) for each ROUGE token of ``text``: each whitespace chunk is tokenized alone, and a token
    is located in its chunk (case-insensitively, extended to the end of its word: a stem covers its word) or, when
    it is not found there (a normalized form), given the whole chunk."""
    found = []
    for chunk in _CHUNK_RE.finditer(text):
        lowered, cursor = chunk.group().lower(), 0
        for token in tokenize(chunk.group(), tokenizer):
            at = lowered.find(token.lower(), cursor)
            if at < 0:
                found.append((token, chunk.start(), chunk.end()))
                continue
            end = at + len(token)
            while end < len(lowered) and lowered[end].isalnum():
                end += 1
            found.append((token, chunk.start() + at, chunk.start() + end))
            cursor = end
    return found


def _clipped(grams: list[tuple[str, ...]], other: list[tuple[str, ...]]) -> list[int]:
    """Positions of the n-grams ROUGE-N counts as hits: each n-gram at most as often as ``other`` has it."""
    left = collections.Counter(other)
    hits = []
    for i, gram in enumerate(grams):
        if left[gram] > 0:
            left[gram] -= 1
            hits.append(i)
    return hits


def _lcs_positions(a: list[str], b: list[str]) -> tuple[set[int], set[int]]:
    """Positions in ``a`` and in ``b`` of one longest common subsequence."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) - 1, -1, -1):
        for j in range(len(b) - 1, -1, -1):
            table[i][j] = table[i + 1][j + 1] + 1 if a[i] == b[j] else max(table[i + 1][j], table[i][j + 1])
    i = j = 0
    in_a, in_b = set(), set()
    while i < len(a) and j < len(b):
        if a[i] == b[j]:
            in_a.add(i)
            in_b.add(j)
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return in_a, in_b


def _matches(tokens: list[str], other: list[str]) -> dict[str, set[int]]:
    """Token positions of ``tokens`` by kind of match with ``other``."""
    bigrams = list(zip(tokens, tokens[1:]))
    bigram_hits = _clipped(bigrams, list(zip(other, other[1:])))
    return {
        "unigram": set(_clipped([(t,) for t in tokens], [(t,) for t in other])),
        "bigram": {p for i in bigram_hits for p in (i, i + 1)},
        "lcs": _lcs_positions(tokens, other)[0],
    }


def _highlight(text: str, other: str, tokenizer: str) -> Highlighted:
    spans, other_spans = token_spans(text, tokenizer), token_spans(other, tokenizer)
    matched = _matches([t for t, _, _ in spans], [t for t, _, _ in other_spans])
    marks = {(spans[p][1], spans[p][2], kind) for kind in KINDS for p in matched[kind]}  # a chunk's tokens: one mark
    return Highlighted(text, tuple(Span(s, e, k) for s, e, k in sorted(marks, key=lambda m: (m[0], KINDS.index(m[2])))))


def highlights(prediction: str, reference: str, tokenizer: str = "default") -> dict[str, Highlighted]:
    """{"prediction": ..., "reference": ...}: each side's words that match the other, by kind."""
    prediction, reference = (unicodedata.normalize("NFC", t) for t in (prediction, reference))
    return {"prediction": _highlight(prediction, reference, tokenizer),
            "reference": _highlight(reference, prediction, tokenizer)}  # fmt: skip


def to_html(highlighted: Highlighted, kind: str = "lcs") -> str:
    """The text HTML-escaped, each span of ``kind`` wrapped in ``<mark class="<kind>">``."""
    parts, cursor = [], 0
    for span in highlighted.spans:
        if span.kind != kind or span.start < cursor:
            continue
        parts += [html.escape(highlighted.text[cursor : span.start]), f'<mark class="{kind}">',
                  html.escape(highlighted.text[span.start : span.end]), "</mark>"]  # fmt: skip
        cursor = span.end
    return "".join([*parts, html.escape(highlighted.text[cursor:])])
