"""``hydra/sweeper=sumlab_optuna`` and its ``sampler`` and ``pruner`` groups, in Hydra's ConfigStore.
No `from __future__ import annotations` here: Hydra loads plugin modules outside sys.modules, where
dataclasses cannot resolve string annotations.

``SumlabOptunaSweeperConf`` is the one place the sweeper's keys, defaults and documentation (the field comments)
live: the plugin class takes Hydra's values as they come and checks their names against it.

The keys follow hydra-optuna-sweeper (``n_trials``, ``study_name``, ``storage``, ``direction``,
``sampler``, ``params``, ``custom_search_space``, ``n_jobs``) so its users feel at home.
"""

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class SumlabOptunaSweeperConf:
    _target_: str = "hydra_plugins.sumlab_optuna_sweeper.sweeper.SumlabOptunaSweeper"
    _recursive_: bool = False  # sampler and pruner are built per sweep (the grid needs the space, seeds the worker)
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])

    # {_target_: an optuna.samplers class, seed: ...}; group hydra/sweeper/sampler: tpe, random, grid, cmaes
    sampler: Any = MISSING
    # {_target_: an optuna.pruners class, ...}; group hydra/sweeper/pruner: none, median, hyperband
    pruner: Any = MISSING
    direction: str = "maximize"  # maximize or minimize (max/min too: presets use ${metrics.mode})
    storage: Optional[str] = None  # any Optuna storage URL; null: sqlite:///<sweep dir>/optuna.db
    study_name: Optional[str] = None  # null: "sumlab"; a storage holds many studies by name
    n_trials: int = 20  # finished (COMPLETE + PRUNED) trials the study ends with, across workers and resumes
    # trials per launcher batch (parallel launchers such as submitit); use workers for local parallelism
    n_jobs: int = 1
    # key -> choice(...), range(...), interval(...), tag(log, interval(...)) or a value
    params: Optional[dict[str, Any]] = None
    custom_search_space: Optional[str] = None  # dotted path of fn(cfg, trial) that suggests more parameters
    enqueue_trials: Optional[list[Any]] = None  # parameter sets to try first (a new study only): [{optim.lr: 1e-3}]
    max_consecutive_failures: int = 5  # stop the sweep (exit 2) after this many failed trials in a row; 0: never
    heartbeat_interval: Optional[int] = 60  # seconds; a killed worker's RUNNING trial is failed after grace_period
    grace_period: Optional[int] = 180  # seconds without a heartbeat before a RUNNING trial counts as failed
    poll_seconds: float = 5.0  # how often a worker waiting for others' last trials checks the study


SAMPLERS = {
    "tpe": {"_target_": "optuna.samplers.TPESampler", "seed": None, "n_startup_trials": 10, "multivariate": False},
    "random": {"_target_": "optuna.samplers.RandomSampler", "seed": None},
    "grid": {"_target_": "optuna.samplers.GridSampler", "seed": None},  # needs choice/range params only
    "cmaes": {"_target_": "optuna.samplers.CmaEsSampler", "seed": None, "n_startup_trials": 1},
}
PRUNERS = {
    "none": {"_target_": None},
    "median": {
        "_target_": "optuna.pruners.MedianPruner",
        "n_startup_trials": 5,
        "n_warmup_steps": 0,
        "interval_steps": 1,
    },
    "hyperband": {
        "_target_": "optuna.pruners.HyperbandPruner",
        "min_resource": 1,
        "max_resource": "auto",
        "reduction_factor": 3,
    },
}


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="hydra/sweeper", name="sumlab_optuna", node=SumlabOptunaSweeperConf, provider="sumlab")
    for name, node in SAMPLERS.items():
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="sumlab")
    for name, node in PRUNERS.items():
        cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="sumlab")


register()
