"""Sweep units: search-space syntax (hydra-optuna-sweeper's), the DDP rule, plugin discovery, leaderboard."""

from __future__ import annotations

import json
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
    for name, score, monitor in [("a", 0.2, "val/rouge_combined"), ("b", 0.5, "val/rouge_combined"), ("c", None, "val/rouge_combined")]:
        run = tmp_path / "outputs" / name
        run.mkdir(parents=True)
        (run / "run.json").write_text(json.dumps({"status": "completed" if score is not None else "failed"}))
        if score is not None:
            (run / "metrics.json").write_text(json.dumps({"monitor": monitor, "model": "m", "validation": {"rouge_combined": score}}))
    frame = leaderboard([tmp_path / "outputs"])
    assert [Path(p).name for p in frame["run_dir"]] == ["b", "a", "c"]
    assert list(frame["rank"]) == [1, 2, 3]
    table = markdown_table(frame, ["rank", "score", "run_dir"])
    assert table.splitlines()[2].startswith("| 1 | 0.5000 |")
