"""predict.py's engines against the loops users write: samples per second, beams 4 and greedy, fp32 and int8.

Rows, on the same model, inputs, generation settings and CPU threads (load and conversion excluded):
  (1)  naive HF loop: inputs in file order, batch 8, each batch padded to its longest, ``model.generate``
  (1b) the same loop at predict.py's batch size (16): what sorting and the engine add beyond batch size
  (2)  sumlab ``predict.py backend=hf`` (length buckets, beam-cache speed-up, shards, merge)
  (3)  sumlab ``predict.py backend=ctranslate2`` (what ``auto`` picks here)
  (4)  plain CTranslate2 as its documentation shows: ``translate_batch`` over all inputs with ``max_batch_size``
Conversion time is measured separately, into a fresh directory. Every row counts its outputs that
differ from (2) (fp32 CTranslate2 should differ in none).

Timing: every row first runs once untimed on its first ``--warmup`` inputs (thread pools, allocator,
kernel caches), then ``--repeats`` times (default 3) on all inputs; the row order rotates on each repeat,
so no row always runs first and a slow spell of the machine hits every row alike. Each row reports the
median samples/s with its min-max range; ratios are ratios of medians, with the range of the per-repeat
ratios beside them, and the goal lines below use them.

Sections (``--sections seq2seq,llm``, default both): ``seq2seq`` on the offline default T5 (rows as above);
``llm`` on tiny_llama with its chat-template prompts, where (4) is CTranslate2's ``Generator.generate_batch``
(the prompts' tokens in, ``include_prompt_in_result=False``, stopping at the end-of-turn token).

    .venv/bin/python benchmarks/bench_predict.py                       # both sections, 1,000 synthetic test dialogues
    .venv/bin/python benchmarks/bench_predict.py --model-dir outputs/train/<dialogsum run>   # DialogSum test
    .venv/bin/python benchmarks/bench_predict.py --sections llm [--llm-model-dir <causal run>]

Without --model-dir (--llm-model-dir) it reuses a completed run of ``python train.py`` (``python train.py
model=tiny_llama trainer.max_epochs=1 test=false``: one epoch, so its answers end at the end-of-turn token
rather than run to the length limit) under outputs/train (same config fingerprint), or trains one. The
llm section runs first and prints ``llm <mode> fp32: ctranslate2 / hf = <(3)/(2)>x ...``; with the seq2seq
section the last two lines read ``predict speedup vs baseline: <(3)/(1)>x (...)`` and ``predict speed vs raw
ctranslate2: <(3)/(4)>x (...); <machine>`` (seq2seq, beams 4, fp32).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from figures import machine, median_range, ratio  # this directory is on sys.path when a script here runs

REPO = Path(__file__).resolve().parents[1]
DIALOGSUM_TEST = REPO.parent / "shared" / "data" / "dialogsum" / "test.jsonl"
SUMLAB_BATCH = 16  # predict.py's default batch_size; the raw CTranslate2 loop gets it as max_batch_size
# Each section's default model: the train.py overrides it is trained (or found) with.
SECTIONS = {"seq2seq": [], "llm": ["model=tiny_llama", "trainer.max_epochs=1", "test=false"]}


def compose(overrides: list[str], config_name: str = "predict") -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import sumlab

    sumlab.setup()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=True)


def default_model(overrides: list[str]) -> Path:
    """A completed run of ``python train.py <overrides>`` under outputs/train, trained here if there is none."""
    from sumlab.train.rundir import fingerprint

    cfg = compose(overrides, config_name="train")
    wanted, root = fingerprint(cfg), Path(cfg.paths.output_dir) / cfg.task_name
    found = []
    for info_file in root.glob("*/run.json"):
        try:
            info = json.loads(info_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if (
            info.get("status") == "completed"
            and info.get("fingerprint") == wanted
            and (info_file.parent / "export").is_dir()
        ):
            found.append(info_file.parent)
    if found:
        return max(found, key=lambda p: p.stat().st_mtime)
    command = " ".join(["python train.py", *overrides])
    print(f"no completed run of `{command}` under {root}: training one", flush=True)
    subprocess.run([sys.executable, "train.py", *overrides], cwd=REPO, check=True)
    return default_model(overrides)


def naive_hf(cfg: Any, examples: list[dict], batch_size: int = 8) -> tuple[dict[str, str], float]:
    """(1) File order, fixed batch size, padded to the longest: what a hand-written loop does."""
    from sumlab.family import generate_texts, make_family
    from sumlab.generation.config import build_generation_config
    from sumlab.models.loading import load

    loaded = load(str(cfg.model_dir), cfg.model, cfg.paths.cache_dir)
    family = make_family(loaded.family, loaded.tokenizer, loaded.prefix, loaded.separator, chat=loaded.chat)
    gen = build_generation_config(cfg.generation, loaded.model)
    limits = (cfg.data.max_source_length, cfg.data.max_target_length)
    feats = [family.features(e["text"], None, *limits, fields=e.get("fields")) for e in examples]
    out: dict[str, str] = {}
    started = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(examples), batch_size):
            batch = family.collate([{**f, "idx": 0} for f in feats[i : i + batch_size]])
            texts, _ = generate_texts(family, loaded.model, batch, gen)
            out.update(zip((e["id"] for e in examples[i : i + batch_size]), texts, strict=True))
    return out, time.perf_counter() - started


def sumlab_predict(overrides: list[str], out_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """(2)/(3) predict.py itself, in this process."""
    from sumlab.predict.runner import run
    from sumlab.predict.writer import read_predictions

    cfg = compose([*overrides, f"batch_size={SUMLAB_BATCH}", f"output.dir={out_dir}", f"paths.run_dir={out_dir}",
                   "output.overwrite=true", "trainer.enable_progress_bar=false"])  # fmt: skip
    metrics = run(cfg)
    return {r["id"]: r["prediction"] for r in read_predictions(out_dir)}, metrics


def raw_ctranslate2(
    cfg: Any, examples: list[dict], model_path: Path, compute_type: str, threads: int
) -> tuple[dict[str, str], float]:
    """(4) The CTranslate2 documentation's loop: tokens in, translate_batch(max_batch_size=...), tokens out."""
    import ctranslate2
    from transformers import AutoTokenizer

    from sumlab.generation.config import build_generation_config
    from sumlab.generation.engines import ct2_options
    from sumlab.models.loading import load

    loaded = load(str(cfg.model_dir), cfg.model, cfg.paths.cache_dir)
    options, forced_bos = ct2_options(build_generation_config(cfg.generation, loaded.model), loaded.family)
    if loaded.family == "causal":
        return raw_generator(cfg, loaded, examples, options, ctranslate2.Generator(str(model_path), device="cpu",
                             compute_type=compute_type, intra_threads=threads))  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(str(loaded.home))
    translator = ctranslate2.Translator(str(model_path), device="cpu", compute_type=compute_type, intra_threads=threads)
    limit = cfg.data.max_source_length
    # Tokenizing is outside the timed part, as it is in rows (1)-(3).
    source = [
        tokenizer.convert_ids_to_tokens(tokenizer.encode(loaded.prefix + e["text"], truncation=True, max_length=limit))
        for e in examples
    ]
    prefix = [tokenizer.convert_ids_to_tokens([forced_bos])] * len(source) if forced_bos is not None else None
    started = time.perf_counter()
    results = translator.translate_batch(source, target_prefix=prefix, max_batch_size=SUMLAB_BATCH, **options)
    texts = [
        tokenizer.decode(tokenizer.convert_tokens_to_ids(r.hypotheses[0]), skip_special_tokens=True).strip()
        for r in results
    ]
    return dict(zip((e["id"] for e in examples), texts, strict=True)), time.perf_counter() - started


def raw_generator(cfg: Any, loaded: Any, examples: list[dict], options: dict[str, Any],
                  generator: Any) -> tuple[dict[str, str], float]:  # fmt: skip
    """(4) for decoder LLMs: the chat prompts' tokens in, one generate_batch(max_batch_size=...), answers out."""
    from sumlab.family import make_family

    family = make_family("causal", loaded.tokenizer, loaded.prefix, loaded.separator, chat=loaded.chat)
    tokenizer = loaded.tokenizer
    # The prompt a user builds with tokenizer.apply_chat_template, cut to fit as predict.py does; outside the timing.
    limit = cfg.data.max_source_length
    prompts = [tokenizer.convert_ids_to_tokens(family.prompt_ids(e["text"], limit, e.get("fields"))) for e in examples]
    started = time.perf_counter()
    results = generator.generate_batch(prompts, max_batch_size=SUMLAB_BATCH, **options)
    texts = [tokenizer.decode(r.sequences_ids[0], skip_special_tokens=True).strip() for r in results]
    return dict(zip((e["id"] for e in examples), texts, strict=True)), time.perf_counter() - started


Row = Callable[[int], tuple[dict, float]]  # run(n): (outputs by id, samples/s) over the first n examples


def row_runners(cfg: Any, overrides: list[str], examples: list[dict], compute_types: list[str],
                converted: dict[str, Path], raw_loop: str, threads: int, tmp: Path) -> dict[str, Row]:  # fmt: skip
    """Row name -> run(n): (outputs by id, samples/s) over the first n examples (all of them, or the warm-up's)."""

    def naive(batch_size: int) -> Row:
        def go(n: int) -> tuple[dict, float]:
            out, seconds = naive_hf(cfg, examples[:n], batch_size)
            return out, n / seconds

        return go

    def ours(extra: list[str], name: str) -> Row:
        def go(n: int) -> tuple[dict, float]:
            args = [o for o in overrides if not o.startswith("data.max_predict_samples=")]
            out, metrics = sumlab_predict([*args, *extra, f"data.max_predict_samples={n}"], tmp / f"{name}-{n}")
            return out, metrics["samples_per_second"]

        return go

    def raw(ct: str) -> Row:
        def go(n: int) -> tuple[dict, float]:
            out, seconds = raw_ctranslate2(cfg, examples[:n], converted[ct], ct, threads)
            return out, n / seconds

        return go

    rows = {
        "(1) naive HF loop, batch 8": naive(8),
        f"(1b) naive HF loop, batch {SUMLAB_BATCH} (predict.py's)": naive(SUMLAB_BATCH),
        "(2) sumlab backend=hf": ours(["backend=hf"], "hf"),
    }
    for ct in compute_types:
        rows[f"(3) sumlab backend=ctranslate2 {ct}"] = ours(["backend=ctranslate2", f"compute_type={ct}"], ct)
        rows[f"(4) raw CTranslate2 {raw_loop} {ct}"] = raw(ct)
    return rows


def time_rows(rows: dict[str, Row], n: int, warmup: int,
              repeats: int) -> tuple[dict[str, list[float]], dict[str, dict]]:  # fmt: skip
    """One untimed warm-up per row (its first `warmup` inputs), then `repeats` timed runs, the row order rotating."""
    names = list(rows)
    for name in names:
        rows[name](min(warmup, n))
    speeds: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, dict] = {}
    for repeat in range(repeats):  # a slow spell of the machine hits every row alike, and no row always goes first
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            outputs[name], sps = rows[name](n)
            speeds[name].append(sps)
    return speeds, outputs


def bench_model(args: argparse.Namespace, model_dir: Path, common: list[str], data: Any) -> dict[str, dict[str, Any]]:
    """Rows per mode on one model; per mode: fp32 speeds of (1), (2), (3), (4), fp32 CTranslate2 outputs differing."""
    from sumlab.data.sources import load_split
    from sumlab.generation import engines as backends
    from sumlab.models.loading import load

    base_cfg = compose(common)
    examples = load_split(
        base_cfg.data,
        "test",
        require_summary=False,
        seed=base_cfg.seed,
        limit_key="max_predict_samples",
        keep_columns=True,
    )  # fields: a chat prompt's other columns
    threads = backends.cpu_threads()  # what predict.py gives CTranslate2: torch's pool size
    print(f"{len(examples)} examples ({data}); model {model_dir}; torch {torch.__version__} and CTranslate2 "
          f"{__import__('ctranslate2').__version__} with {threads} threads; {machine()}", flush=True)  # fmt: skip

    compute_types = ["float32"] + ([] if args.no_int8 else ["int8"])
    converted: dict[str, Path] = {}
    summary: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for ct in compute_types:
            # A fresh load per conversion: CTranslate2's Llama/Qwen/Gemma converters delete the layers they
            # have converted from the model they are given (to save memory), so a model converts only once.
            loaded = load(str(model_dir), base_cfg.model, base_cfg.paths.cache_dir)
            raw_loop = "generate_batch" if loaded.family == "causal" else "translate_batch"
            converted[ct] = Path(tmp) / f"ct2-{ct}"
            seconds = backends.convert(loaded.model, loaded.tokenizer, converted[ct], ct)
            print(f"conversion to CTranslate2 {ct}: {seconds:.2f} s (once per model; cached beside it)", flush=True)
            del loaded
        for mode in args.modes.split(","):
            overrides = [*common, f"generation={mode}"]
            cfg, n = compose(overrides), len(examples)
            rows = row_runners(cfg, overrides, examples, compute_types, converted, raw_loop, threads, Path(tmp) / mode)
            speeds, outputs = time_rows(rows, n, args.warmup, args.repeats)
            names = list(rows)
            median = {name: statistics.median(v) for name, v in speeds.items()}
            hf = outputs[names[2]]
            differing = {name: sum(outputs[name][e["id"]] != hf[e["id"]] for e in examples) for name in names}
            fp32 = {"naive": speeds[names[0]], "naive_batch": speeds[names[1]], "hf": speeds[names[2]],
                    "ours": speeds[names[3]], "raw": speeds[names[4]]}  # fmt: skip
            summary[mode] = {**fp32, "differing": differing[names[3]], "n": n}
            print(f"\n{mode}, {n} examples; samples/s: median (min-max) of {args.repeats} runs after 1 warm-up "
                  f"each, row order rotated; x (1) on medians; outputs differing from (2) sumlab hf fp32:")  # fmt: skip
            for name in names:
                print(
                    f"  {name:48s} {median_range(speeds[name]):>26s}  x{median[name] / median[names[0]]:6.2f}"
                    f" vs (1)  differing {differing[name]}/{n}",
                    flush=True,
                )
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default="seq2seq,llm", help="comma-separated: seq2seq (default T5), llm (tiny_llama)")
    ap.add_argument("--model-dir", default=None, help="seq2seq: a DialogSum-trained run (default: the offline default)")
    ap.add_argument("--llm-model-dir", default=None, help="llm: a DialogSum-trained causal run (default: tiny_llama, "
                    "trained or reused on the synthetic data)")  # fmt: skip
    ap.add_argument("--data", default=None, help="JSONL/CSV with dialogue, summary, id, or `synthetic` (default: "
                    "DialogSum test with a model dir, else --synthetic test dialogues)")  # fmt: skip
    ap.add_argument("--limit", type=int, default=None, help="first N examples only")
    ap.add_argument("--synthetic", type=int, default=1000, help="synthetic test dialogues for the default models")
    ap.add_argument("--modes", default="beam4,greedy")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 rows")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per row (order rotating); medians, ranges")
    ap.add_argument("--warmup", type=int, default=64, help="inputs of each row's one untimed warm-up run")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for every row (default: torch's, all cores)")
    args = ap.parse_args()
    sections = args.sections.split(",")
    if not sections or set(sections) - set(SECTIONS):
        print(f"error: --sections={args.sections} is unknown: use seq2seq, llm or seq2seq,llm", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)

    results: dict[str, dict[str, dict[str, float]]] = {}
    for section in sorted(sections, key=lambda name: name != "llm"):  # llm first: seq2seq's ratios stay the last lines
        given = args.llm_model_dir if section == "llm" else args.model_dir
        model_dir = Path(given) if given else default_model(SECTIONS[section])
        if args.data != "synthetic" and (given or args.data):
            data = Path(args.data or DIALOGSUM_TEST)
            if not data.is_file():
                print(f"error: benchmark data not found: {data} (pass --data)", file=sys.stderr)
                return 2
            common = [f"model_dir={model_dir}", "data=files", f"data.test_file={data.resolve()}"]
        else:
            data = f"{args.synthetic} synthetic test dialogues"
            common = [f"model_dir={model_dir}", f"data.synthetic_sizes.test={args.synthetic}"]
        if args.limit:
            common.append(f"data.max_predict_samples={args.limit}")
        print(f"\n## {section}", flush=True)
        results[section] = bench_model(args, model_dir, common, data)

    for mode, r in results.get("llm", {}).items():
        print(f"llm {mode} fp32: ctranslate2 / hf = {ratio(r['ours'], r['hf'])}; (3)/(1) = "
              f"{ratio(r['ours'], r['naive'])}; (3)/(4) = {ratio(r['ours'], r['raw'])}; ctranslate2 outputs "
              f"differing from hf: {r['differing']}/{r['n']}")  # fmt: skip
    if "seq2seq" in results:
        ratios = results["seq2seq"]
        for mode, r in ratios.items():
            print(f"{mode} fp32: (3)/(1) = {ratio(r['ours'], r['naive'])}, (3)/(1b) = "
                  f"{ratio(r['ours'], r['naive_batch'])}, (3)/(4) = {ratio(r['ours'], r['raw'])}")  # fmt: skip
        r = ratios["beam4" if "beam4" in ratios else next(iter(ratios))]
        print(f"predict speedup vs baseline: {ratio(r['ours'], r['naive'])}")
        print(f"predict speed vs raw ctranslate2: {ratio(r['ours'], r['raw'])}; {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
