"""Schema of `python -m sumlab.augment` (conf/augment.yaml); the field comments document each key.

Each generation step is a predict.py run: its model settings are predict.py's ``model.*`` keys
(:class:`PredictModelConfig`) and its decoding a ``generation`` node, so a prompt or a stop token is set the same
way for both commands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from sumlab.config.predict import PredictModelConfig, PredictPromptConfig
from sumlab.config.schema import DataConfig, GenerationConfig, PathsConfig, TrainerConfig

METHODS = ("back_translation", "paraphrase", "summarize")

PARAPHRASE_SYSTEM = "You are a helpful assistant that rewrites dialogues."
PARAPHRASE_PROMPT = (
    "Rewrite the following dialogue in different words. Keep every turn, its speaker tag (such as #Person1#) and "
    "its meaning. Write only the new dialogue.\n\n{text}"
)
TRANSLATE_PROMPT = "Translate the following text into {language}. Write only the translation.\n\n{{text}}"


def _translator(language_key: str) -> PredictModelConfig:
    """A translation model's settings: no prefix (not T5's "summarize: "); a chat model gets a translation prompt."""
    user = TRANSLATE_PROMPT.format(language="${back_translation." + language_key + "}")
    return PredictModelConfig(prefix="", prompt=PredictPromptConfig(user=user))


@dataclass
class BackTranslationConfig:
    """source -> pivot language -> source: two predict.py runs, the second reading the first's predictions."""

    # source -> pivot: predict.py's model_dir (a run dir, its export/, a .ckpt, an HF dir or a hub name)
    forward_model: Optional[str] = None
    backward_model: Optional[str] = None  # pivot -> source, the same kinds of model_dir
    source_language: str = "English"  # named in the chat prompt of backward (chat models only)
    pivot_language: str = "German"  # named in the chat prompt of forward (chat models only)
    # how to run forward_model (predict.py's model.* keys): prefix for seq2seq models ("translate English to
    # German: " for T5), chat_template + prompt.user with {text} for an instruct model
    forward: PredictModelConfig = field(default_factory=lambda: _translator("pivot_language"))
    backward: PredictModelConfig = field(default_factory=lambda: _translator("source_language"))  # same, for backward
    # decoding of both directions: a whole dialogue per input, so room for as many tokens as it has
    generation: GenerationConfig = field(default_factory=lambda: GenerationConfig(num_beams=4, max_new_tokens=512))
    tag: str = "bt1"  # new rows' ids are <id>#<tag>; another tag (bt2) for a second file trained alongside


@dataclass
class ParaphraseConfig:
    """A new dialogue (the text column) for the original summary, from an instruct model."""

    model_dir: Optional[str] = None  # the instruct model: predict.py's model_dir (run dir, export/, HF dir, hub name)
    # how to prompt it (predict.py's model.* keys): the chat template's system and user turns ({text}: the dialogue)
    model: PredictModelConfig = field(
        default_factory=lambda: PredictModelConfig(
            chat_template=True, prompt=PredictPromptConfig(system=PARAPHRASE_SYSTEM, user=PARAPHRASE_PROMPT)
        )
    )
    # sampled (seeded by `seed`): varied wording; a whole dialogue per output
    generation: GenerationConfig = field(
        default_factory=lambda: GenerationConfig(
            num_beams=1, max_new_tokens=512, do_sample=True, top_p=0.9, temperature=0.7
        )  # fmt: skip
    )
    tag: str = "para1"  # new rows' ids are <id>#<tag>


@dataclass
class SummarizeConfig:
    """A new summary (the summary column) of the original dialogue, from an instruct or fine-tuned model."""

    model_dir: Optional[str] = None  # predict.py's model_dir (run dir, export/, HF dir, hub name)
    # predict.py's model.* keys; prompt null: a sumlab run's own, else sumlab's default summarization prompt;
    # chat_template=false for a causal model fine-tuned with a separator (seq2seq models ignore it)
    model: PredictModelConfig = field(default_factory=lambda: PredictModelConfig(chat_template=True))
    generation: GenerationConfig = field(default_factory=lambda: GenerationConfig(num_beams=1, max_new_tokens=128))
    tag: str = "sum1"  # new rows' ids are <id>#<tag>


@dataclass
class FilterConfig:
    """Which generated rows are kept: ROUGE F1 of the new text against the text it replaces (the dialogue for
    back_translation and paraphrase, the summary for summarize), and empty or looping outputs."""

    metric: str = "rouge1"  # rouge1, rouge2, rougeL or rougeLsum (rougeL/Lsum: quadratic in the text length)
    min_rouge: float = 0.1  # below: unrelated to the original, dropped (0 keeps all)
    max_rouge: float = 0.9  # above: a near-copy that adds nothing, dropped (1 keeps all)
    tokenizer: str = "default"  # ROUGE words: default, whitespace, kiwi (Korean morphemes), rouge_pkg
    # an output whose distinct word 3-grams are fewer than this share of its 3-grams is a loop, dropped (0: off)
    min_distinct: float = 0.5


@dataclass
class AugmentOutputConfig:
    dir: str = MISSING  # <method>.jsonl, augment.json and the generation runs (predict/<step>-<settings hash>/)
    # generate again even where a finished or partial generation with the same settings exists
    overwrite: bool = False


@dataclass
class AugmentConfig:
    task_name: str = "augment"
    methods: list[str] = field(default_factory=lambda: ["paraphrase"])  # in this order: back_translation, ...
    seed: int = 42  # sampling (paraphrase), and the synthetic data's seed
    batch_size: int = 16  # examples per generate() call, per device
    sort_by_length: bool = True  # batches of similar source length (output order restored)
    fast_beam_cache: bool = True  # beam search: skip re-copying the cross-attention cache (see beam_cache.py)
    backend: str = "auto"  # auto (CTranslate2 where it honours the model and settings, else hf), ctranslate2, hf
    compute_type: str = "auto"  # CTranslate2's: auto, float32, int8, int8_float32, bfloat16, ...
    back_translation: BackTranslationConfig = field(default_factory=BackTranslationConfig)
    paraphrase: ParaphraseConfig = field(default_factory=ParaphraseConfig)
    summarize: SummarizeConfig = field(default_factory=SummarizeConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    output: AugmentOutputConfig = field(default_factory=AugmentOutputConfig)
    data: DataConfig = MISSING  # the training file(s) to augment: data.train_file (data.max_train_samples: first N)
    trainer: TrainerConfig = MISSING  # devices, strategy and precision of the generation runs
    paths: PathsConfig = MISSING
