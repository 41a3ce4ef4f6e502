"""Configs are the interface: schemas (:mod:`.schema` for train.py, :mod:`.predict` for predict.py, :mod:`.serve`
for serve.py), cross-key rules (:mod:`.rules`), and their registration in Hydra's ConfigStore
(:func:`register_configs`).

Importing this package loads no torch: ``sumlab.setup()`` registers the schemas before Hydra parses the command line.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import ListConfig, OmegaConf

from sumlab.config.predict import PredictConfig
from sumlab.config.schema import TrainConfig
from sumlab.config.serve import ServeConfig
from sumlab.core.io import digest, path_name


def model_dir_name(model_dir: Any) -> str:
    """predict.py's run_name part for model_dir: the readable name of one model, or of each model of a list."""
    if isinstance(model_dir, (list, tuple, ListConfig)):
        return "+".join(path_name(m) for m in model_dir)[:120] or "model"
    return path_name(model_dir)


def register_configs() -> None:
    """The schemas, named as the entry points' defaults lists name them, and the resolvers presets use."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="predict_schema", node=PredictConfig)
    cs.store(name="serve_schema", node=ServeConfig)
    resolvers = {
        # Run directories: time + pid + random, unique even for runs started in the same second.
        "sumlab_uid": (lambda: f"{os.getpid():x}{secrets.token_hex(2)}", True),
        "sumlab_digest": (digest, False),  # predict.py's run_name: a hash of the generation settings
        "sumlab_path_name": (model_dir_name, False),  # predict.py's run_name: the model directory's readable part
    }
    for name, (resolver, use_cache) in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver, use_cache=use_cache)
