"""`python -m sumlab.rouge PREDICTIONS REFERENCES`: corpus ROUGE of two files (the scorer is sumlab.text.rouge).

Options: [--tokenizer default|whitespace|kiwi|rouge_pkg] [--column NAME] [--ref-column NAME]
[--multi-reference mean|max] [--remove-tokens TOKEN ...] (a JSONL --ref-column may hold a list of references per row:
DialogSum test's `references`). The Korean competition's way: --tokenizer rouge_pkg --remove-tokens '<usr>' '<s>' ...
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sumlab.core.errors import SumlabError
from sumlab.core.io import json_objects, read_user_file
from sumlab.text.rouge import MULTI_REFERENCE, TOKENIZERS, score_corpus

_PREDICTION_COLUMNS = ("prediction", "summary", "text")
_REFERENCE_COLUMNS = ("reference", "summary", "text")


def _pick_column(fields: Iterable[str], column: str | None, candidates: tuple[str, ...], where: str, flag: str) -> str:
    available = list(fields)
    found = ", ".join(available) or "none"
    if column is not None:
        if column not in available:
            raise SumlabError(f"{where} has no field {column!r} (found: {found}); fix {flag}")
        return column
    for candidate in candidates:
        if candidate in available:
            return candidate
    raise SumlabError(
        f"{where} has none of the fields {', '.join(candidates)} (found: {found}); name the field with {flag} NAME"
    )


def _field(record: dict[str, Any], column: str, where: str, flag: str) -> str | list[str]:
    value = record.get(column)
    if value is None:
        raise SumlabError(f"{where} has no value for {column!r}; fill it in or pick another {flag}")
    if flag == "--ref-column" and isinstance(value, list):  # several references for one example
        if not value or not all(isinstance(v, str) for v in value):
            raise SumlabError(f"{where}: {column!r} must be a non-empty list of strings")
        return value
    if not isinstance(value, str):
        raise SumlabError(
            f"{where}: {column!r} is not a string (got {type(value).__name__}); pick a text field with {flag}"
        )
    return value


def _read_jsonl(
    text: str, path: Path, column: str | None, candidates: tuple[str, ...], flag: str
) -> list[str | list[str]]:
    records = [(f"{path} line {lineno}", record) for lineno, record in json_objects(text, path)]
    if not records:
        return []
    column = _pick_column(records[0][1], column, candidates, records[0][0], flag)
    return [_field(record, column, where, flag) for where, record in records]


def _read_csv(text: str, path: Path, column: str | None, candidates: tuple[str, ...], flag: str) -> list[str]:
    reader = csv.DictReader(io.StringIO(text))
    column = _pick_column(reader.fieldnames or [], column, candidates, f"{path} header", flag)
    return [_field(row, column, f"{path} line {reader.line_num}", flag) for row in reader]


def _read_texts(
    path: Path, column: str | None, candidates: tuple[str, ...], role: str, flag: str
) -> list[str | list[str]]:
    """One text per example from a .jsonl, .csv or plain-text (one example per line) file."""
    text = read_user_file(path, role)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        texts = _read_jsonl(text, path, column, candidates, flag)
    elif suffix == ".csv":
        texts = _read_csv(text, path, column, candidates, flag)
    else:
        texts = text.removesuffix("\n").split("\n")
    if not texts:
        raise SumlabError(f"{role} file {path} has no examples; it needs one example per line")
    return texts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sumlab.rouge",
        description="Corpus ROUGE F1 (mean over pairs) that keeps Korean and other non-ASCII text. "
        "Files are .jsonl, .csv or plain text with one example per line.",
    )
    parser.add_argument("predictions", type=Path, help="model outputs")
    parser.add_argument("references", type=Path, help="gold summaries, same order")
    parser.add_argument(
        "--tokenizer",
        choices=TOKENIZERS,
        default="default",
        help="default (Unicode words, stemmed English), whitespace, kiwi (Korean morphemes) or rouge_pkg (the `rouge` "
        "package's scorer, as the Korean competition's baseline)",
    )
    parser.add_argument("--column", help=f"predictions field (default: first of {', '.join(_PREDICTION_COLUMNS)})")
    parser.add_argument(
        "--ref-column",
        help="references field (default: first of "
        f"{', '.join(_REFERENCE_COLUMNS)}); in JSONL it may hold a list of references per row",
    )
    parser.add_argument(
        "--multi-reference",
        choices=MULTI_REFERENCE,
        default="mean",
        help="several references per example: mean (default) or max of each F1 over them",
    )
    parser.add_argument(
        "--remove-tokens",
        nargs="+",
        default=[],
        metavar="TOKEN",
        help="replace each of these by a space in both files first (e.g. '<usr>' '<s>' '</s>' '<pad>')",
    )
    args = parser.parse_args(argv)
    try:
        predictions = _read_texts(args.predictions, args.column, _PREDICTION_COLUMNS, "predictions", "--column")
        references = _read_texts(args.references, args.ref_column, _REFERENCE_COLUMNS, "references", "--ref-column")
        if len(predictions) != len(references):
            raise SumlabError(
                f"{len(predictions)} predictions in {args.predictions} but {len(references)} "
                f"references in {args.references}; "
                "both need one example per line, in the same order"
            )
        counts = {len(r) if isinstance(r, list) else 1 for r in references}
        if len(counts) > 1:
            raise SumlabError(
                f"{args.references}: rows hold different numbers of references ({sorted(counts)}); "
                "give every row the same number"
            )
        scores = score_corpus(predictions, references, args.tokenizer, args.multi_reference, args.remove_tokens)
    except (SumlabError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({**scores, "n": len(predictions)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
