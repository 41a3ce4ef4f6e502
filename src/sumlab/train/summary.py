"""The table printed at the end of each run: what a person checks first."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

SHOWN = ("rouge1", "rouge2", "rougeL", "rougeLsum", "rouge_combined", "gen_len")


def print_summary(metrics: dict[str, Any]) -> None:
    table = Table(title=f"sumlab run: {metrics['model']} on {metrics['data']}")
    table.add_column("split")
    for key in SHOWN:
        table.add_column(key, justify="right")
    for split in ("validation", "test"):
        row = metrics.get(split) or {}
        if row:
            label = f"{split} (best, epoch {row['epoch']})" if "epoch" in row else split
            table.add_row(label, *(f"{row[k]:.4f}" if k != "gen_len" else f"{row[k]:.1f}" for k in SHOWN))
    console = Console()
    if not console.is_terminal:  # piped or logged: rich would assume 80 columns and cut the headers
        console = Console(width=120)
    console.print(table)
    tps = metrics.get("train_tokens_per_second")
    console.print(f"steps {metrics['global_step']}, {tps} training tokens/s, wall {metrics['wall_seconds']:.0f} s")
    console.print(f"run directory: {metrics['run_dir']}")
    if metrics.get("export_dir"):
        console.print(f"exported model: {metrics['export_dir']}")
