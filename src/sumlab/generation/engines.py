"""Generation engines behind predict.py: CTranslate2 (converted once, cached) where it can, else transformers.

Both engines take the token ids the family built (T5 prefix, added tag tokens, causal prompt + separator)
and return (texts, generated lengths), so the rest of prediction (bucketing, shards, merge, resume,
ROUGE) does not know which one ran. Seq2seq models go through ``ctranslate2.Translator.translate_batch``,
decoder-only ones through ``ctranslate2.Generator.generate_batch(include_prompt_in_result=False)``.

The CTranslate2 options are derived from the *transformers* GenerationConfig the hf backend would use,
so both read the same settings. Where the two differ in meaning (checked against tiny T5/BART/GPT-2 in
tests/test_predict_backends.py, fp32 outputs equal), the mapping below says how it is bridged:

- max_new_tokens: HF counts the EOS it emits; CTranslate2's max_decoding_length / max_length too.
- forced_eos_token_id (BART's config sets it): HF replaces the last allowed token by EOS, so a summary
  cut by the limit has max_new_tokens - 1 real tokens: CTranslate2 gets max_decoding_length - 1.
- forced_bos_token_id (bart-large-cnn's): HF forces it as the first new token: CTranslate2 gets it as a
  target prefix (which counts toward the decoding length, as the forced token does in HF).
- decoder_start_token_id: the converter writes the model's own into the CTranslate2 config.
- eos_token_id (a list for chat models, every end-of-turn token): CTranslate2's end_token, the same list.
- length_penalty: both divide a finished beam's log-probability by (generated length) ** length_penalty.
- early_stopping=true: both stop when num_beams hypotheses are finished (CTranslate2 patience=1).
  HF's false ("stop when no running beam can still win, by a heuristic") and "never" have no CTranslate2
  equivalent: not supported.
- min_new_tokens = min_decoding_length / min_length (EOS masked before it): equal in greedy search; in beam
  search HF masks EOS after log_softmax and CTranslate2 before it (renormalising the rest), which changed
  1 of 16 tiny GPT-2 outputs: not supported with beams.
- beam search of decoder-only models: with prompts of unequal lengths in one generate_batch call, a
  prompt's result can depend on the longer prompts beside it (seen on a tiny Qwen3 with its real vocabulary:
  a hypothesis one token longer won), while prompts of one length each get their result alone, equal to
  transformers'. So beams go to CTranslate2 one prompt length at a time (greedy search is unaffected).
- sampling: top_k, top_p and temperature map one to one (CTranslate2 seeds with set_random_seed);
  samples are not the same draws as torch's, so sampled text differs from hf's while following the
  same distribution. Beam sampling (do_sample with num_beams > 1) is not supported.
- num_return_sequences (predict.py's decoding.candidates) = num_hypotheses: the n-best of a beam search
  (beam width >= N) in the same order as HF's (tests/test_mbr.py), or N samples (CTranslate2 returns them
  best score first); CTranslate2's scores are kept, HF's are not (see HFEngine.generate_candidates).
  epsilon_cutoff (epsilon sampling) has no CTranslate2 equivalent: not supported.
- no_repeat_ngram_size and repetition_penalty: equal in greedy search of seq2seq models. In beam search
  HF applies them to log-probabilities (after log_softmax), CTranslate2 to logits, and outputs differ
  (measured on tiny T5: 3 and 7 of 16); for a causal model HF also counts the prompt's tokens.
  Not supported there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from sumlab.core.errors import SumlabError
from sumlab.core.io import build_dir_once, digest, path_name
from sumlab.data.cache import source_column
from sumlab.family import Causal, Seq2Seq, decode, generate_texts
from sumlab.generation.beam_cache import fast_beam_cache

BACKENDS = ("auto", "ctranslate2", "hf")
COMPUTE_TYPES = ("auto", "float32", "float16", "bfloat16", "int8", "int8_float32", "int8_float16", "int8_bfloat16")
CACHE_PREFIX = "ctranslate2"


@dataclass
class Candidate:
    """One of several outputs for an input (decoding.candidates)."""

    text: str
    gen_len: int  # generated tokens, special tokens not counted
    score: Optional[float]  # the engine's own score (CTranslate2's); None where it gives none cheaply (hf)


@dataclass
class Choice:
    backend: str  # hf or ctranslate2
    compute_type: Optional[str]  # CTranslate2's, None for hf
    reason: str  # why this backend, for metrics.json and the summary line


def ct2_unsupported(gen: Any, family: str, config: Any, adapter: bool = False) -> Optional[str]:
    """The first setting CTranslate2 cannot honour exactly for this model, as `key=value`, else None.

    ``config``: the model's transformers config (its class decides what converts: no weights needed);
    ``adapter``: the model is a peft adapter on a base, not a full model.
    """
    try:
        from ctranslate2.converters.transformers import _MODEL_LOADERS
    except ImportError:
        return "the ctranslate2 package (pip install ctranslate2)"
    # The converter's own registry (internal, but the one list that decides what converts).
    if type(config).__name__ not in _MODEL_LOADERS:
        return f"model type {getattr(config, 'model_type', type(config).__name__)}"
    if adapter:
        return "a peft adapter model (export a merged model)"
    return ct2_unsupported_setting(gen, family)


def ct2_unsupported_setting(gen: Any, family: str) -> Optional[str]:
    """The first generation setting CTranslate2 cannot honour exactly (the module docstring says why), else None."""
    beams = gen.num_beams or 1  # transformers 5 leaves unset keys None
    if beams > 1 and gen.early_stopping is not True:
        return f"generation.early_stopping={gen.early_stopping}"
    if gen.do_sample and beams > 1:
        return "generation.do_sample=true with generation.num_beams>1 (beam sampling)"
    where = "for a causal model" if family == "causal" else "with beam search" if beams > 1 else None
    if where and gen.no_repeat_ngram_size:
        return f"generation.no_repeat_ngram_size={gen.no_repeat_ngram_size} {where}"
    if where and (gen.repetition_penalty or 1.0) != 1.0:
        return f"generation.repetition_penalty={gen.repetition_penalty} {where}"
    if beams > 1 and gen.min_new_tokens:
        return f"generation.min_new_tokens={gen.min_new_tokens} with beam search"
    if getattr(gen, "epsilon_cutoff", None):
        return f"decoding.epsilon={gen.epsilon_cutoff} (epsilon sampling)"
    return None


def resolve_compute_type(requested: str, device: str, safe_precisions: list[str]) -> str:
    """`auto`: float32 on CPU (outputs equal to hf), bfloat16 (else float16 where the model is safe in it) on a GPU."""
    if requested != "auto":
        return requested
    if device != "cuda":
        return "float32"
    import ctranslate2

    supported = ctranslate2.get_supported_compute_types("cuda")
    if "bfloat16" in supported:
        return "bfloat16"
    return "float16" if "float16" in supported and "16-mixed" in safe_precisions else "float32"


def choose(requested: str, compute_type: str, gen: Any, family: str, config: Any, adapter: bool, device: str,
           safe_precisions: list[str]) -> Choice:  # fmt: skip
    """Which engine runs: `auto` takes CTranslate2 where it honours everything, else hf and says why (from the
    model's config, before any weights are loaded)."""
    if requested == "hf":
        return Choice("hf", None, "backend=hf")
    missing = ct2_unsupported(gen, family, config, adapter)
    if missing is not None:
        if requested == "ctranslate2":
            raise SumlabError(f"backend=ctranslate2 cannot honour {missing}: pass backend=hf (or change the setting)")
        return Choice("hf", None, f"auto: CTranslate2 cannot honour {missing}")
    resolved = resolve_compute_type(compute_type, device, safe_precisions)
    return Choice("ctranslate2", resolved, f"{requested}: CTranslate2 supports this model and every generation setting")


# --- conversion cache --------------------------------------------------------------------------------
def conversion_target(loaded: Any, compute_type: str, cache_dir: str) -> Path:
    """Where a loaded model (models.loading.LoadedModel) is converted for `compute_type`: keyed by its weights, so
    predict.py and serve.py share one conversion."""
    weights = digest({k: loaded.identity.get(k) for k in ("weights", "config", "name", "revision")})
    label = path_name(loaded.source.split(": ", 1)[-1])
    return cache_location(loaded.home, label, compute_type, weights, cache_dir)


def cache_name(compute_type: str, weights: str) -> str:
    return f"{CACHE_PREFIX}-{compute_type}-{weights}"


def _writable(directory: Path) -> bool:
    if not directory.is_dir():
        return False
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
        return True
    except OSError:
        return False


def cache_location(model_home: Optional[Path], label: str, compute_type: str, weights: str, cache_dir: str) -> Path:
    """Beside the model it came from; paths.cache_dir when that directory is not writable (or a hub name)."""
    name = cache_name(compute_type, weights)
    if model_home is not None and _writable(model_home):
        return model_home / name
    return Path(cache_dir).expanduser() / CACHE_PREFIX / f"{label}-{name}"


def _is_complete(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


# Config keys the converter reads that transformers 5 no longer defines (hub config.json files still carry them):
# BART is post-norm; Pegasus is pre-norm, without a layer norm on its embeddings.
LEGACY_CONFIG_KEYS = {
    "bart": {"normalize_before": False},
    "pegasus": {"normalize_before": True, "normalize_embedding": False},
}


class _TokenNames:
    """The tokenizer as the converter reads it: a tiny GPT-2 tokenizer has no BOS/UNK names, which CTranslate2's
    config requires (GPT-2's own uses <|endoftext|> for all three)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)

    @property
    def bos_token(self) -> Any:
        return self._tokenizer.bos_token or self._tokenizer.eos_token

    @property
    def unk_token(self) -> Any:
        return self._tokenizer.unk_token or self._tokenizer.eos_token


def convert(model: Any, tokenizer: Any, target: Path, compute_type: str) -> float:
    """Convert the model into `target` once; seconds spent, 0 if it was cached.

    ``model``: the transformers model, or a function that loads it, called only when the conversion is missing
    (a rank that finds it cached never loads the weights). ``core.io.build_dir_once``: a file lock beside
    `target` (the other ranks of the machine wait), a temporary sibling renamed when complete, and the
    leftovers of a killed conversion removed by the next one. Concurrent conversions on machines that do not
    share the lock (another node on a shared disk) are harmless: the first rename wins.
    """
    from ctranslate2.converters import TransformersConverter

    started = time.perf_counter()

    def build(tmp: Path) -> None:
        loaded = model if isinstance(model, torch.nn.Module) else model()

        class _Loaded(TransformersConverter):
            # The converter loads the model itself with from_pretrained; ours may hold a .ckpt's weights, and
            # is already in memory: hand it over as is. It reads the config from a directory: the model's own.
            def load_model(self, model_class: Any, model_name_or_path: str, **kwargs: Any) -> Any:
                for key, value in LEGACY_CONFIG_KEYS.get(loaded.config.model_type, {}).items():
                    if not hasattr(loaded.config, key):
                        setattr(loaded.config, key, value)
                return loaded

            def load_tokenizer(self, tokenizer_class: Any, model_name_or_path: str, **kwargs: Any) -> Any:
                return _TokenNames(tokenizer)

        # A sibling of tmp named like it: a kill leaves nothing the next conversion does not remove.
        source = Path(tempfile.mkdtemp(dir=tmp.parent, prefix=f"{tmp.name}-source-"))
        try:
            loaded.config.save_pretrained(source)
            _Loaded(str(source)).convert(str(tmp), quantization=compute_type, force=True)
        except SumlabError:
            raise
        except Exception as ex:  # the converter raises many types for a model it cannot take
            raise SumlabError(
                f"CTranslate2 cannot convert this model ({type(ex).__name__}: {str(ex).splitlines()[0][:200]}): "
                "pass backend=hf"
            ) from None
        finally:
            shutil.rmtree(source, ignore_errors=True)

    if not build_dir_once(target, build, _is_complete):
        return 0.0
    return time.perf_counter() - started


# --- engines -------------------------------------------------------------------------------------------
class HFEngine:
    """transformers' generate on the Lightning-placed model (the tensors the family collates)."""

    name = "hf"

    def __init__(self, model: Any, family: Seq2Seq | Causal, generation_config: Any, fast_cache: bool) -> None:
        self.model, self.family, self.generation_config = model, family, generation_config
        self.fast_cache = fast_cache and family.name == "seq2seq" and generation_config.num_beams > 1

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.family.collate([{**f, "idx": 0} for f in rows])
        batch.pop("idx")
        return batch

    def generate(self, batch: dict[str, Any]) -> tuple[list[str], list[int]]:
        with fast_beam_cache(self.fast_cache):
            texts, lengths = generate_texts(self.family, self.model, batch, self.generation_config)
        return texts, lengths.tolist()

    def generate_candidates(self, batch: dict[str, Any]) -> list[list[Candidate]]:
        """generation_config.num_return_sequences candidates per input, in transformers' order (beams: best
        first). No score: transformers returns beam scores only with output_scores=True, which keeps every step's
        full distribution over the vocabulary for every row (gigabytes for an LLM)."""
        texts, lengths = self.generate(batch)
        n = self.generation_config.num_return_sequences or 1
        return [[Candidate(t, g, None) for t, g in zip(texts[i : i + n], lengths[i : i + n], strict=True)]
                for i in range(0, len(texts), n)]  # fmt: skip

    def reseed(self, seed: int) -> None:
        """Seed the next sampling call (CTranslate2 has no equivalent: each of its threads draws from one stream,
        seeded once when the engine is built)."""
        torch.manual_seed(seed)


def ct2_options(gen: Any, family: str) -> tuple[dict[str, Any], Optional[int]]:
    """translate_batch / generate_batch keyword arguments for a transformers GenerationConfig, and the
    forced first token (BART-large-CNN's forced_bos_token_id) if any; the module docstring says why."""
    max_new = int(gen.max_new_tokens)
    if gen.forced_eos_token_id is not None and max_new > 1:
        max_new -= 1  # HF turns the last allowed position into EOS
    opts: dict[str, Any] = {"beam_size": int(gen.num_beams or 1),
                            "no_repeat_ngram_size": int(gen.no_repeat_ngram_size or 0),
                            "repetition_penalty": float(gen.repetition_penalty or 1.0)}  # fmt: skip
    if opts["beam_size"] > 1:
        opts["length_penalty"] = float(gen.length_penalty)
    if gen.do_sample:  # top_k 0 means no top-k cut in both
        opts.update(sampling_topk=int(gen.top_k or 0), sampling_topp=float(gen.top_p or 1.0),
                    sampling_temperature=float(gen.temperature or 1.0))  # fmt: skip
    if (gen.num_return_sequences or 1) > 1:  # decoding.candidates: the n-best beams, or that many samples
        opts["num_hypotheses"] = int(gen.num_return_sequences)
    min_new = int(gen.min_new_tokens or 0)
    if family == "seq2seq":
        opts.update(max_decoding_length=max_new, min_decoding_length=min_new)
    else:
        opts.update(max_length=max_new, min_length=min_new, include_prompt_in_result=False)
        eos = gen.eos_token_id  # chat models stop at any end-of-turn token (Llama 3: <|eot_id|> and <|eom_id|>)
        if eos is not None:
            opts["end_token"] = [int(e) for e in (eos if isinstance(eos, list) else [eos])]
    return opts, gen.forced_bos_token_id


class CT2Engine:
    """One CTranslate2 Translator/Generator per rank, on the rank's device, fed the family's token ids."""

    name = "ctranslate2"

    def __init__(self, path: Path, family: Seq2Seq | Causal, generation_config: Any, compute_type: str,
                 device: torch.device, threads: int, seed: Optional[int]) -> None:  # fmt: skip
        import ctranslate2

        self.family, self.tokenizer = family, family.tokenizer
        self.options, forced_bos = ct2_options(generation_config, family.name)
        cls = ctranslate2.Translator if family.name == "seq2seq" else ctranslate2.Generator
        kind = "cuda" if device.type == "cuda" else "cpu"
        self.engine = cls(str(path), device=kind, device_index=device.index or 0, compute_type=compute_type,
                          intra_threads=threads if kind == "cpu" else 0)  # fmt: skip
        self.prefix = self.tokenizer.convert_ids_to_tokens([forced_bos]) if forced_bos is not None else None
        self.special = set(self.tokenizer.all_special_ids)
        if seed is not None:
            ctranslate2.set_random_seed(seed)

    @staticmethod
    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        key = source_column(rows[0])
        return {"rows": [r[key] for r in rows]}

    def _hypotheses(self, batch: dict[str, Any], **extra: Any) -> list[tuple[list[list[int]], list[float]]]:
        """Per input: the token ids of each hypothesis (num_hypotheses of them), and their scores if asked for."""
        tokens = [self.tokenizer.convert_ids_to_tokens(ids) for ids in batch["rows"]]
        if self.family.name == "seq2seq":
            prefix = [self.prefix] * len(tokens) if self.prefix else None
            results = self.engine.translate_batch(tokens, target_prefix=prefix, **self.options, **extra)
            return [([self.tokenizer.convert_tokens_to_ids(h) for h in r.hypotheses], r.scores) for r in results]
        return [(r.sequences_ids, r.scores) for r in self._generate_batch(tokens, **extra)]

    def _decode(self, sequences: list[list[int]]) -> tuple[list[str], list[int]]:
        lengths = [sum(1 for t in s if t not in self.special) for s in sequences]
        return decode(self.tokenizer, sequences), lengths

    def generate(self, batch: dict[str, Any]) -> tuple[list[str], list[int]]:
        return self._decode([hypotheses[0] for hypotheses, _ in self._hypotheses(batch)])

    def generate_candidates(self, batch: dict[str, Any]) -> list[list[Candidate]]:
        """num_hypotheses candidates per input, best first, each with CTranslate2's score (its log-probability,
        normalized by length ** length_penalty in beam search)."""
        results = self._hypotheses(batch, return_scores=True)
        texts, lengths = self._decode([h for hypotheses, _ in results for h in hypotheses])
        flat = iter(zip(texts, lengths, strict=True))
        return [[Candidate(*next(flat), float(score)) for score in scores] for _, scores in results]

    def _generate_batch(self, prompts: list[list[str]], **extra: Any) -> list[Any]:
        """Generator.generate_batch's results in input order; with beams, one call per prompt length (see the
        module docstring)."""
        groups: dict[int, list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(len(prompt) if self.options["beam_size"] > 1 else 0, []).append(i)
        results: list[Any] = [None] * len(prompts)
        for members in groups.values():
            batch = self.engine.generate_batch([prompts[i] for i in members], **self.options, **extra)
            for i, result in zip(members, batch, strict=True):
                results[i] = result
        return results


def cpu_threads() -> int:
    """CPU threads for this rank's engine: torch's own pool size, which Lightning's DDP launcher (or
    OMP_NUM_THREADS, or torchrun) sets to cores // processes on the machine: the same as backend=hf uses."""
    return max(1, torch.get_num_threads())
