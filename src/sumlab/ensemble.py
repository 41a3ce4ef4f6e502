"""`python -m sumlab.ensemble A B [C ...] --out DIR`: combine finished predictions by minimum-Bayes-risk selection.

Each file gives one candidate per id: predict.py's predictions.jsonl (id, prediction), any JSONL with an id and a
summary field, or a competition CSV (fname,summary, as predict.py's output.format=csv writes it). The ids must be
the same set in every file (one error line naming the first mismatch otherwise, and nothing is written). For each
id, the candidate with the highest weighted mean ROUGE (--utility) against all the files' candidates is kept
(:mod:`sumlab.generation.selection`, the selection predict.py's decoding=mbr makes; ties go to the earliest file,
so two files of equal weight keep the first: give three or more, or --weights, which act as votes). Writes to DIR:
predictions.jsonl, predictions.csv (the competition layout), candidates.jsonl and metrics.json (selection
settings and time, how often the first file's summary was replaced; with --references, the ROUGE of the ensemble
and of each input file).

Options: [--utility rouge1|rouge2|rougeL|rouge_combined] [--tokenizer default|whitespace|kiwi] [--weights 1,2,..]
[--references FILE [--ref-column NAME] [--multi-reference mean|max]] [--remove-tokens TOKEN ...]
[--id-header fname] [--summary-header summary] [--overwrite]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from sumlab.core.errors import SumlabError
from sumlab.core.io import atomic_file, json_objects, read_user_file, write_json
from sumlab.generation.selection import CANDIDATES, Pooled, Selector, candidate_lines
from sumlab.text.mbr import UTILITIES
from sumlab.text.rouge import MULTI_REFERENCE, TOKENIZERS, score_corpus

ID_FIELDS = ("id", "fname")
TEXT_FIELDS = ("prediction", "summary")
REFERENCE_FIELDS = ("reference", "references", "summary")


def _rows(path: Path) -> list[dict[str, Any]]:
    """The records of a .jsonl or .csv file."""
    text = read_user_file(path, "predictions")
    if path.suffix.lower() == ".csv":
        return list(csv.DictReader(io.StringIO(text)))
    if path.suffix.lower() != ".jsonl":
        raise SumlabError(f"{path}: expected a .jsonl or .csv file")
    return [record for _, record in json_objects(text, path)]


def _field(rows: list[dict[str, Any]], path: Path, choices: Sequence[str], flag: str) -> str:
    have = list(rows[0]) if rows else []
    for name in choices:
        if name in have:
            return name
    raise SumlabError(f"{path} has no field {' or '.join(choices)} (found: {', '.join(have)}); name it with {flag}")


def read_predictions(path: Path, id_fields: Sequence[str], text_fields: Sequence[str], flag: str) -> dict[str, Any]:
    """id -> the file's text for it (a reference file's value may be a list of references), in file order; the
    first of `id_fields` and of `text_fields` that the file has are read."""
    rows = _rows(path)
    key, value = _field(rows, path, id_fields, "--id-header"), _field(rows, path, text_fields, flag)
    found: dict[str, Any] = {}
    for row in rows:
        example_id, text = str(row.get(key)), row.get(value)
        if not isinstance(text, (str, list)):
            raise SumlabError(f"{path}: id {example_id!r} has no text in {value!r}")
        if example_id in found:
            raise SumlabError(f"{path}: id {example_id!r} appears twice; give each id one prediction")
        found[example_id] = text
    return found


def check_ids(files: Sequence[Path], predictions: Sequence[dict[str, Any]]) -> None:
    """Every file holds exactly the first file's ids; one line naming the first mismatch otherwise."""
    first = predictions[0]
    for path, other in zip(files[1:], predictions[1:], strict=True):
        missing = next((i for i in first if i not in other), None)
        if missing is not None:
            raise SumlabError(f"ids differ: {files[0]} has id {missing!r}, {path} does not; "
                              "ensemble predictions of the same inputs")  # fmt: skip
        extra = next((i for i in other if i not in first), None)
        if extra is not None:
            raise SumlabError(f"ids differ: {path} has id {extra!r}, {files[0]} does not; "
                              "ensemble predictions of the same inputs")  # fmt: skip


def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m sumlab.ensemble", description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path, help="two or more prediction files (.jsonl or .csv)")
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--utility", choices=UTILITIES, default="rougeL", help="ROUGE F1 that MBR maximizes")
    ap.add_argument("--tokenizer", choices=TOKENIZERS, default="default", help="ROUGE words (kiwi: Korean morphemes)")
    ap.add_argument("--weights", help="one positive weight per file, comma-separated (default: equal)")
    ap.add_argument("--references", type=Path, help="gold summaries (.jsonl/.csv with the same ids): ROUGE in metrics")
    ap.add_argument("--ref-column", help=f"references field (default: first of {', '.join(REFERENCE_FIELDS)})")
    ap.add_argument("--multi-reference", choices=MULTI_REFERENCE, default="mean")
    ap.add_argument("--remove-tokens", nargs="+", default=[], metavar="TOKEN",
                    help="replaced by a space before the utility and ROUGE (e.g. '<usr>' '</s>')")  # fmt: skip
    ap.add_argument("--id-header", default="fname", help="the CSV's id column (inputs: this, else id or fname)")
    ap.add_argument("--summary-header", default="summary",
                    help="the CSV's summary column (inputs: this, else prediction or summary)")  # fmt: skip
    ap.add_argument("--overwrite", action="store_true", help="replace a complete earlier output in --out")
    return ap.parse_args(argv)


def weights_of(args: argparse.Namespace) -> Optional[dict[str, float]]:
    if args.weights is None:
        return None
    try:
        weights = [float(w) for w in args.weights.split(",")]
    except ValueError:
        raise SumlabError(f"--weights {args.weights}: give numbers separated by commas, e.g. 1,2") from None
    if len(weights) != len(args.files) or not all(w > 0 for w in weights):
        raise SumlabError(f"--weights {args.weights}: give {len(args.files)} positive numbers, one per file")
    return dict(zip(map(str, args.files), weights, strict=True))


def references_of(args: argparse.Namespace, ids: Sequence[str]) -> Optional[list[Any]]:
    if args.references is None:
        return None
    fields = [args.ref_column] if args.ref_column else REFERENCE_FIELDS
    found = read_predictions(args.references, [args.id_header, *ID_FIELDS], fields, "--ref-column")
    missing = next((i for i in ids if i not in found), None)
    if missing is not None:
        raise SumlabError(f"{args.references} has no reference for id {missing!r}; pass the references of these inputs")
    return [found[i] for i in ids]


def load_inputs(args: argparse.Namespace) -> tuple[list[str], list[dict[str, Any]], Optional[list[Any]]]:
    """(ids in the first file's order, each file's id -> text, references or None), all checked."""
    if len(args.files) < 2:
        raise SumlabError("give at least two prediction files to ensemble")
    if (args.out / "predictions.jsonl").exists() and not args.overwrite:
        raise SumlabError(f"{args.out / 'predictions.jsonl'} exists: pass --overwrite, or choose another --out")
    id_fields, text_fields = [args.id_header, *ID_FIELDS], [args.summary_header, *TEXT_FIELDS]
    predictions = [read_predictions(f, id_fields, text_fields, "--summary-header") for f in args.files]
    check_ids(args.files, predictions)
    ids = list(predictions[0])
    return ids, predictions, references_of(args, ids)


def select(out: Path, labels: list[str], ids: list[str], predictions: list[dict[str, Any]],
           selector: Selector) -> list[dict[str, Any]]:  # fmt: skip
    """Each id's kept prediction; every file's candidate with its expected utility in candidates.jsonl."""
    rows = []
    with atomic_file(out / CANDIDATES) as f:
        for example_id in ids:
            pool = [Pooled(label, 0, p[example_id]) for label, p in zip(labels, predictions, strict=True)]
            picked, expected = selector(pool)
            f.write(candidate_lines(example_id, pool, expected, picked))
            rows.append({"id": example_id, "prediction": pool[picked].text})
    return rows


def ensemble(args: argparse.Namespace) -> dict[str, Any]:
    """Read and check every input first; then candidates.jsonl, metrics.json and the predictions (last)."""
    ids, predictions, references = load_inputs(args)
    labels, weights = [str(f) for f in args.files], weights_of(args)
    selector = Selector(args.utility, args.tokenizer, weights, args.remove_tokens)
    started = time.perf_counter()
    rows = select(args.out, labels, ids, predictions, selector)
    metrics: dict[str, Any] = {"files": labels, "weights": weights, "examples": len(ids), **selector.summary(),
                               "selection_wall_seconds": round(time.perf_counter() - started, 3)}  # fmt: skip
    if references is not None:
        for row, reference in zip(rows, references, strict=True):
            row["reference"] = reference
        members = {label: [p[i] for i in ids] for label, p in zip(labels, predictions, strict=True)}
        scores = {key: score_corpus(texts, references, args.tokenizer, args.multi_reference, args.remove_tokens)
                  for key, texts in {"ensemble": [r["prediction"] for r in rows], **members}.items()}  # fmt: skip
        metrics.update(rouge_tokenizer=args.tokenizer, rouge=scores.pop("ensemble"), members=scores)
    write_json(args.out / "metrics.json", metrics)
    # predict.writer's output files (imported here: it loads Lightning, seconds that --help and errors need not wait)
    from sumlab.predict.writer import write_outputs

    write_outputs(args.out, rows, "csv", args.id_header, args.summary_header)
    return metrics


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    try:
        metrics = ensemble(args)
    except (SumlabError, ValueError) as ex:
        print(f"error: {ex}", file=sys.stderr)
        return 2
    summary = {k: metrics[k] for k in ("examples", "changed_share", "selection_ms_per_input")}
    if "rouge" in metrics:
        summary["rouge"] = metrics["rouge"]
    print(json.dumps(summary))
    for name in (CANDIDATES, "metrics.json", "predictions.jsonl", "predictions.csv"):
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
