"""predict.py under a test-only patch, in every rank: `python tests/predict_probe.py <predict.py overrides>`.

Lightning's DDP launcher starts the other ranks with this same script and arguments, and they inherit the
environment, so the patch and the measurement hold in each rank, not only in the first.

PREDICT_PROBE (environment):
  no-weights      loading transformers weights raises (a rank with a cached CTranslate2 conversion must not)
  eager-weights   every rank loads the weights before generating, as predict.py did before they loaded lazily
  die-converting  the process kills itself (SIGKILL) while CTranslate2 writes the converted model
PREDICT_PROBE_OUT: a directory; each rank writes rank<R>.json with its peak resident memory (MiB) and the seconds
  it spent loading the model (models.loading.load, and the weights where they load then) when generation is over
  (then a barrier: every rank's file exists before rank 0 goes on to merge and exit).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _refuse_weights(*args: object, **kwargs: object) -> None:
    raise AssertionError("predict_probe: the transformers weights were loaded")


def _patch(mode: str) -> None:
    if mode == "no-weights":  # every Auto*/model class's from_pretrained goes through this one
        from transformers import PreTrainedModel

        PreTrainedModel.from_pretrained = classmethod(_refuse_weights)
    elif mode == "eager-weights":
        import sumlab.models.loading as loading

        lazy = loading.load

        def eager(*args: object, **kwargs: object) -> object:
            loaded = lazy(*args, **kwargs)
            loaded.model  # noqa: B018 - the load is the point
            return loaded

        loading.load = eager
        import sumlab.predict.runner as runner

        runner.load = eager
    elif mode == "die-converting":
        from ctranslate2.specs import model_spec

        def dying(self: object, output_dir: str) -> None:
            Path(output_dir, "model.bin").write_bytes(b"partial")
            os.kill(os.getpid(), signal.SIGKILL)

        model_spec.ModelSpec.save = dying
    elif mode:
        sys.exit(f"predict_probe: unknown PREDICT_PROBE={mode}")


def _own_peak_kib() -> int:
    """This process's peak RSS since it started its program (VmHWM). Not ru_maxrss: Linux carries that over from
    the parent across fork + exec, so a rank started by a big process reports the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # no /proc: the best there is


def _record_peaks(out: Path) -> None:
    import sumlab.predict.runner as runner

    generate, load, seconds = runner.generate, runner.load, []

    def timed_load(*args: object, **kwargs: object) -> object:
        started = time.perf_counter()
        loaded = load(*args, **kwargs)
        seconds.append(time.perf_counter() - started)
        return loaded

    def recorded(*args: object, **kwargs: object) -> object:
        import torch.distributed as dist

        result = generate(*args, **kwargs)
        rank = dist.get_rank() if dist.is_initialized() else 0
        peak_mib = _own_peak_kib() / 1024
        out.mkdir(parents=True, exist_ok=True)
        record = {"rank": rank, "peak_rss_mib": round(peak_mib, 1), "load_seconds": round(sum(seconds), 2)}
        (out / f"rank{rank}.json").write_text(json.dumps(record))
        if dist.is_initialized():
            dist.barrier()
        return result

    runner.load, runner.generate = timed_load, recorded


if __name__ == "__main__":
    _patch(os.environ.get("PREDICT_PROBE", ""))
    if os.environ.get("PREDICT_PROBE_OUT"):
        _record_peaks(Path(os.environ["PREDICT_PROBE_OUT"]))
    sys.path[0] = str(ROOT)  # as `python predict.py` sets it
    # Not runpy.run_path: it sets sys.argv[0] to predict.py, which Lightning would then start the ranks with.
    script = ROOT / "predict.py"
    exec(compile(script.read_text(), str(script), "exec"), {"__name__": "__main__", "__file__": str(script)})
