"""What a sweep leaves behind, and the leaderboard over every run and sweep.

Per sweep directory: ``sweep_summary.json`` (best value, parameters, run directory, export path),
``trials.csv`` (every trial: number, state, parameters, metrics, duration, run directory, error) and
``plots/`` (optimization history, parameter importance, parallel coordinates, intermediate values:
PNG via matplotlib and interactive HTML via plotly). ``python -m sumlab.sweep.results [ROOT...]``
(``make results``) gathers every run under the output roots into ``leaderboard.csv`` and
``leaderboard.md``, best first (lowest first for a run whose ``metrics.mode`` is min), with the 95% bootstrap interval
of each run's test rouge_combined (``test_rouge_combined_ci``) where the run stored one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd
import yaml

from sumlab.core.io import write_atomic, write_json

PLOTS = ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values")


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _flat_metrics(metrics: Optional[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split, prefix in (("validation", "val"), ("test", "test")):
        for k, v in ((metrics or {}).get(split) or {}).items():
            if isinstance(v, (int, float)):
                out[f"{prefix}_{k}"] = v
    return out


def trials_frame(study: Any) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        run_dir = t.user_attrs.get("run_dir")
        metrics = _read_json(Path(run_dir) / "metrics.json") if run_dir else None
        started, completed = t.datetime_start, t.datetime_complete
        duration = (completed - started).total_seconds() if completed and started else None
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        rows.append({
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            **{f"param.{k}": v for k, v in t.params.items()},
            "validations": len(t.intermediate_values),
            "last_reported": last,
            **_flat_metrics(metrics),
            "duration_s": round(duration, 3) if duration is not None else None,
            "started": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
            "completed": t.datetime_complete.isoformat(timespec="seconds") if t.datetime_complete else None,
            "run_dir": run_dir,
            "export_dir": (metrics or {}).get("export_dir"),
            "worker": t.user_attrs.get("worker"),
            "error": t.user_attrs.get("error") or t.user_attrs.get("pruned"),
        })  # fmt: skip
    return pd.DataFrame(rows)


def summary(study: Any, meta: dict[str, Any], frame: pd.DataFrame) -> dict[str, Any]:
    states = frame["state"].value_counts().to_dict() if len(frame) else {}
    out: dict[str, Any] = {**meta, "trials": {k: int(v) for k, v in states.items()}, "best": None}
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.value is not None]
    if complete:
        best = study.best_trial
        run_dir = best.user_attrs.get("run_dir")
        metrics = _read_json(Path(run_dir) / "metrics.json") if run_dir else None
        out["best"] = {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "run_dir": run_dir,
            "export_dir": (metrics or {}).get("export_dir"),
            "metrics": _flat_metrics(metrics),
        }
    return out


def _plot(study: Any, name: str, plots_dir: Path) -> list[str]:
    """One plot as PNG (matplotlib) and HTML (plotly); a plot the trials cannot support is skipped."""
    import optuna

    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            ax = getattr(optuna.visualization.matplotlib, f"plot_{name}")(study)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(9, 5.5)
            fig.tight_layout()
            tmp = plots_dir / f".{name}.tmp.png"
            fig.savefig(tmp, dpi=110)
            plt.close(fig)
            os.replace(tmp, plots_dir / f"{name}.png")
            written.append(f"{name}.png")
        except Exception as ex:  # too few trials, no varying parameter, ...
            print(f"note: plot {name}.png skipped: {type(ex).__name__}: {ex}", file=sys.stderr)
        try:
            fig = getattr(optuna.visualization, f"plot_{name}")(study)
            write_atomic(plots_dir / f"{name}.html", fig.to_html(include_plotlyjs="cdn", full_html=True))
            written.append(f"{name}.html")
        except Exception as ex:
            print(f"note: plot {name}.html skipped: {type(ex).__name__}: {ex}", file=sys.stderr)
    return written


def write_sweep_results(study: Any, sweep_dir: Path, meta: dict[str, Any], plots: bool = True) -> dict[str, Any]:
    sweep_dir = Path(sweep_dir)
    frame = trials_frame(study)
    write_atomic(sweep_dir / "trials.csv", frame.to_csv(index=False))
    info = summary(study, meta, frame)
    if plots and info["best"] is not None:
        plots_dir = sweep_dir / "plots"
        plots_dir.mkdir(parents=True, exist_ok=True)
        info["plots"] = [f"plots/{p}" for name in PLOTS for p in _plot(study, name, plots_dir)]
    write_json(sweep_dir / "sweep_summary.json", info)
    return info


# --- leaderboard -----------------------------------------------------------------------------------
def _runs(roots: Iterable[Path]) -> Iterable[tuple[Path, dict[str, Any]]]:
    seen = set()
    for root in roots:
        for run_json in sorted(Path(root).glob("**/run.json")):
            run_dir = run_json.parent.resolve()
            if run_dir in seen:
                continue
            seen.add(run_dir)
            yield run_dir, _read_json(run_json) or {}


def leaderboard(roots: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run directory under the roots (single runs and sweep trials), best first."""
    roots = [Path(r) for r in roots]
    trial_info: dict[Path, dict[str, Any]] = {}
    for root in roots:  # sweep trials: their parameters and state come from the sweep's table
        for table in root.glob("**/trials.csv"):
            try:
                frame = pd.read_csv(table)
            except Exception:
                continue
            for row in frame.to_dict("records"):
                if isinstance(row.get("run_dir"), str):
                    params = {k[6:]: v for k, v in row.items() if k.startswith("param.") and not _isnan(v)}
                    trial_info[Path(row["run_dir"]).resolve()] = {
                        "sweep": str(table.parent), "trial": row["number"], "trial_state": row["state"],
                        "params": json.dumps(params, default=str),
                    }  # fmt: skip
    rows = []
    for run_dir, info in _runs(roots):
        metrics = _read_json(run_dir / "metrics.json") or {}
        monitor = metrics.get("monitor", "val/rouge_combined")
        key = str(monitor).split("/", 1)[-1]
        rows.append({
            "run_dir": str(run_dir),
            "status": info.get("status"),
            "model": metrics.get("model"),
            "data": metrics.get("data"),
            "monitor": monitor,
            "mode": _mode(run_dir, metrics),
            "score": (metrics.get("validation") or {}).get(key),
            **_flat_metrics(metrics),
            TEST_INTERVAL: _interval(metrics, "test/rouge_combined"),
            **trial_info.get(run_dir, {}),
            "export_dir": metrics.get("export_dir"),
            "wall_s": metrics.get("wall_seconds"),
        })  # fmt: skip
    frame = pd.DataFrame(rows)
    if len(frame):  # best first: the lowest score of a minimized monitor, the highest of a maximized one; no score last
        frame["_key"] = [(s if m == "min" else -s) if isinstance(s, (int, float)) and not _isnan(s) else math.inf
                         for s, m in zip(frame["score"], frame["mode"])]  # fmt: skip
        frame = frame.sort_values(["_key", "run_dir"]).drop(columns=["_key"]).reset_index(drop=True)
        frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame


def _interval(metrics: dict[str, Any], key: str) -> Optional[str]:
    """The bootstrap interval the run stored for ``key``, as "[low, high]". The test step computes it once, over the
    per-example scores it writes to test_predictions.jsonl: resampling 300k examples takes too long to redo here."""
    stored = (metrics.get("intervals") or {}).get(key)
    if not isinstance(stored, dict) or not all(isinstance(stored.get(k), (int, float)) for k in ("low", "high")):
        return None
    return f"[{stored['low']:.4f}, {stored['high']:.4f}]"


def _mode(run_dir: Path, metrics: dict[str, Any]) -> str:
    """The monitor's direction, min or max: metrics.json's mode, else the run's config (metrics.mode), else max."""
    mode = metrics.get("mode")
    if mode is None:
        try:
            config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            config = None
        metrics_cfg = config.get("metrics") if isinstance(config, dict) else None
        mode = metrics_cfg.get("mode") if isinstance(metrics_cfg, dict) else None
    return "min" if str(mode).lower() in ("min", "minimize") else "max"


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def markdown_table(frame: pd.DataFrame, columns: Optional[list[str]] = None, limit: int = 50) -> str:
    if not len(frame):
        return "_no runs found_\n"
    columns = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in frame[columns].head(limit).itertuples(index=False):
        cells = [f"{v:.4f}" if isinstance(v, float) and not _isnan(v) else ("" if v is None or _isnan(v) else str(v))
                 for v in row]  # fmt: skip
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


TEST_INTERVAL = "test_rouge_combined_ci"  # 95% bootstrap interval of the mean over the test examples
LEADERBOARD_COLUMNS = ["rank", "score", "monitor", "model", "data", "status", "trial", "trial_state", "params",
                       "val_rouge1", "val_rouge2", "val_rougeL", "test_rouge_combined", TEST_INTERVAL,
                       "run_dir"]  # fmt: skip


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Gather every run and sweep under the roots into one leaderboard.")
    parser.add_argument("roots", nargs="*", default=None,
                        help="directories to search (default: outputs/ and multirun/)")  # fmt: skip
    parser.add_argument("--out", default=None,
                        help="directory for leaderboard.csv and leaderboard.md (default: the first root)")  # fmt: skip
    args = parser.parse_args(argv)
    roots = args.roots or [os.environ.get("SUMLAB_OUTPUT_DIR", "outputs"),
                           os.environ.get("SUMLAB_SWEEP_DIR", "multirun")]  # fmt: skip
    roots = [r for r in roots if Path(r).is_dir()]
    if not roots:
        print("error: no output directories found (train something first, or name the roots)", file=sys.stderr)
        return 2
    frame = leaderboard(roots)
    out = Path(args.out or roots[0])
    write_atomic(out / "leaderboard.csv", frame.to_csv(index=False))
    table = markdown_table(frame, LEADERBOARD_COLUMNS)
    header = f"# sumlab leaderboard\n\n{len(frame)} runs under {', '.join(map(str, roots))}, best first.\n\n"
    write_atomic(out / "leaderboard.md", header + table)
    terminal = ["rank", "score", "monitor", "model", "status", "trial", "test_rouge_combined", TEST_INTERVAL, "run_dir"]
    print(markdown_table(frame, terminal, limit=20), end="")
    print(f"{len(frame)} runs: {out / 'leaderboard.csv'}, {out / 'leaderboard.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
