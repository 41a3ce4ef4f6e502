"""The plugin class Hydra instantiates for ``hydra/sweeper=sumlab_optuna``; the loop is sumlab.sweep.study."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import MISSING, DictConfig

from hydra_plugins.sumlab_optuna_sweeper.config import SumlabOptunaSweeperConf  # importing it registers the configs

# What Hydra passes: every field but its own instantiation keys and the defaults list it consumed.
HYDRA_KEYS = ("_target_", "_recursive_", "defaults")
KEYS = tuple(f.name for f in dataclasses.fields(SumlabOptunaSweeperConf) if f.name not in HYDRA_KEYS)


def sweeper_conf(values: dict[str, Any]) -> SumlabOptunaSweeperConf:
    """``hydra.sweeper``'s values as the dataclass, whose defaults and field comments are the one documentation."""
    unknown = sorted(set(values) - set(KEYS))
    if unknown:
        raise TypeError(f"SumlabOptunaSweeper: unknown hydra.sweeper keys {unknown}; known: {', '.join(KEYS)}")
    conf = SumlabOptunaSweeperConf(**values)
    missing = [k for k in KEYS if isinstance(getattr(conf, k), str) and getattr(conf, k) == MISSING]
    if missing:
        raise TypeError(f"SumlabOptunaSweeper: hydra.sweeper needs {missing} (Hydra's defaults list gives them)")
    return conf


class SumlabOptunaSweeper(Sweeper):
    def __init__(self, **conf: Any) -> None:
        self.conf = sweeper_conf(conf)
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
        from sumlab.sweep.study import SweepLoop  # Optuna: only when a sweep starts

        assert self.config is not None, "Hydra calls setup() before sweep()"
        SweepLoop(self.conf, self.config, self.launcher, arguments).run()
