"""MBR decoding and ensembles in predict.py: each model's candidates in turn, then one selection over all of them.

With decoding.candidates > 1, a list of model_dir, or decoding.select_only, the runner (runner.run_candidates)
generates model by model (with decoding.source=both, a model's n-best, then its samples): stage k writes
``models/{k}/shards/rank{R}.jsonl`` through the usual shard machinery (its own fingerprint, resumable on its own,
every id once over the ranks), one line per input::

    {"id", "texts": [...], "scores": [...], "gen_len": [...]}

Only one model is in memory at a time. Then rank 0 selects, one input at a time: it indexes where each input's
line sits in each model's shards, pools the lines, runs :class:`sumlab.generation.selection.Selector` and writes
candidates.jsonl (streamed to a temporary name, renamed at the end), predictions.jsonl (.csv) and metrics.json.
``decoding.select_only`` reads an earlier output's candidates.jsonl instead of shards.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from sumlab.config.predict import generated_sources, listed
from sumlab.core.errors import SumlabError
from sumlab.core.io import atomic_file, stable_hash
from sumlab.generation.config import candidate_settings
from sumlab.generation.selection import CANDIDATES, Pooled, Selector, candidate_lines, read_candidates
from sumlab.predict import writer
from sumlab.predict.module import PredictModule

MODELS = "models"  # models/{k}/shards: stage k's candidate shards (a model, or one source of a model's)


def wanted(cfg: DictConfig) -> bool:
    """Whether this run selects among candidates (else each input gets the generation group's one output)."""
    several = len(listed(cfg.model_dir)) > 1
    return candidate_settings(cfg.decoding) is not None or several or bool(cfg.decoding.select_only)


def stage_dir(out: Path, k: int) -> Path:
    return out / MODELS / str(k)


def stage_configs(cfg: DictConfig, out: Path) -> list[tuple[str, DictConfig]]:
    """(label, predict config) per model_dir entry, and per source with decoding.source=both (the n-best first,
    then the samples, so a model's first candidate is still its first beam): that model and source, writing its
    shards under models/{k}/ (never overwriting there: :func:`check_output` cleared everything before the first
    stage, on rank 0 only)."""
    stages = []
    for model_dir in listed(cfg.model_dir):
        for source in generated_sources(cfg.decoding.source):
            stage = cfg.copy()
            with open_dict(stage):
                stage.model_dir = model_dir
                stage.decoding.source = source
                stage.output.dir = str(stage_dir(out, len(stages)))
                stage.output.overwrite = False
            stages.append((model_dir, stage))
    return stages


def check_output(out: Path, overwrite: bool, is_zero: bool) -> None:
    """Refuse to replace a finished output unless output.overwrite; with it, rank 0 clears the outputs and every
    model's shards before any rank reads them (the other ranks start at the first model's Trainer)."""
    if (out / writer.PREDICTIONS).exists() and not overwrite:
        raise SumlabError(
            f"{out / writer.PREDICTIONS} exists and is complete: pass output.overwrite=true to predict again, "
            "or choose another output.dir"
        )
    if overwrite and is_zero:
        for name in (*writer.FINAL_FILES, CANDIDATES):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / MODELS, ignore_errors=True)


def labels(cfg: DictConfig) -> list[str]:
    """How candidates.jsonl names each model: its model_dir entry as given."""
    return listed(cfg.model_dir)


def model_weights(cfg: DictConfig) -> Optional[dict[str, float]]:
    if cfg.decoding.weights is None:
        return None
    return dict(zip(labels(cfg), (float(w) for w in cfg.decoding.weights), strict=True))


class CandidateModule(PredictModule):
    """PredictModule that keeps every candidate (the n-best, or the samples) of each input for the shard.

    With backend hf, sampling is seeded per batch from `seed` and the batch's first id: batches are the same on any
    number of ranks (whole batches dealt round robin), so the samples are too, and a resumed run draws what the
    first would have. CTranslate2 cannot be reseeded per call (each engine thread keeps one random stream, seeded
    when the engine is built): its samples repeat for the same command on the same ranks, not across rank counts
    or a resume (they follow the same distribution).
    """

    def __init__(self, loaded: Any, family: Any, generation_config: Any, fast_cache: bool, choice: Any,
                 cache_dir: str, seed: Optional[int]) -> None:  # fmt: skip
        super().__init__(loaded, family, generation_config, fast_cache, choice, cache_dir, seed)
        self.sample_seed = seed

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        assert self.engine is not None
        if self.generation_config.do_sample and self.sample_seed is not None and self.choice.backend == "hf":
            self.engine.reseed(int(stable_hash([self.sample_seed, batch["ids"][0]]), 16) % (1 << 31))
        pools = self.engine.generate_candidates(batch)
        self.count_batch(batch, sum(c.gen_len for pool in pools for c in pool))
        records = [
            {"id": i, "texts": [c.text for c in pool], "scores": [c.score for c in pool],
             "gen_len": [c.gen_len for c in pool]}
            for i, pool in zip(batch["ids"], pools, strict=True)
        ]  # fmt: skip
        return {"records": records}


@dataclass
class StageInfo:
    """What metrics.json says about one model's generation (the model itself is not kept)."""

    label: str
    out: Path
    info: dict[str, Any]


def stage_info(label: str, stage: DictConfig, job: Any, module: PredictModule, devices: int) -> StageInfo:
    stats, seconds = module.stats, module.seconds
    return StageInfo(label, Path(stage.output.dir), {
        "model_dir": label, "source": stage.decoding.source, "model": job.loaded.source, "family": job.loaded.family,
        "backend": job.choice.backend,
        "backend_reason": job.choice.reason, "compute_type": job.choice.compute_type, "precision": job.precision,
        "devices": devices, "generated_now": stats["examples"], "resumed": len(job.rows) - stats["examples"],
        "generation_seconds": round(seconds, 3),
        "samples_per_second": round(stats["examples"] / seconds, 3) if seconds else None,
        "generated_tokens_per_second": round(stats["generated_tokens"] / seconds, 1) if seconds else None,
        "conversion_seconds": None if module.conversion_seconds is None else round(module.conversion_seconds, 3),
    })  # fmt: skip


# --- selection (rank 0) ------------------------------------------------------------------------------------
class ShardIndex:
    """Where each input's line sits in one model's shards: (file, byte offset) per input position."""

    def __init__(self, out: Path, positions: dict[str, int]) -> None:
        self.files = sorted(writer.shard_dir(out).glob("rank*.jsonl"))
        self.file_of = np.full(len(positions), -1, np.int32)
        self.offset_of = np.zeros(len(positions), np.int64)
        for f, path in enumerate(self.files):
            offset = 0
            with open(path, "rb") as fh:
                for line in fh:
                    if line.endswith(b"\n"):  # a line a kill cut short has none and is not a record
                        self._add(line, f, offset, positions)
                    offset += len(line)
        missing = np.flatnonzero(self.file_of < 0)
        if len(missing):
            first = next(i for i, p in positions.items() if p == missing[0])
            raise SumlabError(f"cannot select: {len(missing)} inputs have no candidates in {out} (first: {first!r})")

    def _add(self, line: bytes, f: int, offset: int, positions: dict[str, int]) -> None:
        try:
            position = positions.get(str(json.loads(line)["id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            return
        if position is not None and self.file_of[position] < 0:  # the first occurrence wins, as in writer
            self.file_of[position], self.offset_of[position] = f, offset


def shard_pools(stages: Sequence[StageInfo], ids: Sequence[str]) -> Iterator[list[Pooled]]:
    """Each input's candidates from every model's shards, in input order and model order."""
    positions = {example_id: i for i, example_id in enumerate(ids)}
    indexes = [ShardIndex(s.out, positions) for s in stages]
    with ExitStack() as stack:
        handles = [[stack.enter_context(open(p, "rb")) for p in index.files] for index in indexes]
        for i in range(len(ids)):
            pool: list[Pooled] = []
            for stage, index, files in zip(stages, indexes, handles, strict=True):
                fh = files[index.file_of[i]]
                fh.seek(int(index.offset_of[i]))
                record = json.loads(fh.readline())
                pool += [Pooled(stage.label, j, t, s, g) for j, (t, s, g) in
                         enumerate(zip(record["texts"], record["scores"], record["gen_len"], strict=True))]  # fmt: skip
            yield pool


def _group(path: Path, groups: Iterator[tuple[str, list[Pooled]]], example_id: Optional[str]) -> list[Pooled]:
    """The next input's candidates of one file, which must be those of `example_id` (None: the file must end)."""
    found_id, pool = next(groups, (None, []))
    if found_id != example_id:
        found = "the end of the file" if found_id is None else f"the candidates of id {found_id!r}"
        wanted = "the end of the file" if example_id is None else f"the candidates of id {example_id!r}"
        raise SumlabError(f"{path} does not match the data: expected {wanted}, found {found}; select from outputs "
                          "of the same data, split and limits")  # fmt: skip
    return pool


def file_pools(paths: Sequence[Path], ids: Sequence[str], wanted_models: Sequence[str]) -> Iterator[list[Pooled]]:
    """Each input's candidates from earlier candidates.jsonl files, only those of `wanted_models` (in that order);
    every file must hold every input id, in input order, and each wanted model must be found in one of them."""
    groups = [read_candidates(p) for p in paths]
    for example_id in ids:
        pool = [c for path, g in zip(paths, groups, strict=True) for c in _group(path, g, example_id)]
        kept = [c for c in pool if c.model in wanted_models]
        absent = [m for m in wanted_models if all(c.model != m for c in kept)]
        if absent:
            have = sorted({c.model for c in pool})
            raise SumlabError(f"decoding.candidates_from: id {example_id!r} has no candidates from model {absent[0]!r} "
                              f"(found: {have}): name models as their `model` field does")  # fmt: skip
        yield sorted(kept, key=lambda c: wanted_models.index(c.model))  # stable: beam order kept within a model
    for path, g in zip(paths, groups, strict=True):
        _group(path, g, None)


def select_all(out: Path, examples: Sequence[dict[str, Any]], pools: Iterator[list[Pooled]],
               selector: Selector) -> list[dict[str, Any]]:  # fmt: skip
    """Select each input's prediction; write candidates.jsonl (complete or not at all); the merged rows."""
    merged = []
    with atomic_file(out / CANDIDATES) as f:
        for example, pool in zip(examples, pools, strict=True):
            picked, expected = selector(pool)
            f.write(candidate_lines(example["id"], pool, expected, picked))
            row = {"id": example["id"], "prediction": pool[picked].text}
            if example.get("summary") is not None:
                row["reference"] = example["summary"]
            row["gen_len"] = pool[picked].gen_len
            merged.append(row)
    return merged


def candidates_files(cfg: DictConfig, out: Path) -> list[Path]:
    """decoding.candidates_from as candidates.jsonl paths, none of them this run's own output."""
    paths = []
    for source in map(Path, listed(cfg.decoding.candidates_from)):
        path = source.expanduser() / CANDIDATES if source.expanduser().is_dir() else source.expanduser()
        if path.parent.resolve() == out.resolve():
            raise SumlabError(f"decoding.candidates_from names this run's own output directory ({source}): "
                              "write the new selection elsewhere (output.dir=...)")  # fmt: skip
        paths.append(path)
    return paths


def decoding_settings(cfg: DictConfig) -> dict[str, Any]:
    """The decoding group as it ran (num_beams: the beam width used)."""
    return {**OmegaConf.to_container(cfg.decoding, resolve=True), **(candidate_settings(cfg.decoding) or {})}
