"""A wandb sweep file -> the plan of conf/sweeper/NAME.yaml: sumlab's Optuna sweeper with a sampler for the method,
the metric as metrics.monitor/mode, each parameter in hydra-optuna-sweeper syntax (what sumlab.sweep.space parses)
under its sumlab key, and wandb's hyperband early termination as Optuna's HyperbandPruner."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

from sumlab.core.errors import SumlabError
from sumlab.migrate.keys import SIMPLE, Leaf, canonical, monitor_of
from sumlab.migrate.plan import Plan
from sumlab.sweep.space import format_value

SAMPLERS = {"grid": "grid", "random": "random", "bayes": "tpe"}
SAMPLER_NOTES = {"bayes": "wandb's bayes fits a Gaussian process; TPE is Optuna's Bayesian sampler (sumlab's default)"}
UNSUPPORTED = ("normal", "q_normal", "log_normal", "q_log_normal", "inv_log_uniform", "inv_log_uniform_values",
               "beta", "q_beta")  # fmt: skip
SWEEPER = ("hydra", "sweeper")
DEFAULT_TRIALS = 20


def is_sweep(old: dict[str, Any]) -> bool:
    return "method" in old and "parameters" in old


def migrate_sweep(old: dict[str, Any], name: str, origin: str) -> Plan:
    plan = Plan("sweeper", name, origin)
    rest = dict(old)
    method = str(rest.pop("method")).lower()
    if method not in SAMPLERS:
        raise SumlabError(f"method: {method} is not a wandb method sumlab knows: use one of {', '.join(SAMPLERS)}")
    plan.use("/hydra/sweeper", "sumlab_optuna", "the sweep file", "sumlab's Optuna sweeper")
    plan.use("/hydra/sweeper/sampler", SAMPLERS[method], f"method={method}", SAMPLER_NOTES.get(method, ""))
    _metric(rest.pop("metric", None), plan)
    plan.set((*SWEEPER, "direction"), "${metrics.mode}", "metric.goal")
    plan.set((*SWEEPER, "study_name"), name, "the preset's name (a storage holds many studies by name)")
    sizes = _parameters(rest.pop("parameters"), plan, ())
    _early_terminate(rest.pop("early_terminate", None), plan)
    _trials(rest.pop("run_cap", None), plan, method, sizes)
    plan.set((*SWEEPER, "sampler", "seed"), "${seed}", "sumlab's seed (offset per worker and resume)")
    _rest(rest, plan)
    return plan


def _metric(metric: Any, plan: Plan) -> None:
    if not isinstance(metric, dict) or "name" not in metric:
        plan.set("metrics.monitor", "val/rouge_combined", "no metric in the sweep file", "sumlab's default objective")
        plan.set("metrics.mode", "max", "no metric in the sweep file")
        return
    monitor = monitor_of(metric["name"])
    source = f"metric.name={metric['name']}"
    if monitor is None:
        plan.unmapped.append((source, "not a metric sumlab logs; the objective is val/rouge_combined instead"))
        monitor = "val/rouge_combined"
    plan.set("metrics.monitor", monitor, source)
    goal = str(metric.get("goal", "")).lower()
    if goal in ("maximize", "minimize"):
        plan.set("metrics.mode", goal[:3], f"metric.goal={goal}")
    else:
        plan.set("metrics.mode", "min" if monitor == "val/loss" else "max", source,
                 "no goal in the file (wandb's default is minimize): chosen by the metric")  # fmt: skip
    for key in set(metric) - {"name", "goal"}:
        plan.unmapped.append((f"metric.{key}={metric[key]}", "the sweep runs n_trials trials"))


def _target(path: tuple[str, ...]) -> tuple[Optional[str], Callable[[Any], Any], str]:
    """(sumlab key, value conversion, note) for a parameter name; (None, ..., why) when there is none."""
    name = canonical(path)
    if name == "gen_max_length":
        return "generation.max_new_tokens", lambda v: v - 1, "HF's max_length counts the decoder's start token: -1"
    if name == "lr_scheduler_type":
        return "optim.scheduler", str, ""
    if name == "num_train_epochs":
        return "trainer.max_epochs", lambda v: math.ceil(v), "whole epochs"
    if name in SIMPLE and not SIMPLE[name][0].startswith("logger."):
        return SIMPLE[name][0], lambda v: v, ""
    if len(path) == 1 and "." in path[0]:  # already a sumlab key (optim.lr)
        return path[0], lambda v: v, ""
    return None, lambda v: v, "no sumlab key to sweep for it (sweep a sumlab key by its name, e.g. optim.lr)"


def _parameters(params: dict[str, Any], plan: Plan, prefix: tuple[str, ...]) -> list[Optional[int]]:
    """Each parameter as a hydra.sweeper.params entry; returns the number of values of each (None: continuous)."""
    sizes: list[Optional[int]] = []
    for key, spec in params.items():
        path = (*prefix, str(key))
        where = f"parameters.{'.'.join(path)}"
        if isinstance(spec, dict) and isinstance(spec.get("parameters"), dict):  # wandb's nested parameters
            sizes += _parameters(spec["parameters"], plan, path)
            continue
        target, convert, note = _target(path)
        if target is None or not isinstance(spec, dict):
            plan.unmapped.append((where, note if target is None else "expected {values: [...]}, {value: x} or a range"))
            continue
        try:
            text, size, kind_note = _distribution(spec, convert)
        except _Unsupported as ex:
            plan.unmapped.append((where, str(ex)))
            continue
        plan.set((*SWEEPER, "params", target), text, where, "; ".join(n for n in (note, kind_note) if n))
        sizes.append(size)
    return sizes


class _Unsupported(Exception):
    pass


def _distribution(spec: dict[str, Any], convert: Callable[[Any], Any]) -> tuple[str, Optional[int], str]:
    """(sweep string, number of values or None, note) for one wandb parameter spec."""
    if "value" in spec:
        value = convert(spec["value"])
        return value if isinstance(value, (int, float)) else format_value(value), 1, "a fixed value"
    if "values" in spec:
        values = [convert(v) for v in spec["values"]]
        note = "drawn uniformly (Optuna's choice takes no probabilities)" if "probabilities" in spec else ""
        return f"choice({', '.join(format_value(v) for v in values)})", len(values), note
    if spec.get("distribution") in UNSUPPORTED:
        raise _Unsupported(f"distribution {spec['distribution']}: Optuna samples ranges and choices, not that")
    if "min" not in spec or "max" not in spec:
        raise _Unsupported("expected values, value, or min and max")
    low, high = convert(spec["min"]), convert(spec["max"])
    ints = isinstance(spec["min"], int) and isinstance(spec["max"], int)
    kind = spec.get("distribution", "int_uniform" if ints else "uniform")  # wandb's rule when none is named
    if kind == "int_uniform":
        return f"int(interval({int(low)}, {int(high)}))", int(high) - int(low) + 1, ""
    if kind == "uniform":
        return f"interval({float(low)!r}, {float(high)!r})", None, ""
    if kind == "q_uniform":
        q = spec.get("q", 1)
        return f"range({low!r}, {high!r}, {q!r})", int(round((high - low) / q)) + 1, "q_uniform: a range with step q"
    if kind in ("log_uniform_values", "q_log_uniform_values"):
        note = "the step q is dropped: a log scale takes none in Optuna" if kind.startswith("q_") else ""
        return f"tag(log, interval({float(low)!r}, {float(high)!r}))", None, note
    if kind == "log_uniform":  # wandb's min/max are natural-log exponents here
        return f"tag(log, interval({math.exp(low)!r}, {math.exp(high)!r}))", None, "log_uniform: bounds e^min, e^max"
    raise _Unsupported(f"distribution {kind} is not one wandb documents")


def _early_terminate(spec: Any, plan: Plan) -> None:
    if not isinstance(spec, dict) or spec.get("type") != "hyperband":
        plan.use("/hydra/sweeper/pruner", "none", "no hyperband early_terminate", "every trial runs to the end")
        if spec is not None:
            plan.unmapped.append((f"early_terminate={spec}", "only wandb's hyperband has an Optuna counterpart"))
        return
    plan.use("/hydra/sweeper/pruner", "hyperband", "early_terminate.type=hyperband",
             "Optuna's HyperbandPruner; its resource is the validation count (sumlab reports after each)")  # fmt: skip
    keys = {"min_iter": "min_resource", "max_iter": "max_resource", "eta": "reduction_factor"}
    for key, value in spec.items():
        if key in keys:
            plan.set((*SWEEPER, "pruner", keys[key]), value, f"early_terminate.{key}")
        elif key != "type":
            plan.unmapped.append((f"early_terminate.{key}={value}", "Optuna's Hyperband sets its brackets from "
                                  "min_resource, max_resource and reduction_factor"))  # fmt: skip


def _trials(run_cap: Any, plan: Plan, method: str, sizes: list[Optional[int]]) -> None:
    grid = math.prod(s for s in sizes if s) if method == "grid" and all(sizes) else None
    if run_cap is not None:
        plan.set((*SWEEPER, "n_trials"), int(run_cap), "run_cap")
    elif grid is not None:
        plan.set((*SWEEPER, "n_trials"), grid, "method=grid", "the grid's size: every point once")
    else:
        plan.set((*SWEEPER, "n_trials"), DEFAULT_TRIALS, "no run_cap",
                 "wandb ran until stopped; an Optuna study needs a number: raise it as you like")  # fmt: skip


def _rest(rest: dict[str, Any], plan: Plan) -> None:
    for key, value in rest.items():
        leaf = Leaf(key, value, "")
        if key in ("name", "description"):
            plan.header.append(f"{key}: {value}")
        elif key in ("program", "command"):
            plan.skip(leaf, f"sumlab runs train.py itself: python train.py -m sweeper={plan.name}")
        elif key in ("project", "entity"):
            plan.use("/logger", "wandb", "project/entity", "the trials log to wandb, as the sweep's runs did")
            plan.set(f"logger.wandb.{key}", value, key)
        else:
            plan.skip(leaf, "no Optuna sweeper setting matches it")
