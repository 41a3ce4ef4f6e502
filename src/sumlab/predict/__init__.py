"""Prediction: `python predict.py model_dir=...` (conf/predict.yaml).

Modules: config (schema), loading (model_dir -> model), bucketing (length-sorted batches, DDP share),
beam_cache (guarded beam-search speed-up), writer (shards, resume, merge), runner (the run itself).
Importing this package stays light; ``run`` imports torch and Lightning when called.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig


def run(cfg: DictConfig) -> dict[str, Any]:
    """Predict one split with `cfg.model_dir`; see sumlab.predict.runner.run."""
    from sumlab.predict.runner import run as _run

    return _run(cfg)
