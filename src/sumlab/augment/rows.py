"""The filter and a method's file: the training rows and the last step's predictions, read side by side in input
order, judged one by one and the kept ones streamed to ``<method>.jsonl`` under a temporary name, then renamed.

A kept row is the original row (every column) with the generated text in the column it replaces, a new id
``<id>#<tag>``, and the provenance columns ``source_id`` (the original's id), ``method`` and ``model``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import datasets
from omegaconf import DictConfig, OmegaConf

from sumlab.augment.steps import Method
from sumlab.core.errors import SumlabError
from sumlab.core.io import atomic_file
from sumlab.data.sources import normalize
from sumlab.predict import writer
from sumlab.text.rouge import score_pair

VERDICTS = ("kept", "too_similar", "unrelated", "empty", "degenerate")  # every generated row gets one
DISTINCT_N = 3  # loops repeat word 3-grams; a real dialogue or summary rarely does


def distinct_share(text: str, n: int = DISTINCT_N) -> float:
    """Distinct word n-grams over all n-grams (1.0 for a text too short to have any)."""
    words = text.split()
    grams = list(zip(*(words[i:] for i in range(n))))
    return len(set(grams)) / len(grams) if grams else 1.0


def judge(new: str, old: str, rules: Any) -> tuple[str, Optional[float]]:
    """One of VERDICTS for a generated text against the text it replaces, and its ROUGE F1 (None if not scored);
    ``rules``: the filter.* settings."""
    if not any(ch.isalnum() for ch in new):
        return "empty", None
    if distinct_share(new) < rules.min_distinct:
        return "degenerate", None
    score = score_pair(new, old, rules.tokenizer, keys=(rules.metric,))[rules.metric]
    if score > rules.max_rouge:
        return "too_similar", score
    if score < rules.min_rouge:
        return "unrelated", score
    return "kept", score


def predictions(out: Path) -> Iterator[dict[str, Any]]:
    """A finished step's predictions.jsonl, a line at a time (the file is as large as the corpus)."""
    with open(out / writer.PREDICTIONS, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def write_method(cfg: DictConfig, method: Method, rows: datasets.Dataset, out: Path) -> dict[str, Any]:
    """<out>/<method>.jsonl from the rows and the method's last step (none if no row is kept); the counts of each
    verdict."""
    generated = predictions(method.steps[-1].dir)
    id_column, rules = cfg.data.id_column or "id", OmegaConf.to_object(cfg.filter)  # plain attributes: read per row
    counts: Counter[str] = Counter()
    scores: list[float] = []
    path = out / f"{method.name}.jsonl"
    with atomic_file(path) as f:
        for source_id, row in originals(rows, OmegaConf.create(method.steps[0].data)):
            new = _next_for(generated, source_id, method).strip()
            verdict, score = judge(new, row[method.column] or "", rules)
            counts[verdict] += 1
            if verdict == "kept":
                scores.append(score)
                row.update({id_column: f"{source_id}#{method.tag}", method.column: new, "source_id": source_id,
                            "method": method.name, "model": method.model})  # fmt: skip
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        _next_for(generated, None, method)
    if not scores:  # an empty file would stop a training run that lists it: none at all
        path.unlink()
    mean = round(sum(scores) / len(scores), 4) if scores else None
    return {"file": path.name if scores else None, "rows": sum(counts.values()), **{v: counts[v] for v in VERDICTS},
            f"mean_{cfg.filter.metric}_kept": mean}  # fmt: skip


def originals(rows: datasets.Dataset, data: DictConfig) -> Iterator[tuple[str, dict[str, Any]]]:
    """(id as predict.py gave it, the row with every column), in input order, read a batch at a time."""
    start = 0
    for batch in rows.iter(batch_size=1000):
        size = len(batch[data.text_column])
        ids = normalize(batch, range(start, start + size), data, with_references=False)["id"]
        start += size
        yield from zip(ids, (dict(zip(batch, values, strict=True)) for values in zip(*batch.values())), strict=True)


def _next_for(generated: Iterator[dict[str, Any]], source_id: Optional[str], method: Method) -> str:
    """The next prediction, which must be for ``source_id`` (None: there must be none left)."""
    record = next(generated, None)
    found = None if record is None else str(record.get("id"))
    if found != source_id:
        raise SumlabError(
            f"{method.steps[-1].dir / writer.PREDICTIONS} does not match the training rows (id {found!r} where "
            f"{source_id!r} was expected): the input changed while it ran; pass output.overwrite=true"
        )
    return "" if record is None else str(record.get("prediction") or "")
