"""Serving: `python serve.py model_dir=...` (conf/serve.yaml; schema in sumlab.config.serve).

Modules: runner (the run: check, prepare, LitServe until SIGTERM), engine (predict.py's prompts and CTranslate2
engine, one per worker), api (`POST /v1/summarize`: checks, dynamic batching grouped by settings), page (the
Gradio page: Summarize, Explore). Importing this package stays light; ``run`` imports the rest when called.
"""

from __future__ import annotations

from omegaconf import DictConfig


def run(cfg: DictConfig) -> None:
    """Serve `cfg.model_dir` (and/or the Explore page) until stopped; see sumlab.serve.runner.run."""
    from sumlab.serve.runner import run as _run

    _run(cfg)
