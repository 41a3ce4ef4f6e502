"""Sweep units: search-space syntax (hydra-optuna-sweeper's), the DDP rule, plugin discovery, leaderboard."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import (
    CategoricalDistribution,
    DiscreteUniformDistribution,
    FloatDistribution,
    IntDistribution,
    IntLogUniformDistribution,
    IntUniformDistribution,
    LogUniformDistribution,
    UniformDistribution,
)

from sumlab.core.errors import SumlabError
from sumlab.sweep import check_distributed
from sumlab.sweep.results import leaderboard, markdown_table
from sumlab.sweep.space import distribution_from_override, format_value, grid_values, parse_overrides


def modern(d):
    """Optuna's deprecated classes (what hydra-optuna-sweeper built) as today's equivalent."""
    if isinstance(d, FloatDistribution):
        return FloatDistribution(d.low, d.high, log=d.log, step=d.step)
    if isinstance(d, IntDistribution):
        return IntDistribution(d.low, d.high, log=d.log, step=d.step)
    return d


def parse_one(line: str):
    return distribution_from_override(OverridesParser.create().parse_overrides([line])[0])


# hydra-optuna-sweeper's own table (tests/test_optuna_sweeper_plugin.py) and its documentation's examples,
# with the distributions it built (Optuna's deprecated classes compare equal to today's).
@pytest.mark.parametrize(
    "line, expected",
    [
        ("key=choice(1,2)", CategoricalDistribution([1, 2])),
        ("key=choice(true, false)", CategoricalDistribution([True, False])),
        ("key=choice('hello', 'world')", CategoricalDistribution(["hello", "world"])),
        ("key=shuffle(range(1,3))", CategoricalDistribution((1, 2))),
        ("key=range(1,3)", IntUniformDistribution(1, 3)),
        ("key=interval(1, 5)", UniformDistribution(1, 5)),
        ("key=int(interval(1, 5))", IntUniformDistribution(1, 5)),
        ("key=tag(log, interval(1, 5))", LogUniformDistribution(1, 5)),
        ("key=tag(log, int(interval(1, 5)))", IntLogUniformDistribution(1, 5)),
        ("key=range(0.5, 5.5, step=1)", DiscreteUniformDistribution(0.5, 5.5, 1)),
        # documentation: https://hydra.cc/docs/plugins/optuna_sweeper
        ("x=range(-5.5, 5.5, step=0.5)", DiscreteUniformDistribution(-5.5, 5.5, 0.5)),
        ("y=choice(-5, 0, 5)", CategoricalDistribution([-5, 0, 5])),
        ("x=int(interval(-5.0, 5.0))", IntUniformDistribution(-5, 5)),
        ("y=tag(log, interval(1, 10))", LogUniformDistribution(1, 10)),
        ("x=range(-5.0, 5.0)", DiscreteUniformDistribution(-5.0, 5.0, 1.0)),
        ("y=shuffle(range(-5, 5))", CategoricalDistribution(list(range(-5, 5)))),
        ("x=choice(-5.0, 0.0, 5.0)", CategoricalDistribution([-5.0, 0.0, 5.0])),
        ("y=choice(0, 1, 2, 3, 4, 5)", CategoricalDistribution([0, 1, 2, 3, 4, 5])),
        ("optim.lr=tag(log, interval(1e-5, 1e-2))", LogUniformDistribution(1e-5, 1e-2)),
    ],
)
def test_search_space_syntax(line: str, expected) -> None:
    actual = parse_one(line)
    if isinstance(expected, CategoricalDistribution):  # shuffle() randomizes the order
        assert isinstance(actual, CategoricalDistribution)
        assert set(actual.choices) == set(expected.choices)
    else:
        assert actual == modern(expected)


def test_params_from_overrides() -> None:
    # hydra-optuna-sweeper's test_create_params_from_overrides cases
    assert parse_overrides(["key=choice(1,2)"]) == ({"key": CategoricalDistribution([1, 2])}, {})
    assert parse_overrides(["key=5"]) == ({}, {"key": "5"})
    assert parse_overrides(["key1=choice(1,2)", "key2=5", "key3=range(1,3)"]) == (
        {"key1": CategoricalDistribution([1, 2]), "key3": modern(IntUniformDistribution(1, 3))},
        {"key2": "5"},
    )
    # a later argument (the command line) wins over an earlier one (the preset's params)
    assert parse_overrides(["a=choice(1,2)", "a=3"]) == ({}, {"a": "3"})


def test_grid_and_formatting() -> None:
    assert grid_values("a", parse_one("a=range(1,3)")) == [1, 2, 3]
    assert grid_values("m", parse_one("m=choice(tiny_t5, tiny_bart)")) == ["tiny_t5", "tiny_bart"]
    with pytest.raises(SumlabError, match="grid"):
        grid_values("lr", parse_one("lr=interval(0.1, 1.0)"))
    for value in (1e-05, 0.1, 3, True, None, "tiny_t5", "a b,c"):  # a value survives the trip back through Hydra
        override = OverridesParser.create().parse_overrides([f"k={format_value(value)}"])[0]
        assert override.value() == value


@pytest.mark.parametrize(
    "trainer, refused",
    [
        ({"strategy": "ddp", "devices": 2, "accelerator": "cpu"}, True),
        ({"strategy": "auto", "devices": 2, "accelerator": "cpu"}, True),
        ({"strategy": "fsdp", "devices": [0, 1], "accelerator": "gpu"}, True),
        ({"strategy": "ddp_spawn", "devices": 2, "num_nodes": 2}, True),
        ({"strategy": "ddp_spawn", "devices": 2, "accelerator": "cpu"}, False),
        ({"strategy": "ddp", "devices": 1}, False),
        ({"strategy": "auto", "devices": "auto", "accelerator": "cpu"}, False),
    ],
)
def test_ddp_rule(trainer: dict, refused: bool) -> None:
    if refused:
        with pytest.raises(SumlabError, match="ddp_spawn"):
            check_distributed(trainer)
    else:
        check_distributed(trainer)


def test_plugin_discovered() -> None:
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    names = [c.__name__ for c in Plugins.instance().discover(Sweeper)]
    assert "SumlabOptunaSweeper" in names


def test_leaderboard_orders_best_first(tmp_path: Path) -> None:
    for name, score, monitor in [("a", 0.2, "val/rouge_combined"), ("b", 0.5, "val/rouge_combined"),
                                 ("c", None, "val/rouge_combined")]:  # fmt: skip
        run = tmp_path / "outputs" / name
        run.mkdir(parents=True)
        (run / "run.json").write_text(json.dumps({"status": "completed" if score is not None else "failed"}))
        if score is not None:
            metrics = {"monitor": monitor, "model": "m", "validation": {"rouge_combined": score}}
            (run / "metrics.json").write_text(json.dumps(metrics))
    frame = leaderboard([tmp_path / "outputs"])
    assert [Path(p).name for p in frame["run_dir"]] == ["b", "a", "c"]
    assert list(frame["rank"]) == [1, 2, 3]
    table = markdown_table(frame, ["rank", "score", "run_dir"])
    assert table.splitlines()[2].startswith("| 1 | 0.5000 |")


def make_run(
    root: Path, name: str, monitor: str, score: float, mode_in_metrics: str | None, mode_in_config: str | None
) -> None:
    """A run directory as train.run leaves it (run.json, metrics.json, .hydra/config.yaml), without training."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": "completed"}))
    metrics = {"monitor": monitor, "model": "m", "validation": {monitor.split("/", 1)[-1]: score}}
    if mode_in_metrics is not None:
        metrics["mode"] = mode_in_metrics
    (run / "metrics.json").write_text(json.dumps(metrics))
    if mode_in_config is not None:
        config = f"seed: 1\nmetrics:\n  monitor: {monitor}\n  mode: {mode_in_config}\n"
        (run / ".hydra" / "config.yaml").write_text(config)


@pytest.mark.parametrize("where", ["metrics.json", "config.yaml"])
def test_leaderboard_ranks_a_minimized_monitor_lowest_first(tmp_path: Path, where: str) -> None:
    # val/gen_len has no "loss" in its name: only metrics.mode says lower is better
    for name, score in [("long", 14.0), ("short", 9.0), ("mid", 11.5)]:
        make_run(tmp_path, name, "val/gen_len", score, *(("min", None) if where == "metrics.json" else (None, "min")))
    frame = leaderboard([tmp_path])
    assert [Path(p).name for p in frame["run_dir"]] == ["short", "mid", "long"]
    assert list(frame["score"]) == [9.0, 11.5, 14.0]
    assert set(frame["mode"]) == {"min"}


@pytest.mark.parametrize("where", ["metrics.json", "config.yaml", "nowhere"])
def test_leaderboard_ranks_a_maximized_monitor_highest_first(tmp_path: Path, where: str) -> None:
    # val/loss_ratio contains "loss" yet is maximized here; with no mode anywhere, max is the default
    modes = {"metrics.json": ("max", None), "config.yaml": (None, "max"), "nowhere": (None, None)}[where]
    for name, score in [("low", 0.1), ("high", 0.9), ("mid", 0.5)]:
        make_run(tmp_path, name, "val/loss_ratio", score, *modes)
    frame = leaderboard([tmp_path])
    assert [Path(p).name for p in frame["run_dir"]] == ["high", "mid", "low"]
    assert list(frame["rank"]) == [1, 2, 3]


def test_leaderboard_metrics_mode_wins_over_the_config(tmp_path: Path) -> None:
    for name, score in [("a", 1.0), ("b", 2.0)]:
        make_run(tmp_path, name, "val/gen_len", score, "min", "max")
    assert [Path(p).name for p in leaderboard([tmp_path])["run_dir"]] == ["a", "b"]


# --- layering ---------------------------------------------------------------------------------------
SRC = Path(__file__).resolve().parents[1] / "src"


def module_imports() -> dict[str, set[str]]:
    """Every module under src/ -> the src modules it imports, module level or inside functions (a static reading)."""
    files = {".".join(f.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): f for f in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def cycles_through(graph: dict[str, set[str]], prefixes: tuple[str, ...]) -> list[list[str]]:
    """Import cycles that pass through a module whose name starts with one of the prefixes."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycle = path[path.index(nxt) :] + [nxt]
                if any(m.startswith(prefixes) for m in cycle):
                    found.append(cycle)
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


SWEEP_MODULES = ("sumlab.sweep", "hydra_plugins")


def test_sweep_imports_go_one_way() -> None:
    graph = module_imports()
    assert cycles_through(graph, SWEEP_MODULES) == []
    # the package is the top of sumlab.sweep: no module inside imports it back
    assert [m for m, targets in graph.items() if m.startswith("sumlab.sweep.") and "sumlab.sweep" in targets] == []
    assert "sumlab.sweep.study" in graph["hydra_plugins.sumlab_optuna_sweeper.sweeper"]  # the reading sees lazy imports


@pytest.mark.slow
def test_sweep_package_and_plugin_import_without_optuna_or_side_effects() -> None:
    code = (
        "import sys, warnings\n"
        "import sumlab.sweep, hydra_plugins.sumlab_optuna_sweeper.sweeper\n"
        "assert 'optuna' not in sys.modules and 'torch' not in sys.modules, 'heavy import'\n"
        "import optuna, lightning.pytorch, pandas; before = list(warnings.filters)  # their own filters\n"
        "import sumlab.sweep.study\n"
        "assert warnings.filters == before, 'warning filters changed at import'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_sweeper_takes_the_dataclass_keys_only() -> None:
    from hydra_plugins.sumlab_optuna_sweeper.sweeper import SumlabOptunaSweeper

    sweeper = SumlabOptunaSweeper(sampler={"_target_": "optuna.samplers.RandomSampler"}, pruner={"_target_": None},
                                  n_trials=3)  # fmt: skip
    assert sweeper.conf.n_trials == 3 and sweeper.conf.direction == "maximize" and sweeper.conf.grace_period == 180
    with pytest.raises(TypeError, match="n_trails"):
        SumlabOptunaSweeper(sampler=None, pruner=None, n_trails=3)
    with pytest.raises(TypeError, match="sampler"):
        SumlabOptunaSweeper(pruner=None)
