"""`python -m sumlab.compare A B [C ...]`: is B better than A, or is it noise? (the work is sumlab.analysis.compare)

Each of A, B, ... is a training run directory (its test predictions) or a predict.py output directory. Every run
after the first is compared with the first. Prints a table per run and writes compare.json (atomically) to --out.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    raise NotImplementedError


if __name__ == "__main__":
    sys.exit(main())
