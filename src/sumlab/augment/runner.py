"""One augmentation run: check everything, then per method its predict.py steps (every rank) and its file (rank 0),
then the report: augment.json and a table of what the filter kept and dropped.

Every check that can fail on the config or the input runs first, so a typo costs no generation and leaves no
output. A finished step is never generated again; the files are rebuilt from the steps' outputs on every run
(cheap next to generation), so a changed filter threshold only needs the same command again.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import datasets
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from sumlab.augment.rows import VERDICTS, write_method
from sumlab.augment.steps import Method, Step, plan, predict_config, run_step
from sumlab.config.augment import METHODS
from sumlab.core.errors import SumlabError, guarded
from sumlab.core.io import plain, versions, write_json
from sumlab.core.runtime import quiet_library_logs
from sumlab.data.sources import source_of, split_paths
from sumlab.models.loading import resolve
from sumlab.predict.runner import load_rows
from sumlab.text.prompts import prompt_fields
from sumlab.text.rouge import ROUGE_KEYS, TOKENIZERS

REPORT = "augment.json"
TAG = re.compile(r"[A-Za-z0-9_.-]+")
STEP_KEYS = ("examples", "generated_now", "resumed", "devices", "backend", "compute_type", "samples_per_second",
             "mean_generated_length")  # fmt: skip
MODEL_KEYS = {  # each step's model_dir key and its predict.py model.* settings
    "back_translation": [
        ("back_translation.forward_model", "back_translation.forward"),
        ("back_translation.backward_model", "back_translation.backward"),
    ],
    "paraphrase": [("paraphrase.model_dir", "paraphrase.model")],
    "summarize": [("summarize.model_dir", "summarize.model")],
}


@guarded
def run(cfg: DictConfig) -> dict[str, Any]:
    """Generate, filter and write each method's file; returns augment.json's content (rank 0; {} elsewhere)."""
    started = time.perf_counter()
    quiet_library_logs()
    validate(cfg)
    methods = plan(cfg)
    rows = load_input(cfg, methods[0].steps[0])
    is_zero = rank_zero_only.rank == 0
    out = Path(cfg.output.dir)
    report = read_report(out) if is_zero else {}
    for method in methods:
        steps = [run_step(cfg, step, is_zero) for step in method.steps]
        if is_zero:
            report["methods"][method.name] = method_report(cfg, method, rows, out, steps)
            report.update(data=data_report(cfg, len(rows)), filter=plain(cfg.filter), versions=versions())
            write_json(out / REPORT, report)
    if not is_zero:
        return {}
    print_summary(report, [m.name for m in methods], out, time.perf_counter() - started)
    return report


# --- checks (before any generation) ----------------------------------------------------------------------
def validate(cfg: DictConfig) -> None:
    methods = list(cfg.methods)
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise SumlabError(
            f"methods={methods} {'has unknown ' + repr(unknown[0]) if unknown else 'is empty'}: "
            f"list one or more of {list(METHODS)}, e.g. methods=[paraphrase]"
        )
    if len(set(methods)) != len(methods):
        raise SumlabError(f"methods={methods} names a method twice: each writes one file; list it once")
    for name in methods:
        if not TAG.fullmatch(str(cfg[name].tag)):
            raise SumlabError(f"{name}.tag={cfg[name].tag!r}: new ids are <id>#<tag>; use letters, digits, _, . and -")
        for dir_key, settings_key in MODEL_KEYS[name]:
            _check_model(OmegaConf.select(cfg, dir_key), dir_key)
            _check_prompt(OmegaConf.select(cfg, settings_key), settings_key)
    check_filter(cfg.filter)
    if cfg.data.streaming:
        raise SumlabError(
            "data.streaming=true: augmentation reads the training rows through predict.py's tokenized cache; drop it"
        )


def _check_model(model_dir: Any, key: str) -> None:
    """Set, and (a local path) there: a missing model fails now, not after the methods before it generated."""
    if not model_dir:
        raise SumlabError(f"{key} is not set: pass {key}=<model> (a sumlab run dir, its export/, an HF directory "
                          "or a hub name, as predict.py's model_dir)")  # fmt: skip
    try:
        resolve(str(model_dir))
    except SumlabError as ex:
        raise SumlabError(str(ex).replace("model_dir=", f"{key}=", 1)) from None


def _check_prompt(settings: DictConfig, where: str) -> None:
    """A chat prompt without {text} would never show the model the dialogue: say so before any generation."""
    user = settings.prompt.user
    if settings.chat_template is not False and user is not None:
        try:
            prompt_fields(user)
        except SumlabError as ex:
            raise SumlabError(str(ex).replace("model.prompt.user", f"{where}.prompt.user", 1)) from None


def check_filter(rules: DictConfig) -> None:
    if rules.metric not in ROUGE_KEYS:
        raise SumlabError(f"filter.metric={rules.metric} is unknown: use one of {list(ROUGE_KEYS)}")
    if rules.tokenizer not in TOKENIZERS:
        raise SumlabError(f"filter.tokenizer={rules.tokenizer} is unknown: use one of {list(TOKENIZERS)}")
    if not 0 <= rules.min_rouge <= rules.max_rouge <= 1:
        raise SumlabError(
            f"filter.min_rouge={rules.min_rouge}, filter.max_rouge={rules.max_rouge}: "
            "need 0 <= min_rouge <= max_rouge <= 1"
        )
    if not 0 <= rules.min_distinct <= 1:
        raise SumlabError(f"filter.min_distinct={rules.min_distinct} is a share: use a value in [0, 1] (0: off)")


def load_input(cfg: DictConfig, first: Step) -> datasets.Dataset:
    """The training rows exactly as the steps read them (predict.py's checks: file, columns, emptiness)."""
    rows = load_rows(predict_config(cfg, first))
    column = cfg.data.summary_column
    if column not in rows.column_names:
        raise SumlabError(
            f"column {column!r} (data.summary_column) is not in the training rows {rows.column_names}: "
            "each augmented row keeps or replaces its original's summary; set data.summary_column"
        )
    return rows


# --- report (rank 0) -------------------------------------------------------------------------------------
def read_report(out: Path) -> dict[str, Any]:
    """augment.json so far: methods run into this directory before stay listed while their files are there."""
    try:
        report = json.loads((out / REPORT).read_text(encoding="utf-8"))
        methods = {k: v for k, v in report["methods"].items() if v["file"] is None or (out / v["file"]).is_file()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none yet, or damaged: rebuilt
        methods = {}
    return {"methods": methods}


def method_report(
    cfg: DictConfig, method: Method, rows: datasets.Dataset, out: Path, steps: list[dict[str, Any]]
) -> dict[str, Any]:
    counts = write_method(cfg, method, rows, out)
    return {
        **counts,
        "model": method.model,
        "tag": method.tag,
        "replaces": method.column,
        "steps": [_step_report(step, metrics, out) for step, metrics in zip(method.steps, steps, strict=True)],
    }


def _step_report(step: Step, metrics: dict[str, Any], out: Path) -> dict[str, Any]:
    """What a step's metrics.json says about its generation: how many rows, how many resumed, where, how fast."""
    where = {"step": step.name, "dir": str(step.dir.relative_to(out)), "model_dir": step.model_dir}
    return {**where, **{key: metrics.get(key) for key in STEP_KEYS}}


def data_report(cfg: DictConfig, rows: int) -> dict[str, Any]:
    files = (
        [str(p.resolve()) for p in split_paths(cfg.data, "train")] if source_of(cfg.data, "train") == "files" else []
    )
    return {"name": cfg.data.name, "files": files, "rows": rows}


def print_summary(report: dict[str, Any], names: list[str], out: Path, seconds: float) -> None:
    metric = report["filter"]["metric"]
    table = Table(title=f"sumlab augment: {report['data']['name']} ({report['data']['rows']} rows)")
    for column in ("method", "rows", *(v.replace("_", " ") for v in VERDICTS), f"{metric} kept", "file"):
        table.add_column(column, justify="left" if column in ("method", "file") else "right")
    written = [out / report["methods"][n]["file"] for n in names if report["methods"][n]["file"]]
    for name in names:
        m = report["methods"][name]
        mean, file = m[f"mean_{metric}_kept"], m["file"]
        cells = [str(m[v]) for v in VERDICTS] + ["-" if mean is None else f"{mean:.3f}"]
        table.add_row(name, str(m["rows"]), *cells, str(out / file) if file else "none (nothing kept)")
    console = Console()
    if not console.is_terminal:  # piped or logged: rich would assume 80 columns and cut the headers
        console = Console(width=140)
    console.print(table)
    console.print(f"wrote {out / REPORT} in {seconds:.0f} s", markup=False, highlight=False)
    if written:
        files = ",".join([*report["data"]["files"], *(str(path.resolve()) for path in written)])  # any data.dir
        console.print(f"train on the original and the new rows: 'data.train_file=[{files}]'", markup=False,
                      highlight=False)  # fmt: skip
