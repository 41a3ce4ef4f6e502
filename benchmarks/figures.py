"""What every benchmark's figure line states: the machine, how many repeats, and their spread.

Imported by the bench_*.py scripts (this directory is on sys.path when one of them runs).
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path


def machine() -> str:
    """CPU model, physical cores / hardware threads (the ones this process may use), torch threads, GPU, load."""
    model, cores = platform.processor() or platform.machine(), set()
    try:
        physical = "0"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name":
                model = value
            elif key == "physical id":
                physical = value
            elif key == "core id":
                cores.add((physical, value))
    except OSError:  # not Linux: the platform's name is all there is
        pass
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"{model}, {len(cores) or '?'} cores / {threads} threads"
    try:
        import torch

        text += f", torch {torch.get_num_threads()} threads"
        if torch.cuda.is_available():
            text += f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"{text}, load average {os.getloadavg()[0]:.1f}"


def median_range(values: Sequence[float], digits: int = 2) -> str:
    """``median (min-max)``; a single value is marked as such rather than given a range it does not have."""
    if len(values) == 1:
        return f"{values[0]:,.{digits}f} (1 run, no spread)"
    return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def ratio(ours: Sequence[float], theirs: Sequence[float]) -> str:
    """Ratio of the medians, with the range of the per-repeat ratios (repeat i of both rows ran back to back)."""
    middle = statistics.median(ours) / statistics.median(theirs)
    pairs = [a / b for a, b in zip(ours, theirs, strict=True)]
    if len(pairs) == 1:
        return f"{middle:.2f}x (1 repeat, no spread)"
    return f"{middle:.2f}x (ratio of medians of {len(pairs)} repeats; per-repeat {min(pairs):.2f}-{max(pairs):.2f})"
