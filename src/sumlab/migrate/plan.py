"""What a migration writes: group overrides, values with the old keys they came from, and what it leaves out.

Rendered by hand rather than by a YAML dumper: each value carries a comment naming its old key, a note where
the meaning differs sits on the line above, and the keys that needed no value or have no sumlab equivalent are
listed at the end, so nothing from the old file disappears without a line saying why.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, OmegaConf

from sumlab.migrate.keys import Leaf

# top-level keys in the order a reader expects them; the rest follow in the order they were set
ORDER = ("run_name", "seed", "train", "test", "model", "data", "optim", "trainer", "generation", "metrics", "qlora",
         "callbacks", "logger", "hydra")  # fmt: skip
WIDTH = 116  # comment lines are wrapped to this


@dataclass
class Entry:
    value: Any
    source: str  # the old key(s) it came from, or why it is written
    note: str = ""  # where the meaning differs: written above the value


@dataclass
class Plan:
    group: str  # experiment | sweeper: the conf/ group written
    name: str
    origin: str  # the old file, for the header
    header: list[str] = field(default_factory=list)  # meta.* and other comments for the top of the file
    defaults: dict[str, Entry] = field(default_factory=dict)  # "/model" -> kobart (a group's option)
    values: dict[tuple[str, ...], Entry] = field(default_factory=dict)
    same: list[str] = field(default_factory=list)  # old keys equal to what sumlab does anyway
    unmapped: list[tuple[str, str]] = field(default_factory=list)  # (old key=value, why)

    # --- building ---
    def use(self, group: str, option: Any, source: str, note: str = "") -> None:
        self.defaults[group] = Entry(option, source, note)

    def set(self, key: str | tuple[str, ...], value: Any, source: str, note: str = "") -> None:
        path = tuple(key.split(".")) if isinstance(key, str) else key
        self.values[path] = Entry(value, source, note)

    def keep(self, leaf: Leaf, why: str) -> None:
        """An old key that needs no value: sumlab does the same already."""
        self.same.append(f"{leaf.path}={_flow(leaf.value)}: {why}")

    def skip(self, leaf: Leaf, why: str) -> None:
        """An old key with no sumlab value, and why."""
        self.unmapped.append((f"{leaf.path}={_flow(leaf.value)}", why))

    def overrides(self) -> list[str]:
        """The chosen presets as command-line overrides (the default config a delta is measured against)."""
        out = []
        for group, entry in self.defaults.items():
            if not group.startswith("/hydra"):
                option = entry.value
                out.append(f"{group[1:]}=[{','.join(option)}]" if isinstance(option, list) else f"{group[1:]}={option}")
        return out

    def drop_defaults(self, base: DictConfig) -> None:
        """Values the chosen presets already give are not written; their old keys are listed as the same."""
        for path, entry in list(self.values.items()):
            current = _select(base, path)
            if current is not _ABSENT and _plain(current) == _plain(entry.value):
                del self.values[path]
                self.same.append(f"{entry.source}: {'.'.join(path)}={_flow(entry.value)} already")

    def differences(self, composed: DictConfig) -> list[str]:
        """Written values the composed config does not hold (a wrong key would be silently ignored otherwise)."""
        wrong = []
        for path, entry in self.values.items():
            if isinstance(entry.value, str) and "${" in entry.value:
                continue  # an interpolation: composed, it is its target's value
            current = _select(composed, path)
            if current is _ABSENT or _plain(current) != _plain(entry.value):
                wrong.append(f"{'.'.join(path)}={_flow(entry.value)}")
        return wrong

    # --- writing ---
    def render(self) -> str:
        lines = ["# @package _global_", *self._intro()]
        if self.defaults:
            lines.append("defaults:")
            for group, entry in self.defaults.items():
                lines += _note(entry.note, "  ")
                lines.append(f"  - override {group}: {_flow(entry.value)}  # {entry.source}")
        lines += _tree(_nest(self.values), "")
        lines += self._listing()
        return "\n".join(lines) + "\n"

    def _intro(self) -> list[str]:
        intro = [f"Migrated from {self.origin} by `python -m sumlab.migrate`. Run: `{self.command()}`",
                 "Each value names the old key it came from; the keys that needed no value, and those with no "
                 "sumlab equivalent, are listed at the end."]  # fmt: skip
        return [line for text in intro + self.header for line in _wrap(text, "# ", "# ")]

    def command(self) -> str:
        if self.group == "experiment":
            return f"python train.py experiment={self.name}"
        return f"python train.py -m sweeper={self.name}"

    def _listing(self) -> list[str]:
        lines = []
        if self.same:
            lines.append("# Same as sumlab's defaults or the chosen presets (nothing to write):")
            lines += [line for item in self.same for line in _wrap(item, "#   ", "#       ")]
        if self.unmapped:
            lines.append("# Not mapped:")
            lines += [line for key, why in self.unmapped for line in _wrap(f"{key}: {why}", "#   ", "#       ")]
        return lines


_ABSENT = object()


def _select(cfg: DictConfig, path: tuple[str, ...]) -> Any:
    """The value at `path`, a key at a time (a sweep parameter's key holds dots: optim.lr); _ABSENT if missing."""
    node: Any = cfg
    for part in path:
        if not OmegaConf.is_dict(node) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def _plain(value: Any) -> Any:
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    return value.value if isinstance(value, Enum) else value


def _flow(value: Any) -> str:
    """A value as one line of YAML (flow style): what the file and the listings show."""
    text = yaml.safe_dump(_plain(value), default_flow_style=True, allow_unicode=True, width=1 << 30)
    return text.removesuffix("...\n").strip()


def _wrap(text: str, first: str, rest: str) -> list[str]:
    """Comment lines of at most WIDTH characters: `first` starts the first, `rest` the others."""
    lines = textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest, break_long_words=False,
                          break_on_hyphens=False)  # fmt: skip
    return lines or [first.rstrip()]


def _note(note: str, indent: str) -> list[str]:
    return _wrap(note, f"{indent}# ", f"{indent}# ") if note else []


def _nest(values: dict[tuple[str, ...], Entry]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, entry in sorted(values.items(), key=lambda kv: _rank(kv[0][0])):
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = entry
    return tree


def _rank(top: str) -> int:
    return ORDER.index(top) if top in ORDER else len(ORDER)


def _tree(node: dict[str, Any], indent: str) -> list[str]:
    lines = []
    for key, child in node.items():
        if isinstance(child, Entry):
            lines += _note(child.note, indent)
            lines.append(f"{indent}{key}: {_flow(child.value)}  # {child.source}")
        else:
            lines.append(f"{indent}{key}:")
            lines += _tree(child, indent + "  ")
    return lines


def describe(leaf: Optional[Leaf]) -> str:
    """An old key and its value, for sources and messages."""
    return "" if leaf is None else f"{leaf.path}={_flow(leaf.value)}"
