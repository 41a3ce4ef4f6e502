"""The pruning callback: reports the monitored metric to the running Optuna trial after each validation.

Rank 0 reports and asks the pruner; its decision is broadcast so every rank stops together. A pruned
trial raises ``optuna.TrialPruned`` out of ``Trainer.fit``; the sweeper records it as PRUNED (it also
finds the ``pruned`` user attribute this callback writes, for launchers that lose the exception type,
such as ddp_spawn). The step is the validation's ordinal (1, 2, ...), so trials with other batch sizes
are compared at the same point of training.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import lightning.pytorch as L
import optuna

from sumlab.sweep.storage import build_pruner, open_storage
from sumlab.sweep.trial import TrialRef


def load_trial(ref: TrialRef) -> optuna.Trial:
    """The running trial, in this process: its study with the same pruner (a sampler is never asked here)."""
    study = optuna.load_study(
        study_name=ref.study_name, storage=open_storage(ref.storage),
        sampler=optuna.samplers.RandomSampler(), pruner=build_pruner(ref.pruner),
    )  # fmt: skip
    return optuna.Trial(study, ref.trial_id)


class OptunaPruningCallback(L.Callback):
    def __init__(self, ref: TrialRef, monitor: str) -> None:
        self.ref = ref
        self.monitor = monitor
        self.reports = 0
        self._trial: Optional[optuna.Trial] = None

    def __getstate__(self) -> dict[str, Any]:  # ddp_spawn pickles callbacks: ranks reload the trial
        return {**self.__dict__, "_trial": None}

    @property
    def trial(self) -> optuna.Trial:
        if self._trial is None:
            self._trial = load_trial(self.ref)
        return self._trial

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.trial.set_user_attr("world_size", trainer.world_size)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune, message = False, ""
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.monitor)
            if value is not None:
                value = float(value)
                self.reports += 1
                self.trial.report(value, step=self.reports)
                if self.trial.should_prune():
                    prune = True
                    where = f"validation {self.reports} (epoch {trainer.current_epoch})"
                    message = f"pruned at {where}: {self.monitor}={value:.4g}"
                    self.trial.set_user_attr("pruned", message)
        if trainer.world_size > 1:
            prune = bool(trainer.strategy.broadcast(prune, src=0))
        if prune:
            raise optuna.TrialPruned(message or "pruned")


def best_intermediate(frozen: optuna.trial.FrozenTrial, direction: optuna.study.StudyDirection) -> float:
    """The best value reported during training (the objective when a launcher loses the return value)."""
    values = [v for v in frozen.intermediate_values.values() if v is not None and math.isfinite(v)]
    if not values:
        return float("nan")
    return max(values) if direction == optuna.study.StudyDirection.MAXIMIZE else min(values)
