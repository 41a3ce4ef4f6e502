"""sumlab: Hydra-composed training, evaluation, sweeps and prediction for Hugging Face summarizers.

Importing sumlab does nothing else; entry points call :func:`setup` first.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"


def setup() -> None:
    """Register schemas and resolvers, one-line error reporting, and quiet third-party start-up noise."""
    from sumlab.config import register_configs
    from sumlab.core.errors import install_hydra_error_reporting

    register_configs()
    install_hydra_error_reporting()
    # Lightning imports bitsandbytes for its precision plugin; on CPU bitsandbytes then warns at import time
    # about an optional kernels package that only speeds up 4-bit inference. Keep real errors only.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
