"""A test-only callback: the training process signals itself at a given step (PYTHONPATH=tests).

It fires at the *start* of the batch that would take the run to `at_step + 1`, so every step up to
`at_step` is done and any mid-epoch last.ckpt written since is on disk; what trained after the last
checkpoint is lost, as in a real kill.
"""

import os
import signal

import lightning.pytorch as L


class SignalAtStep(L.Callback):
    def __init__(self, at_step: int, signal_name: str = "SIGKILL") -> None:
        self.at_step = at_step
        self.signum = getattr(signal, signal_name)

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), self.signum)
