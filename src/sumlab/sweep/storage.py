"""Where a study lives: Optuna storage, the study, the pruner, trial ids and heartbeats.

Used by the sweep loop (:mod:`sumlab.sweep.study`) and by the pruning callback in every training rank
(:mod:`sumlab.sweep.pruning`); imports neither.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import optuna
from hydra.utils import instantiate
from optuna.trial import TrialState

from sumlab.core.errors import SumlabError

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
T = TypeVar("T")


def _retrying(make: Callable[[], T]) -> T:
    """Workers starting together race to create the tables and the study: try again a few times."""
    for attempt in range(10):
        try:
            return make()
        except Exception:
            if attempt == 9:
                raise
            time.sleep(0.5 + attempt * 0.5)
    raise AssertionError("unreachable")


def open_storage(url: str, heartbeat_interval: Optional[int] = None, grace_period: Optional[int] = None) -> Any:
    """An RDB storage; SQLite waits for locks instead of failing when workers write at once."""
    if "://" not in url:
        raise SumlabError(
            f"hydra.sweeper.storage={url}: use an Optuna storage URL (sqlite:///path.db, postgresql://...)"
        )
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 300}}
        Path(url.split(":///", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
    return _retrying(
        lambda: optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval, grace_period=grace_period
        )
    )


def open_study(storage: Any, study_name: str, direction: str) -> optuna.Study:
    study = _retrying(
        lambda: optuna.create_study(storage=storage, study_name=study_name, direction=direction, load_if_exists=True)
    )
    if study.direction.name.lower() != direction:
        raise SumlabError(
            f"study {study_name!r} in this storage optimizes {study.direction.name.lower()}, not {direction}: "
            "use another hydra.sweeper.study_name or the same direction"
        )
    return study


def find_trial_id(storage: Any, study_name: str, number: int) -> int:
    """A trial's storage-wide id, which Optuna's public Trial API does not expose (its number is per study)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


def build_pruner(conf: Optional[dict]) -> Any:
    """The configured pruner; every process reporting to the trial builds the same one."""
    if not conf or not conf.get("_target_"):
        return optuna.pruners.NopPruner()
    return instantiate(conf)


def count(study: optuna.Study) -> tuple[int, list[optuna.trial.FrozenTrial]]:
    """(finished trials, running trials)."""
    trials = study.get_trials(deepcopy=False)
    return sum(t.state in FINISHED for t in trials), [t for t in trials if t.state == TrialState.RUNNING]


class Heartbeat:
    """Records a running trial's heartbeat, so a killed worker's trial is failed after the grace period."""

    def __init__(self, storage: Any, trial_id: int, interval: Optional[int]) -> None:
        self.stop = threading.Event()
        self.thread: Optional[threading.Thread] = None
        if interval and hasattr(storage, "record_heartbeat"):
            storage.record_heartbeat(trial_id)

            def beat() -> None:
                while not self.stop.wait(interval):
                    try:
                        storage.record_heartbeat(trial_id)
                    except Exception:  # a busy database: try again next time
                        pass

            self.thread = threading.Thread(target=beat, daemon=True, name="sumlab-sweep-heartbeat")
            self.thread.start()

    def close(self) -> None:
        self.stop.set()


def redact(url: str) -> str:
    """A storage URL without its password, for logs and summaries."""
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)
