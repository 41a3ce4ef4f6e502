"""`python -m sumlab.compare A B [C ...]`: is B better than A, or is it noise? (the work is sumlab.analysis.compare)

Each of A, B, ... is a training run directory (its test predictions) or a predict.py output directory. Every run
after the first is compared with the first (the baseline). Prints a table per run and writes compare.json
(atomically) to --out (default: the current directory). Options: [--tokenizer T] [--multi-reference mean|max]
[--top N] [--resamples N] [--seed N] [--confidence C] [--out DIR].
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sumlab.analysis.compare import Comparison, PairResult, compare_runs
from sumlab.analysis.runs import load_run
from sumlab.core.errors import EXIT_CODE, SumlabError, report
from sumlab.core.io import write_json
from sumlab.core.stats import RESAMPLES, SEED
from sumlab.text.rouge import MULTI_REFERENCE, TOKENIZERS

COMPARE_FILE = "compare.json"
HEADLINE = "rouge_combined"  # the key of each comparison's one-line verdict


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sumlab.compare",
        description="Per-example ROUGE of two or more runs (training run directories: their test predictions; or "
        "predict.py output directories) and, for each run after the first, its difference from the first with a "
        "paired bootstrap confidence interval and p-value.",
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run directories; the first is the baseline")
    parser.add_argument("--tokenizer", choices=TOKENIZERS, help="ROUGE tokenizer for all runs (default: the runs' own)")
    parser.add_argument("--multi-reference", choices=MULTI_REFERENCE, help="default: the runs' own")
    parser.add_argument("--top", type=int, default=10, help="examples that changed most, listed with their texts")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=SEED, help="bootstrap seed (the same seed, the same interval)")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence of the intervals")
    parser.add_argument("--out", type=Path, default=Path("."), help=f"directory for {COMPARE_FILE} (default: .)")
    return parser.parse_args(argv)


def verdict(pair: PairResult, names: dict[str, str], confidence: float, resamples: int) -> str:
    """One line: the headline key's difference, its interval, p, and what it means."""
    k = pair.key(HEADLINE)
    if k.significant:
        meaning = f"{names[pair.run]} is {'better' if k.difference > 0 else 'worse'} (the interval excludes 0)"
    else:
        meaning = "no difference the data can support (the interval contains 0)"
    interval = f"[{k.low:+.4f}, {k.high:+.4f}] ({confidence:.0%} CI)"
    return (
        f"{names[pair.run]} vs {names[pair.baseline]}: {HEADLINE} {k.difference:+.4f} {interval}, "
        f"p={_p(k.p_value, resamples)}: {meaning}"
    )


def _p(p_value: float, resamples: int) -> str:
    """A p-value as the bootstrap can resolve it: 0 means fewer than one resample in ``resamples``."""
    return f"<{1 / resamples:.0e}" if p_value == 0 else f"{p_value:.3g}"


def _pair_table(pair: PairResult, names: dict[str, str], resamples: int) -> Table:
    base, run = names[pair.baseline], names[pair.run]
    table = Table(title=f"{run} vs {base} (baseline)")
    for column in ("key", base, run, "difference", "interval", "p", "wins/ties/losses", ""):
        table.add_column(column, justify="left" if column in ("key", "") else "right")
    for k in pair.keys:
        table.add_row(k.key, f"{k.baseline_mean:.4f}", f"{k.mean:.4f}", f"{k.difference:+.4f}",
                      f"[{k.low:+.4f}, {k.high:+.4f}]", _p(k.p_value, resamples), f"{k.wins}/{k.ties}/{k.losses}",
                      "excludes 0" if k.significant else "contains 0")  # fmt: skip
    return table


def _changed_table(pair: PairResult, names: dict[str, str]) -> Table:
    base, run = names[pair.baseline], names[pair.run]
    table = Table(title=f"examples whose {HEADLINE} changed most ({run} - {base})")
    for column in ("id", "delta", f"{base} prediction", f"{run} prediction", "reference"):
        table.add_column(column, overflow="fold")
    for c in pair.changed:
        table.add_row(c.id, f"{c.delta:+.3f}", _short(c.baseline_prediction), _short(c.prediction),
                      _short(c.references[0] if c.references else ""))  # fmt: skip
    return table


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_comparison(comparison: Comparison) -> None:
    console = Console(width=max(Console().width, 140))
    names = {r["path"]: r["name"] for r in comparison.runs}
    console.print(f"{comparison.examples} examples, ROUGE tokenizer {comparison.tokenizer}, "
                  f"multi_reference {comparison.multi_reference}, {comparison.resamples} bootstrap resamples "
                  f"(seed {comparison.seed})", highlight=False)  # fmt: skip
    for pair in comparison.pairs:
        console.print(_pair_table(pair, names, comparison.resamples))
        if pair.changed:
            console.print(_changed_table(pair, names))
    for pair in comparison.pairs:
        print(verdict(pair, names, comparison.confidence, comparison.resamples))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.top < 0 or args.resamples < 1 or not 0 < args.confidence < 1:
            raise SumlabError("--top must be >= 0, --resamples >= 1 and --confidence between 0 and 1")
        runs = [load_run(path) for path in args.runs]
        comparison = compare_runs(runs, args.tokenizer, args.multi_reference, args.top, args.confidence,
                                  args.resamples, args.seed, progress=sys.stderr.isatty())  # fmt: skip
        out = args.out / COMPARE_FILE
        try:
            write_json(out, comparison.as_dict())
        except OSError as ex:
            raise SumlabError(f"cannot write {out} ({ex.strerror}): pass a writable --out directory") from None
    except SumlabError as ex:
        report(ex)
        return EXIT_CODE
    print_comparison(comparison)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
