"""Augmentation: `python -m sumlab.augment` (conf/augment.yaml; schema in sumlab.config.augment).

New training rows from a training file, one JSONL per method: back_translation (a new wording of the dialogue
through a pivot language), paraphrase (a new dialogue from an instruct model) and summarize (a new summary).
Each generation is a predict.py run (sumlab.predict), so shards, resume after a kill, every id exactly once,
DDP and the settings fingerprint are predict.py's; a ROUGE filter then keeps what differs from the original
without being unrelated to it.

Modules: steps (each method as predict.py runs: configs, directories, running them on every rank), rows (the
filter and the <method>.jsonl file), runner (the run: check, generate, write, report). Importing this package
stays light; ``run`` imports torch and Lightning when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"  # the project's conf/ (src/sumlab/augment -> the root)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Augment data.train_file with cfg.methods; see sumlab.augment.runner.run."""
    from sumlab.augment.runner import run as _run

    return _run(cfg)
