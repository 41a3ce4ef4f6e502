"""User-facing errors: one line naming the problem and the fix, exit code 2, no traceback wall."""

from __future__ import annotations

import functools
import os
import re
import sys
from typing import Any, Callable

EXIT_CODE = 2


class SumlabError(Exception):
    """A problem the user can fix (bad config value, missing file or column, bad checkpoint)."""


def one_line(ex: BaseException) -> str:
    """Flatten an exception (and a Hydra/OmegaConf cause) into one line."""
    text = str(ex)
    cause = ex.__cause__
    if cause is not None and str(cause) not in text:
        text = f"{text}: {cause}"
    text = re.sub(r"\s*(reference_type|object_type)=\S+", "", text)  # OmegaConf internals, no help to a user
    return " ".join(text.split())  # Hydra lists options on separate, tab-indented lines


last_reported = ""  # the last line report() wrote; the sweeper reads it to record why a trial exited


def report(ex: BaseException) -> None:
    global last_reported
    last_reported = one_line(ex)
    sys.stderr.write(f"error: {last_reported}\n")
    sys.stderr.flush()


def install_hydra_error_reporting() -> None:
    """Make Hydra report composition errors (unknown preset, wrong type, unknown key) in one line.

    Hydra prints them over several lines plus a hint about HYDRA_FULL_ERROR and exits 1; sumlab's
    contract is one line and exit 2. ``HYDRA_FULL_ERROR=1`` still gives the full traceback.
    """
    from hydra._internal import utils as hydra_utils

    original = hydra_utils.run_and_report
    if getattr(original, "_sumlab", False) or os.environ.get("HYDRA_FULL_ERROR") == "1":
        return

    @functools.wraps(original)
    def run_and_report(func: Callable[[], Any]) -> Any:
        try:
            return func()
        except (SumlabError, *_hydra_config_errors()) as ex:
            report(ex)
            sys.exit(EXIT_CODE)
        except Exception:
            return original(_reraise)

    run_and_report._sumlab = True  # type: ignore[attr-defined]
    hydra_utils.run_and_report = run_and_report


def _reraise() -> None:
    raise  # noqa: PLE0704 - re-raise the exception being handled, for Hydra's own reporting


def _hydra_config_errors() -> tuple[type[BaseException], ...]:
    from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    # Lightning's MisconfigurationException: an impossible Trainer setting, i.e. a config problem. Looked up,
    # not imported: Lightning not loaded yet cannot have raised it, and importing it costs seconds on a typo.
    lightning = sys.modules.get("lightning.fabric.utilities.exceptions")
    return (ConfigCompositionException, MissingConfigException, HydraException, OmegaConfBaseException,
            *((lightning.MisconfigurationException,) if lightning else ()))  # fmt: skip


def guarded(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an entry function: SumlabError and bad-config errors become one line and exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (SumlabError, *_hydra_config_errors()) as ex:
            report(ex)
            sys.exit(EXIT_CODE)

    return wrapper
