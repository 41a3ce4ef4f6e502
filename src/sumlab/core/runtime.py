"""Runtime decisions made once for every entry point: the device, precision `auto`, which models fp16 breaks.

Training, prediction and everything built on them import these; none of them decides it again.
torch is imported inside the functions: the config schema and rules import this module before torch is needed.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Optional, Sequence

from sumlab.core.errors import SumlabError

PRECISIONS = ("32", "bf16-mixed", "16-mixed")
# Trained in bf16; their activations overflow fp16 to inf/NaN (T5, mT5, Pegasus; Qwen/Gemma presets say so too).
FP16_UNSAFE_MODEL_TYPES = ("t5", "mt5", "umt5", "longt5", "pegasus", "pegasus_x")
FP16_UNSAFE_HINT = "use trainer.precision=bf16-mixed (or 32)"


def resolve_device(accelerator: Any) -> str:
    """Lightning's accelerator name -> the torch device type the model will live on."""
    import torch

    acc = str(accelerator).lower()
    if acc in ("gpu", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu" if acc == "auto" else "cuda"
    return acc


def safe_precisions(model_type: str, declared: Optional[Sequence[str]] = None) -> list[str]:
    """The Trainer precisions a model runs safely in: the preset's (or its run's) model.safe_precisions where
    known, else by its transformers model type (fp16 dropped for the types above)."""
    if declared:
        return [str(p) for p in declared]
    return [p for p in PRECISIONS if not (p.startswith("16") and model_type in FP16_UNSAFE_MODEL_TYPES)]


def check_precision(precision: str, safe: Sequence[str], model: str) -> None:
    """A precision the model is not safe in: one line naming the fix."""
    if precision == "auto" or precision in safe:
        return
    hint = FP16_UNSAFE_HINT if precision.startswith("16") else f"use one of {list(safe)}"
    raise SumlabError(f"trainer.precision={precision} is not safe for model {model}: {hint}")


def auto_precision(requested: str, accelerator: Any, safe: Sequence[str]) -> str:
    """trainer.precision `auto`: bf16-mixed on a CUDA device that supports it (if the model is safe in it), else 32."""
    if requested != "auto":
        return requested
    import torch

    on_gpu = resolve_device(accelerator) == "cuda" and torch.cuda.is_available()
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() and "bf16-mixed" in safe else "32"


def _no_tip(record: logging.LogRecord) -> bool:
    return "\N{ELECTRIC LIGHT BULB} Tip:" not in record.getMessage()


def quiet_library_logs() -> None:
    """Library output that buries sumlab's own lines, off for a run (train.run and predict.run call this).

    Lightning attaches handlers of its own, so each of its lines was printed twice under Hydra, with cloud-service
    adverts; its own pytree helper trips a torch deprecation warning on every run that no user can act on.
    datasets draws bars for tiny local files and logs errors that repeat what sumlab's one line says.
    """
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_no_tip)
