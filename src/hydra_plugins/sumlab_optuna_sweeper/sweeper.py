"""The plugin class Hydra instantiates for ``hydra/sweeper=sumlab_optuna``; the loop is sumlab.sweep.study."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.sumlab_optuna_sweeper import config as _config  # noqa: F401  (registers the configs)


class SumlabOptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: Any = None,
        pruner: Any = None,
        direction: str = "maximize",
        storage: Optional[str] = None,
        study_name: Optional[str] = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        params: Optional[DictConfig] = None,
        custom_search_space: Optional[str] = None,
        enqueue_trials: Optional[Sequence[Any]] = None,
        max_consecutive_failures: int = 5,
        heartbeat_interval: Optional[int] = 60,
        grace_period: Optional[int] = 180,
        poll_seconds: float = 5.0,
    ) -> None:
        self.sampler, self.pruner, self.direction = sampler, pruner, direction
        self.storage, self.study_name, self.n_trials, self.n_jobs = storage, study_name, n_trials, n_jobs
        self.params, self.custom_search_space, self.enqueue_trials = params, custom_search_space, enqueue_trials
        self.max_consecutive_failures = max_consecutive_failures
        self.heartbeat_interval, self.grace_period, self.poll_seconds = heartbeat_interval, grace_period, poll_seconds
        self.config: Optional[DictConfig] = None
        self.launcher: Any = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> None:
        from sumlab.sweep.study import SweepLoop

        SweepLoop(self, arguments).run()
