"""Search spaces in hydra-optuna-sweeper's syntax, as current Optuna distributions.

Same mapping as hydra-optuna-sweeper 1.2/1.3 (its ``create_optuna_distribution_from_override``),
written with Optuna's current classes (``FloatDistribution``/``IntDistribution`` equal the
deprecated ``UniformDistribution``, ``LogUniformDistribution``, ``IntUniformDistribution``...):

- ``choice(a, b, ...)``                      -> CategoricalDistribution
- ``range(start, stop[, step])``              -> IntDistribution(start, stop, step);
                                                 any float -> FloatDistribution(step=...)
- ``shuffle(range(...))``                     -> CategoricalDistribution of the range's values
- ``interval(a, b)``                          -> FloatDistribution(a, b) (IntDistribution when both are ints)
- ``int(interval(a, b))``                     -> IntDistribution(a, b)
- ``tag(log, interval(a, b))``                -> FloatDistribution(a, b, log=True) (IntDistribution(log=True) for ints)
- anything else (``key=5``)                    -> a fixed value, passed to every trial unchanged
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from sumlab.core.errors import SumlabError

CHOICE_TYPES = (str, int, float, bool, type(None))


def _choices(override: Override) -> list[Any]:
    values = list(override.sweep_iterator(transformer=Transformer.encode))
    for v in values:
        if not isinstance(v, CHOICE_TYPES):
            raise SumlabError(
                f"{override.input_line}: a choice takes str, int, float, bool or null values, not {type(v).__name__}"
            )
    return values


def distribution_from_override(override: Override) -> Any:
    """A distribution for a sweep override; the value as a string for a plain one."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep():
        assert isinstance(value, ChoiceSweep)
        return CategoricalDistribution(_choices(override))
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep) and value.start is not None and value.stop is not None
        if value.shuffle:
            return CategoricalDistribution(_choices(override))
        if any(isinstance(x, float) for x in (value.start, value.stop, value.step)):
            return FloatDistribution(float(value.start), float(value.stop), step=float(value.step))
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep) and value.start is not None and value.end is not None
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise SumlabError(
        f"{override.input_line}: this sweep is not supported by the Optuna sweeper (use choice, range, interval)"
    )


def parse_overrides(arguments: Sequence[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """(search space, fixed overrides); a later argument for the same key wins."""
    parsed = OverridesParser.create().parse_overrides(list(arguments))
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in parsed:
        key = override.get_key_element()
        value = distribution_from_override(override)
        space.pop(key, None)
        fixed.pop(key, None)
        if isinstance(value, BaseDistribution):
            space[key] = value
        else:
            fixed[key] = value
    return space, fixed


def params_to_arguments(params: Mapping[str, Any] | None) -> list[str]:
    """``hydra.sweeper.params`` (key -> sweep string) as command-line overrides."""
    return [f"{k}={v}" for k, v in (params or {}).items()]


def grid_values(name: str, dist: BaseDistribution) -> list[Any]:
    """The points of a discrete distribution, for the grid sampler (both ends included)."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution) and not dist.log:
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        n = int(round((dist.high - dist.low) / dist.step))
        return [dist.low + i * dist.step for i in range(n + 1)]
    raise SumlabError(
        f"hydra.sweeper.params.{name}: the grid sampler needs choice(...) or range(...), not a continuous interval"
    )


def format_value(value: Any) -> str:
    """A trial's parameter value as an override value Hydra parses back to the same thing."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if isinstance(value, str) and not re.fullmatch(r"[\w./:@+-]+", text):
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return text
