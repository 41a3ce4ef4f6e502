"""sumlab: Hydra-composed training, evaluation, sweeps and prediction for Hugging Face summarizers."""

from __future__ import annotations

import logging
import os
import secrets
import warnings

__version__ = "0.1.0"

# Lightning imports bitsandbytes for its precision plugin; on CPU bitsandbytes then warns at import time
# about an optional kernels package that only speeds up 4-bit inference. Keep real errors only.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def setup() -> None:
    """Register schemas and resolvers, and one-line error reporting; entry points call this first."""
    from omegaconf import OmegaConf

    from sumlab.config import register_configs
    from sumlab.errors import install_hydra_error_reporting

    register_configs()
    # Run directories: time + pid + random, unique even for runs started in the same second.
    if not OmegaConf.has_resolver("sumlab_uid"):
        OmegaConf.register_new_resolver(
            "sumlab_uid", lambda: f"{os.getpid():x}{secrets.token_hex(2)}", use_cache=True
        )
    install_hydra_error_reporting()


def _no_tip(record: logging.LogRecord) -> bool:
    return "\N{ELECTRIC LIGHT BULB} Tip:" not in record.getMessage()


def quiet_lightning_logs() -> None:
    """Lightning's console lines once, through Hydra's handlers, without its cloud-service adverts.

    Lightning attaches handlers of its own, so each of its lines was printed twice under Hydra; and its
    own pytree helper trips a torch deprecation warning on every run that no user can act on.
    """
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_no_tip)
