"""The run directory: the one place that knows what a run writes and where.

Hydra creates it (``hydra.run.dir``, unique per run); sumlab never changes the working directory.
Layout: ``.hydra/`` (resolved config), ``run.json`` (config fingerprint and status: running, completed,
failed, pruned, or interrupted = stopped by SIGTERM with a resumable ``last.ckpt``), ``metrics.json``,
``checkpoints/`` (best, last), ``export/`` (the best model as a Hugging Face directory), ``test_predictions.jsonl``
(written by train.predictions). Every file a
person reads is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from sumlab.core.errors import SumlabError
from sumlab.core.io import git_commit, plain, stable_hash, versions, write_atomic, write_json
from sumlab.models import adapters

# Config subtrees that define "the same experiment" for ckpt_path=last (trainer and paths may change).
FINGERPRINT_KEYS = ("model", "data", "optim", "generation", "qlora", "metrics", "seed")
# A YAML key or override name that *ends* in a secret word (HF_TOKEN, WANDB_API_KEY, db_password),
# so tokenizer: or max_new_tokens: are left alone.
SECRET_LINE = re.compile(r"(?im)^(\s*-?\s*[\w.+~]*(token|api_?key|secret|password)\s*[:=]\s*).+$")


def fingerprint(cfg: DictConfig) -> str:
    return stable_hash({k: plain(cfg[k]) for k in FINGERPRINT_KEYS})


class RunDir:
    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.path = Path(cfg.paths.run_dir)
        self.checkpoints = self.path / "checkpoints"
        self.export_dir = self.path / "export"
        self.metrics_file = self.path / "metrics.json"

    def start(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._redact_hydra_files()
        write_json(self.path / "run.json", {"status": "running", "fingerprint": fingerprint(self.cfg)})

    def finish(self, status: str, **extra: Any) -> None:
        write_json(self.path / "run.json", {"status": status, "fingerprint": fingerprint(self.cfg), **extra})

    def _redact_hydra_files(self) -> None:
        """Secrets passed as overrides (+logger.x.api_key=...) must not stay in the saved config."""
        for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
            path = self.path / ".hydra" / name
            if path.is_file():
                text = path.read_text(encoding="utf-8")
                redacted = SECRET_LINE.sub(r"\1'***'", text)
                if redacted != text:
                    write_atomic(path, redacted)

    def resolve_ckpt_path(self) -> Optional[str]:
        """ckpt_path: None, a file, "best"/"last" of the latest run with this same config."""
        wanted = self.cfg.ckpt_path
        if wanted is None:
            return None
        if wanted not in ("last", "best"):
            path = Path(wanted).expanduser()
            if not path.is_file():
                raise SumlabError(f"ckpt_path={wanted}: no such checkpoint file (use a .ckpt path, last or best)")
            return str(path)
        me = fingerprint(self.cfg)
        candidates = []
        for run in Path(self.cfg.paths.output_dir, self.cfg.task_name).glob("*/run.json"):
            if run.parent == self.path:
                continue
            try:
                info = json.loads(run.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            ckpts = sorted((run.parent / "checkpoints").glob("last*.ckpt" if wanted == "last" else "best*.ckpt"))
            if info.get("fingerprint") == me and ckpts:
                candidates.append(ckpts[-1])
        if not candidates:
            raise SumlabError(
                f"ckpt_path={wanted}: no earlier run of this config "
                f"under {Path(self.cfg.paths.output_dir, self.cfg.task_name)} "
                "has that checkpoint; pass a .ckpt path instead"
            )
        return str(max(candidates, key=lambda p: p.stat().st_mtime))

    def export(self, model: Any, tokenizer: Any) -> Path:
        """The model as a Hugging Face directory (weights, config, generation config, tokenizer).

        With LoRA/QLoRA: the merged full-precision model, and the adapter itself in ``export/adapter/``.
        """
        tmp = self.path / ".export.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if adapters.is_adapted(model):
            adapters.export(model, tokenizer, tmp)
        else:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        shutil.rmtree(self.export_dir, ignore_errors=True)
        tmp.rename(self.export_dir)
        return self.export_dir

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        data = {**metrics, "versions": versions(), "git_commit": git_commit(self.cfg.paths.root_dir)}
        write_json(self.metrics_file, data)
