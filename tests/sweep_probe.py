"""Test-only hooks for sweeps (PYTHONPATH=tests): a callback where every rank writes the hyperparameters it trains
with, and a search-space hook that interrupts the worker between ask and tell."""

import json
import os
import signal
from pathlib import Path

import lightning.pytorch as L


class RankProbe(L.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seen = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "pid": os.getpid(),
            "optim": pl_module.optim,
            "lr": trainer.optimizers[0].param_groups[0]["initial_lr"],
        }
        path = Path(self.out_dir) / f"rank{trainer.global_rank}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(seen, default=str))


def interrupt_second_ask(config: object, trial: object) -> None:
    """A hydra.sweeper.custom_search_space hook: SIGINT to this worker while it asks for trial 1, between the study's
    ask and tell (where Ctrl-C must not leave the trial RUNNING)."""
    if trial.number == 1:
        os.kill(os.getpid(), signal.SIGINT)
