"""`python -m sumlab.migrate OLD.yaml [--name NAME] [--force] [--conf-dir conf]` (see sumlab.migrate)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

import sumlab
from sumlab.core.errors import SumlabError, guarded
from sumlab.core.io import read_user_file
from sumlab.migrate.conf import Conf
from sumlab.migrate.config import migrate_config
from sumlab.migrate.plan import Plan
from sumlab.migrate.sweep import is_sweep, migrate_sweep

NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")  # a Hydra option name: no dots, slashes or spaces


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats: `1e-5` is a number (PyYAML's YAML 1.1 reads it as a string; OmegaConf and Hydra do not)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789.")
)


def read_old(path: Path) -> dict[str, Any]:
    """The old file as a mapping; one line naming the problem otherwise."""
    text = read_user_file(path, "old config")
    try:
        old = yaml.load(text, Loader=_Loader)  # a SafeLoader
    except yaml.YAMLError as ex:
        mark = getattr(ex, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise SumlabError(f"{path} is not YAML{where}: give the old YAML config or wandb sweep file") from None
    if old is None:
        raise SumlabError(f"{path} is empty (comments only): give the old YAML config or wandb sweep file")
    if not isinstance(old, dict):
        raise SumlabError(f"{path} holds a {type(old).__name__}, not a YAML mapping of settings: nothing to migrate")
    return old


def default_name(old: dict[str, Any], path: Path, sweep: bool) -> str:
    """--name, else the experiment's (or sweep's) own name, else the file's: made a valid option name."""
    meta = old.get("meta") if isinstance(old.get("meta"), dict) else {}
    own = old.get("name") if sweep else meta.get("experiment_name") or old.get("experiment_name")
    name = str(own) if isinstance(own, str) and own.strip() else path.stem
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name.strip()).strip("_-") or "migrated"


@guarded
def migrate(old_path: Path, name: Optional[str], force: bool, conf_dir: Path) -> Path:
    conf = Conf(conf_dir)
    old = read_old(old_path)
    sweep = is_sweep(old)
    name = name or default_name(old, old_path, sweep)
    if not NAME.fullmatch(name):
        raise SumlabError(f"--name {name!r} is not a preset name: use letters, digits, _ and -")
    group = "sweeper" if sweep else "experiment"
    conf.refuse_existing(group, name, force)
    try:
        plan = migrate_sweep(old, name, str(old_path)) if sweep else migrate_config(old, conf, name, str(old_path))
    except (TypeError, ValueError) as ex:  # int("abc"), a list where a number belongs: the value names itself
        raise SumlabError(f"{old_path}: a value has the wrong type ({ex}): fix it and migrate again") from None
    text = plan.render()
    conf.check(plan, text)
    path = conf.write(plan, text)
    _report(plan, path)
    return path


def _report(plan: Plan, path: Path) -> None:
    print(f"wrote {path}: {len(plan.values) + len(plan.defaults)} settings, {len(plan.same)} old keys already "
          f"sumlab's, {len(plan.unmapped)} not mapped; it composes and validates. Run: {plan.command()}")  # fmt: skip
    if plan.unmapped:
        print("not mapped (also listed at the end of the file):")
        for key, why in plan.unmapped:
            print(f"  {key}: {why}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sumlab.migrate",
        description="A team's old YAML training config -> conf/experiment/NAME.yaml, or a wandb sweep file -> "
        "conf/sweeper/NAME.yaml; each value names its old key, and unmapped keys are listed with the reason.",
    )
    parser.add_argument("old", type=Path, help="the old YAML config (or wandb sweep file: method + parameters)")
    parser.add_argument("--name", help="the preset's name (default: meta.experiment_name, the sweep's name, or the "
                        "file's)")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="replace an existing preset of that name")
    parser.add_argument("--conf-dir", type=Path, default=Path("conf"), help="sumlab's config directory (conf)")
    args = parser.parse_args(argv)
    sumlab.setup()
    migrate(args.old, args.name, args.force, args.conf_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
