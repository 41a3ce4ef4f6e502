"""The running trial, seen from the training run: which one it is, where its study is stored, which trainer set-ups it
may use. The bottom of ``sumlab.sweep`` (imports nothing above it) and import-light: no Optuna, no torch.

While a trial runs, :func:`current_trial` tells the training run which trial it is (in-process: a module-level value;
a launcher that runs jobs elsewhere, such as submitit: the ``SUMLAB_SWEEP_TRIAL`` environment variable the sweeper
sets per job).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sumlab.core.errors import SumlabError

TRIAL_ENV = "SUMLAB_SWEEP_TRIAL"
DB_NAME = "optuna.db"


@dataclass(frozen=True)
class TrialRef:
    """Enough to find a running trial from any process (picklable: ddp_spawn ranks get a copy)."""

    storage: str  # Optuna storage URL
    study_name: str
    trial_id: int  # storage-wide id (BaseStorage.get_trial_id_from_study_id_trial_number)
    number: int  # the study's trial number (the sweep subdirectory name)
    pruner: Optional[dict] = None  # the pruner's config ({_target_: ...}): the pruner lives in no storage


def default_storage(sweep_dir: str | Path) -> str:
    return f"sqlite:///{Path(sweep_dir).resolve() / DB_NAME}"


def resolve_storage(storage: Optional[str], sweep_dir: str | Path) -> str:
    return str(storage) if storage else default_storage(sweep_dir)


_current: Optional[TrialRef] = None


def set_current_trial(ref: Optional[TrialRef]) -> None:
    """The sweeper sets this before running a trial in this process, and clears it after."""
    global _current
    _current = ref


def current_trial() -> Optional[TrialRef]:
    if _current is not None:
        return _current
    text = os.environ.get(TRIAL_ENV)  # "<trial id>:<number>:<study>", set per job by the sweeper
    if not text:
        return None
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    trial_id, number, study_name = text.split(":", 2)
    hydra_cfg = HydraConfig.get()  # the storage URL stays out of the environment: it may hold a password
    storage = resolve_storage(hydra_cfg.sweeper.get("storage"), hydra_cfg.sweep.dir)
    pruner = hydra_cfg.sweeper.get("pruner")
    pruner = OmegaConf.to_container(pruner, resolve=True) if pruner is not None else None
    return TrialRef(storage, study_name, int(trial_id), int(number), pruner)


# Strategies whose launcher re-runs the command line for every rank: under `-m` each rank would run
# a sweep of its own and train with other hyperparameters than rank 0.
SPAWN_STRATEGIES = ("ddp_spawn", "ddp_fork", "ddp_notebook")


def _device_count(trainer: Any) -> int:
    devices = trainer.get("devices", "auto")
    accelerator = str(trainer.get("accelerator", "auto"))
    if isinstance(devices, (list, tuple)) or (hasattr(devices, "__len__") and not isinstance(devices, str)):
        return len(devices)
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    if str(devices) in ("auto", "-1"):
        if accelerator == "cpu":
            return 1
        try:
            import torch

            return max(1, torch.cuda.device_count())
        except Exception:  # no torch build with CUDA: one device
            return 1
    try:
        return int(devices)
    except (TypeError, ValueError):
        return 1


def check_distributed(trainer: Any) -> None:
    """Refuse a trainer set-up that would give a sweep trial's ranks different hyperparameters."""
    strategy = str(trainer.get("strategy", "auto") or "auto")
    devices = _device_count(trainer)
    nodes = int(trainer.get("num_nodes", 1) or 1)
    if strategy in SPAWN_STRATEGIES and nodes == 1:
        return
    if devices > 1 or nodes > 1:
        raise SumlabError(
            f"trainer.strategy={strategy} with {devices} devices x {nodes} nodes re-runs the command line in every "
            "rank, which inside a sweep (-m) gives each rank its own trial: use trainer.strategy=ddp_spawn (one node) "
            "in sweeps, or one device per trial with parallel sweep workers (make sweep WORKERS=N)"
        )
