"""The project's conf/ directory: presets to match, the default config a delta is measured against, the check
that a migrated file composes and validates (in a copy of conf/, so nothing is written before it passes), and the
write itself (a temporary name, renamed)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from sumlab.config.rules import validate
from sumlab.core.errors import SumlabError, one_line
from sumlab.core.io import write_atomic
from sumlab.migrate.plan import Plan
from sumlab.sweep.space import grid_values, params_to_arguments, parse_overrides

GRID_SAMPLER = "optuna.samplers.GridSampler"


class Conf:
    def __init__(self, directory: Path) -> None:
        self.dir = directory.expanduser().resolve()
        if not (self.dir / "train.yaml").is_file():
            raise SumlabError(
                f"no sumlab config directory at {directory} (it has no train.yaml): "
                "run from the project root or pass --conf-dir"
            )

    def path(self, group: str, name: str) -> Path:
        return self.dir / group / f"{name}.yaml"

    def refuse_existing(self, group: str, name: str, force: bool) -> None:
        if self.path(group, name).exists() and not force:
            raise SumlabError(
                f"{self.path(group, name)} exists: pass --force to replace it, or --name to write another preset"
            )

    def model_presets(self) -> dict[str, str]:
        """Hub name (lower case) -> model preset, for the presets that load a checkpoint (not the tiny ones)."""
        presets = {}
        for path in sorted((self.dir / "model").glob("*.yaml")):
            preset = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if isinstance(preset, dict) and preset.get("name_or_path") and not preset.get("tiny"):
                presets[str(preset["name_or_path"]).lower()] = path.stem
        return presets

    def compose(self, overrides: list[str], directory: Optional[Path] = None) -> DictConfig:
        """`python train.py <overrides> --cfg job`, Hydra's own node included (a sweeper lives there)."""
        with initialize_config_dir(config_dir=str(directory or self.dir), version_base="1.3"):
            return compose("train", overrides=overrides, return_hydra_config=True)

    def check(self, plan: Plan, text: str) -> DictConfig:
        """Compose `<group>=<name>` with the new file in a copy of conf/ and validate it; one line if it fails."""
        what = f"the migrated {plan.group}/{plan.name}.yaml"
        with tempfile.TemporaryDirectory(prefix="sumlab-migrate-") as tmp:
            copy = Path(tmp) / "conf"
            shutil.copytree(self.dir, copy)
            (copy / plan.group).mkdir(exist_ok=True)
            (copy / plan.group / f"{plan.name}.yaml").write_text(text, encoding="utf-8")
            try:
                cfg = self.compose([f"{plan.group}={plan.name}"], copy)
            except Exception as ex:  # Hydra and OmegaConf raise several types; any of them means it does not compose
                raise SumlabError(f"{what} does not compose ({one_line(ex)}); nothing was written") from None
        try:
            validate(cfg)
            if plan.group == "sweeper":
                _check_space(cfg)
        except SumlabError as ex:
            raise SumlabError(f"{what} does not validate: {ex}; nothing was written") from None
        wrong = plan.differences(cfg)
        if wrong:
            raise SumlabError(f"{what} composes to other values than it writes ({', '.join(wrong)}); nothing written")
        return cfg

    def write(self, plan: Plan, text: str) -> Path:
        path = self.path(plan.group, plan.name)
        write_atomic(path, text)
        return path


def _check_space(cfg: DictConfig) -> None:
    """The sweep's parameters parse as the sweeper will parse them (and are discrete for the grid sampler)."""
    sweeper: Any = cfg.hydra.sweeper
    space, _ = parse_overrides(params_to_arguments(sweeper.params))
    if sweeper.sampler.get("_target_") == GRID_SAMPLER:
        for name, distribution in space.items():
            grid_values(name, distribution)
