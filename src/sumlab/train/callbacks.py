"""The resume checkpoint: ``checkpoints/last.ckpt``, rewritten at epoch ends, within epochs, and on SIGTERM."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Optional

import lightning.pytorch as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` after every epoch, every ``every_n_train_steps`` steps and/or ``train_time_interval`` seconds.

    Lightning's ModelCheckpoint takes only one of every_n_epochs / every_n_train_steps /
    train_time_interval, while resuming wants the epoch-end state (with its validation) *and*
    mid-epoch saves in one file: the step and time triggers are set after the parent's checks, and
    its own code paths for each trigger are used unchanged.

    SIGTERM: Lightning turns it into SIGTERMException between two batches (all ranks agree), a
    consistent state, and this saves it there (with accumulate_grad_batches > 1, a SIGTERM between two
    optimizer steps loses the partly accumulated gradients: that resume is close, not exact). Other
    exceptions may strike mid-step, so they leave the previous last.ckpt alone.
    """

    def __init__(
        self,
        dirpath: str,
        filename: str = "last",
        every_n_train_steps: Optional[int] = None,
        train_time_interval: Optional[float] = None,
    ) -> None:
        super().__init__(
            dirpath=dirpath, filename=filename, monitor=None, save_top_k=1, every_n_epochs=1,
            enable_version_counter=False, save_on_exception=True,
        )  # fmt: skip
        if (every_n_train_steps or 0) < 0 or (train_time_interval is not None and train_time_interval <= 0):
            raise ValueError("every_n_train_steps must be >= 0 and train_time_interval > 0 seconds (or null)")
        self._every_n_train_steps = every_n_train_steps or 0
        self._train_time_interval = timedelta(seconds=train_time_interval) if train_time_interval else None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any) -> None:
        loop = trainer.fit_loop.epoch_loop
        if loop.batch_progress.is_last_batch:
            return  # the epoch-end save follows, after validation, and holds the finished epoch
        if loop._should_accumulate():
            return  # mid gradient accumulation: the summed gradients are in no checkpoint
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.training:
            super().on_exception(trainer, pl_module, exception)
