"""Each method as predict.py runs ("steps"): what they read, where they write, their configs, and running them.

paraphrase and summarize are one step each over the training rows; back_translation is two, the second reading
the first's predictions.jsonl. A step's directory, ``<output.dir>/predict/<step>-<hash>``, is named by everything
that decides its outputs (model, prompts, decoding, input rows), so re-running the same command finds its
finished or partial generation (predict.py resumes the shards) and a changed setting never reuses an old one.

Ranks: every rank runs every step (predict.py's DDP); the first step that generates starts the process group
(Lightning relaunches this command for the other ranks, which then skip the finished steps as rank 0 did). A
barrier after each step keeps a rank from reading a step's output before rank 0 has merged it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from sumlab.augment import CONF_DIR
from sumlab.core.io import digest, plain
from sumlab.data.cache import DATA_KEYS
from sumlab.data.sources import source_of, split_paths
from sumlab.predict import run, writer

# The steps' data.summary_column: no file has it, so predict.py scores nothing (the filter scores every row
# against the text it replaces) and every step reads the same rows whatever the summaries hold.
NO_REFERENCE = "sumlab_augment_no_reference"
SHARED = ("seed", "batch_size", "sort_by_length", "fast_beam_cache", "backend", "compute_type")  # predict.py's keys
# data.* keys that choose the rows a step reads besides its files' contents (DATA_KEYS: how they become model
# input); where the files lie and batch sizes do not, so an output directory can be moved
ROW_KEYS = ("source", "dataset_name", "dataset_config_name", "revision", "train_split", "synthetic_sizes",
            "skip_empty", "max_predict_samples")  # fmt: skip


@dataclass(frozen=True)
class Step:
    """One predict.py run."""

    name: str  # paraphrase, summarize, back_translation-forward, back_translation-backward
    model_dir: str
    model: dict[str, Any]  # predict.py's model.* node, resolved
    generation: dict[str, Any]
    data: dict[str, Any]  # predict.py's data node: the training rows, or the previous step's predictions
    dir: Path


@dataclass(frozen=True)
class Method:
    name: str
    steps: tuple[Step, ...]
    column: str  # the data column the generated text replaces
    model: str  # the provenance column's value
    tag: str  # new ids are <id>#<tag>


def plan(cfg: DictConfig) -> list[Method]:
    """cfg.methods as steps, in order."""
    rows, identity = step_data(cfg), input_identity(cfg.data)
    methods = []
    for name in cfg.methods:
        node = cfg[name]
        if name == "back_translation":
            forward = make_step(cfg, f"{name}-forward", node.forward_model, node.forward, node.generation, rows,
                                identity)  # fmt: skip
            # the forward step's directory name stands for everything upstream
            backward = make_step(cfg, f"{name}-backward", node.backward_model, node.backward, node.generation,
                                 pivot_data(cfg, forward), [forward.dir.name])  # fmt: skip
            model = f"{node.forward_model} -> {node.backward_model}"
            methods.append(Method(name, (forward, backward), cfg.data.text_column, model, node.tag))
        else:
            step = make_step(cfg, name, node.model_dir, node.model, node.generation, rows, identity)
            column = cfg.data.summary_column if name == "summarize" else cfg.data.text_column
            methods.append(Method(name, (step,), column, str(node.model_dir), node.tag))
    return methods


def make_step(cfg: DictConfig, name: str, model_dir: str, model: DictConfig, generation: DictConfig,
              data: dict[str, Any], identity: list[str]) -> Step:  # fmt: skip
    """A step named by a hash of its model, prompts, decoding, rows (``identity``: the input files' contents)."""
    model, generation = plain(model), plain(generation)
    rows = {key: data.get(key) for key in (*ROW_KEYS, *DATA_KEYS)}
    engine = [cfg.backend, cfg.compute_type, cfg.trainer.precision, cfg.seed]
    key = digest(str(model_dir), model, generation, rows, identity, engine)
    return Step(name, str(model_dir), model, generation, data, Path(cfg.output.dir) / "predict" / f"{name}-{key}")


def step_data(cfg: DictConfig) -> dict[str, Any]:
    """predict.py's data node for the training rows: split train, no references, the text as it is."""
    data = plain(cfg.data)
    data.update(
        split="train",
        summary_column=NO_REFERENCE,
        reference_columns=None,
        source_template="{text}",
        max_predict_samples=data.get("max_train_samples"),
    )
    return data


def pivot_data(cfg: DictConfig, forward: Step) -> dict[str, Any]:
    """The backward step reads the forward step's predictions.jsonl (id, prediction), in the same order."""
    data = step_data(cfg)
    data.update(
        name=f"{cfg.data.name}-pivot",
        source="files",
        dir=None,
        dataset_name=None,
        train_file=str(forward.dir / writer.PREDICTIONS),
        text_column="prediction",
        id_column="id",
        unescape_newlines=False,
        collapse_whitespace=False,
        strip=False,
        skip_empty=False,
        max_predict_samples=None,
    )
    return data


def input_identity(data: DictConfig) -> list[str]:
    """The training files' contents (a file edited in place is new input); other sources are named by data.*."""
    if source_of(data, "train") != "files":
        return []
    found = []
    for path in split_paths(data, "train"):
        if path.is_file():
            with open(path, "rb") as f:
                found.append(hashlib.file_digest(f, "sha256").hexdigest())
    return found


def predict_config(cfg: DictConfig, step: Step) -> DictConfig:
    """predict.py's config for a step: conf/predict.yaml composed, with the step's model, data and decoding."""
    paths = {key: cfg.paths[key] for key in cfg.paths if key != "run_dir"}
    return OmegaConf.merge(
        _compose_predict(),
        {
            "model_dir": step.model_dir,
            "run_name": step.dir.name,
            **{key: cfg[key] for key in SHARED},
            "model": step.model,
            "data": step.data,
            "trainer": plain(cfg.trainer),
            "generation": step.generation,
            "paths": {**paths, "run_dir": str(step.dir)},
            "output": {"dir": str(step.dir), "overwrite": False},
        },
    )


def _compose_predict() -> DictConfig:
    """conf/predict.yaml as predict.py composes it: through the running Hydra app's search path (this command's
    conf/), else (a caller outside Hydra) from the project's conf/."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose("predict")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("predict")


def run_step(cfg: DictConfig, step: Step, is_zero: bool) -> Optional[dict[str, Any]]:
    """The step's predict.py run on every rank, unless finished earlier; its metrics.json on rank 0."""
    if cfg.output.overwrite and is_zero:
        shutil.rmtree(step.dir, ignore_errors=True)
    barrier()
    if not (step.dir / writer.PREDICTIONS).is_file():
        run(predict_config(cfg, step))
        barrier()  # rank 0 has merged the shards: the next step may read them
    if not is_zero:
        return None
    return json.loads((step.dir / writer.METRICS).read_text(encoding="utf-8"))


def barrier() -> None:
    """Every rank waits for the others, once a step has started the process group; nothing in one process."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()
