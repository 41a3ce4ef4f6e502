"""Sweeps: sumlab's Optuna sweeper for Hydra multirun, the hook into a training run, results.

The sweeper (``hydra_plugins.sumlab_optuna_sweeper``) asks Optuna for a trial, then runs the task function for it
(the loop: :mod:`sumlab.sweep.study`). While a trial runs, ``build_trainer`` calls :func:`trainer_callbacks` to add
the pruning callback. This package stays import-light: Optuna is imported only when a trial exists.

Imports go one way, top to bottom (no module here imports ``sumlab.sweep`` itself):

- ``study``    the sweep loop            -> storage, pruning, space, results, trial
- ``pruning``  the pruning callback      -> storage, trial
- ``results``  summary, trials.csv, plots, leaderboard
- ``storage``  Optuna storage, study, pruner, heartbeats
- ``space``    search-space syntax -> distributions
- ``trial``    the running trial (TrialRef), storage URL, the DDP rule (no Optuna)
"""

from __future__ import annotations

from typing import Any

from sumlab.sweep.trial import TRIAL_ENV, TrialRef, check_distributed, current_trial, set_current_trial

__all__ = ["TRIAL_ENV", "TrialRef", "check_distributed", "current_trial", "set_current_trial", "trainer_callbacks"]


def trainer_callbacks(cfg: Any) -> list[Any]:
    """Callbacks a running trial adds to the Trainer (none outside a sweep); checks its trainer set-up first."""
    ref = current_trial()
    if ref is None:
        return []
    check_distributed(cfg.trainer)
    from sumlab.sweep.pruning import OptunaPruningCallback  # Optuna and Lightning: only inside a trial

    return [OptunaPruningCallback(ref, monitor=cfg.metrics.monitor)]
