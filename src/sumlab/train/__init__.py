"""Training: `python train.py` (conf/train.yaml; schema in sumlab.config.schema).

Modules: runner (the run: data, model, Trainer fit/test, export, metrics), module (the LightningModule),
metrics (ROUGE as a torchmetrics Metric), callbacks, rundir (what a run writes and where), summary (the table),
predictions (the test step's test_predictions.jsonl).
Importing this package stays light; ``run`` imports torch and Lightning when called.
"""

from __future__ import annotations

from omegaconf import DictConfig


def run(cfg: DictConfig) -> float:
    """Train, test and export; see sumlab.train.runner.run."""
    from sumlab.train.runner import run as _run

    return _run(cfg)
