"""A test-only callback: every rank writes the hyperparameters it trains with (PYTHONPATH=tests)."""

import json
import os
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
