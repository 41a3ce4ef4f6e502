"""Prediction: `python predict.py model_dir=...` (conf/predict.yaml; schema in sumlab.config.predict).

Modules: runner (the run: prepare, generate, finish), module (the LightningModule and this rank's data),
writer (shards, resume, merge). Importing this package stays light; ``run`` imports torch and Lightning when called.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig


def run(cfg: DictConfig) -> dict[str, Any]:
    """Predict one split with `cfg.model_dir`; see sumlab.predict.runner.run."""
    from sumlab.predict.runner import run as _run

    return _run(cfg)
