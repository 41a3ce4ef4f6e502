"""MBR over each input's pooled candidates (one model's n-best or samples, or several models' outputs), for
predict.py and `python -m sumlab.ensemble`; and candidates.jsonl, which keeps every candidate so that selection can
be re-run (another utility, another subset of models) without generating again.

candidates.jsonl has one line per candidate, an input's candidates together, inputs in input order::

    {"id", "model", "index", "candidate", "score", "gen_len", "expected_utility", "selected"}

``model``: the model_dir entry (or the file) it came from; ``index``: its position among that model's candidates
(beam rank or sample number); ``score``: the engine's own (null where it gives none); ``expected_utility``: its
weighted mean utility against the input's candidates (:mod:`sumlab.text.mbr`); ``selected``: whether MBR kept it
(one per input).

Imports no torch: the ensemble command line stays quick to start.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sumlab.core.errors import SumlabError
from sumlab.text.mbr import select_tokens
from sumlab.text.rouge import remove_tokens, tokenize

CANDIDATES = "candidates.jsonl"


@dataclass
class Pooled:
    """One candidate of an input's pool."""

    model: str
    index: int
    text: str
    score: Optional[float] = None
    gen_len: Optional[int] = None


class Selector:
    """MBR over pools, timed: tokenizing apart from the selection itself (the utility matrix and the pick)."""

    def __init__(self, utility: str, tokenizer: str, weights: Optional[dict[str, float]] = None,
                 remove: Sequence[str] = ()) -> None:  # fmt: skip
        self.utility, self.tokenizer, self.weights, self.remove = utility, tokenizer, weights, list(remove)
        self.inputs = self.candidates = self.changed = 0
        self.tokenize_seconds = self.select_seconds = 0.0

    def __call__(self, pool: Sequence[Pooled]) -> tuple[int, list[float]]:
        """(position of the kept candidate, each candidate's expected utility)."""
        started = time.perf_counter()
        tokens: dict[str, list[str]] = {}
        for c in pool:  # identical candidates (frequent among beams and samples) are tokenized once
            if c.text not in tokens:
                tokens[c.text] = tokenize(remove_tokens(c.text, self.remove), self.tokenizer)
        tokenized = time.perf_counter()
        weights = None if self.weights is None else [self.weights[c.model] for c in pool]
        selection = select_tokens([tokens[c.text] for c in pool], self.utility, weights)
        self.tokenize_seconds += tokenized - started
        self.select_seconds += time.perf_counter() - tokenized
        self.inputs += 1
        self.candidates += len(pool)
        self.changed += pool[selection.index].text != pool[0].text
        return selection.index, selection.expected

    def summary(self) -> dict[str, Any]:
        """metrics.json's part: candidates per input, how often MBR changed the first candidate, the time taken."""
        per_input = 1000 / self.inputs if self.inputs else 0.0
        return {
            "utility": self.utility,
            "utility_tokenizer": self.tokenizer,
            **({"utility_remove_tokens": self.remove} if self.remove else {}),
            "candidates_per_input": round(self.candidates / self.inputs, 3) if self.inputs else 0,
            "changed_share": round(self.changed / self.inputs, 4) if self.inputs else 0.0,
            "tokenize_seconds": round(self.tokenize_seconds, 3),
            "tokenize_ms_per_input": round(self.tokenize_seconds * per_input, 3),
            "selection_seconds": round(self.select_seconds, 3),
            "selection_ms_per_input": round(self.select_seconds * per_input, 3),
        }


def candidate_lines(example_id: str, pool: Sequence[Pooled], expected: Sequence[float], picked: int) -> str:
    """The input's lines of candidates.jsonl."""
    return "".join(
        json.dumps({"id": example_id, "model": c.model, "index": c.index, "candidate": c.text, "score": c.score,
                    "gen_len": c.gen_len, "expected_utility": round(e, 6), "selected": i == picked},
                   ensure_ascii=False) + "\n"
        for i, (c, e) in enumerate(zip(pool, expected, strict=True))
    )  # fmt: skip


def read_candidates(path: Path) -> Iterator[tuple[str, list[Pooled]]]:
    """(id, its candidates) for each input of a candidates.jsonl, in file order, one input in memory at a time."""
    if not path.is_file():
        raise SumlabError(f"{path} does not exist: point decoding.candidates_from at a finished MBR output directory")
    current: Optional[str] = None
    pool: list[Pooled] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                example_id = str(row["id"])
                candidate = Pooled(str(row["model"]), int(row["index"]), str(row["candidate"]), row.get("score"),
                                   row.get("gen_len"))  # fmt: skip
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise SumlabError(f"{path} line {lineno} is not a candidate (id, model, index, candidate)") from None
            if example_id != current:
                if current is not None:
                    yield current, pool
                if example_id in seen:
                    raise SumlabError(f"{path}: the candidates of id {example_id!r} are not together (line {lineno})")
                seen.add(example_id)
                current, pool = example_id, []
            pool.append(candidate)
    if current is not None:
        yield current, pool
