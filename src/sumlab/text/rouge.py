"""ROUGE-1/2/L/Lsum F1 that keeps non-ASCII text, plus a small CLI.

Why not google's rouge_score or torchmetrics' ROUGE: both lowercase the text and then replace every
character outside [a-z0-9] with a space, so Korean (or any non-ASCII) text loses all its characters:
two unrelated Korean summaries that share one English word score 1.0. The tokenizer is the broken
part, so the n-gram and LCS math below follows rouge_score's rouge_scorer.py step for step, and on
ASCII text the "default" tokenizer yields rouge_score's tokens (use_stemmer=True), hence its scores.

``rouge_pkg`` is another scorer, not only another tokenizer: the `rouge` package's (``from rouge import Rouge``,
which the Korean dialogue-summarization competition's baseline and leaderboard use), reimplemented below so that
sumlab does not depend on it at run time; tests/test_rouge_pkg.py holds it equal to the package.

The command line over files is :mod:`sumlab.rouge`.
"""

from __future__ import annotations

import collections
import functools
import itertools
import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from nltk.stem.porter import PorterStemmer

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
MULTI_REFERENCE = ("mean", "max")  # how several references per example combine
ROUGE_PKG = "rouge_pkg"  # the `rouge` package's scorer (see _rouge_pkg_pair)
TOKENIZERS = ("default", "whitespace", "kiwi", ROUGE_PKG)

# With re.UNICODE (the default for str patterns) \w covers Hangul, CJK and accented letters.
_NON_WORD_RE = re.compile(r"[\W_]+")
_ASCII_WORD_RE = re.compile(r"[a-z0-9]+")
# Newlines; . ! ? before whitespace (this also ends Korean sentences: "...습니다. ", "...요? ");
# CJK full stops, which are usually not followed by a space.
_SENTENCE_BREAK_RE = re.compile(r"\n|(?<=[.!?])\s+|(?<=[。！？])\s*")

_STEMMER = PorterStemmer()  # rouge_score's stemmer (NLTK_EXTENSIONS mode)
_kiwi: Any = None  # kiwipiepy.Kiwi, built on first use: construction takes seconds


class Score(NamedTuple):
    precision: float
    recall: float
    fmeasure: float


_ZERO = Score(0.0, 0.0, 0.0)


def split_sentences(text: str) -> list[str]:
    """Sentences for ROUGE-Lsum, without nltk's punkt download."""
    return [s.strip() for s in _SENTENCE_BREAK_RE.split(text) if s.strip()]


@functools.lru_cache(maxsize=1 << 16)
def _stem(word: str) -> str:
    # Porter stemming is slow and summaries repeat words a lot.
    return _STEMMER.stem(word)


def _default_tokens(text: str) -> list[str]:
    words = _NON_WORD_RE.split(text.lower())
    # rouge_score's rule: stem only tokens longer than 3 chars; it drops every non-[a-z0-9] token,
    # we keep them unstemmed.
    return [_stem(w) if len(w) > 3 and _ASCII_WORD_RE.fullmatch(w) else w for w in words if w]


def _whitespace_tokens(text: str) -> list[str]:
    return text.lower().split()


def _get_kiwi() -> Any:
    global _kiwi
    if _kiwi is None:
        try:
            from kiwipiepy import Kiwi
        except ImportError:
            raise ValueError("tokenizer 'kiwi' needs the kiwipiepy package: pip install kiwipiepy") from None
        _kiwi = Kiwi()
    return _kiwi


def _kiwi_tokens(text: str) -> list[str]:
    forms = (token.form.lower() for token in _get_kiwi().tokenize(text))
    return [form for form in forms if not _NON_WORD_RE.fullmatch(form)]


def _pkg_sentences(text: str) -> list[str]:
    """The `rouge` package's sentences: text split at every "." (decimals too), whitespace runs made one space;
    a piece of only spaces stays, as an empty sentence whose one word is ""."""
    return [" ".join(piece.split()) for piece in text.split(".") if piece]


def _pkg_words(sentences: list[str]) -> list[str]:
    return [word for sentence in sentences for word in sentence.split(" ")]


_TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "default": _default_tokens,
    "whitespace": _whitespace_tokens,
    "kiwi": _kiwi_tokens,
    ROUGE_PKG: lambda text: _pkg_words(_pkg_sentences(text)),  # words as given: case kept, punctuation attached
}


def _get_tokenizer(name: str) -> Callable[[str], list[str]]:
    try:
        tokenize_fn = _TOKENIZERS[name]
    except KeyError:
        choices = ", ".join(TOKENIZERS)
        raise ValueError(f"unknown tokenizer {name!r}; use one of {choices}") from None
    if name == ROUGE_PKG:  # the package compares the characters as given
        return tokenize_fn
    # NFC so that Hangul typed as composed syllables and as decomposed jamo compare equal.
    return lambda text: tokenize_fn(unicodedata.normalize("NFC", text))


def tokenize(text: str, tokenizer: str = "default") -> list[str]:
    """The tokens ROUGE compares for `text` under the named tokenizer."""
    return _get_tokenizer(tokenizer)(text)


def _score(hits: int, n_pred: int, n_ref: int) -> Score:
    if not hits:
        return _ZERO
    precision, recall = hits / n_pred, hits / n_ref
    return Score(precision, recall, 2 * precision * recall / (precision + recall))


def _ngram_score(pred: list[str], ref: list[str], n: int) -> Score:
    pred_counts = collections.Counter(zip(*(pred[i:] for i in range(n))))
    ref_counts = collections.Counter(zip(*(ref[i:] for i in range(n))))
    hits = sum((pred_counts & ref_counts).values())
    return _score(hits, sum(pred_counts.values()), sum(ref_counts.values()))


def _lcs_table(ref: list[str], pred: list[str]) -> list[list[int]]:
    table = [[0] * (len(pred) + 1) for _ in range(len(ref) + 1)]
    for i, ref_token in enumerate(ref, 1):
        row, prev = table[i], table[i - 1]
        for j, pred_token in enumerate(pred, 1):
            row[j] = prev[j - 1] + 1 if ref_token == pred_token else max(prev[j], row[j - 1])
    return table


def _lcs_indices(ref: list[str], pred: list[str]) -> list[int]:
    """Indices into `ref` of one LCS, with rouge_score's tie-breaking (it decides Lsum's union)."""
    table = _lcs_table(ref, pred)
    i, j, indices = len(ref), len(pred), []
    while i > 0 and j > 0:
        if ref[i - 1] == pred[j - 1]:
            indices.append(i - 1)
            i, j = i - 1, j - 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return indices


def _lcs_score(pred: list[str], ref: list[str]) -> Score:
    if not pred or not ref:
        return _ZERO
    return _score(_lcs_table(ref, pred)[-1][-1], len(pred), len(ref))


def _summary_lcs_score(pred_sents: list[list[str]], ref_sents: list[list[str]]) -> Score:
    """rouge_score's _summary_level_lcs: union LCS of each reference sentence against all
    prediction sentences, each token counted at most as often as it occurs on both sides."""
    n_pred, n_ref = sum(map(len, pred_sents)), sum(map(len, ref_sents))
    if not n_pred or not n_ref:
        return _ZERO
    pred_left = collections.Counter(itertools.chain.from_iterable(pred_sents))
    ref_left = collections.Counter(itertools.chain.from_iterable(ref_sents))
    hits = 0
    for ref_sent in ref_sents:
        for i in set().union(*(_lcs_indices(ref_sent, pred_sent) for pred_sent in pred_sents)):
            token = ref_sent[i]
            if pred_left[token] > 0 and ref_left[token] > 0:
                hits += 1
                pred_left[token] -= 1
                ref_left[token] -= 1
    return _score(hits, n_pred, n_ref)


# --- the `rouge` package's scorer (rouge 1.0.1, rouge/rouge_score.py), step for step ------------------------------
# It differs from the scorer above in four ways: words are split at spaces only, case and punctuation kept (the
# sentence splitting at "." aside); each side counts its *distinct* n-grams (a set, not a multiset); its ROUGE-L is
# summary level, the number of distinct words in the union of one reconstructed LCS per (reference sentence,
# prediction sentence), over the distinct words of each side; every F1 adds 1e-8 to its denominator.
_PKG_EPS = 1e-8  # identical texts score 0.999999995, as in the package


def _pkg_f1(hits: int, n_pred: int, n_ref: int) -> float:
    precision = hits / n_pred if n_pred else 0.0
    recall = hits / n_ref if n_ref else 0.0
    return 2.0 * ((precision * recall) / (precision + recall + _PKG_EPS))


def _pkg_ngram_f1(pred: list[str], ref: list[str], n: int) -> float:
    pred_ngrams, ref_ngrams = set(zip(*(pred[i:] for i in range(n)))), set(zip(*(ref[i:] for i in range(n))))
    return _pkg_f1(len(pred_ngrams & ref_ngrams), len(pred_ngrams), len(ref_ngrams))


def _pkg_lcs_words(ref: list[str], pred: list[str]) -> set[str]:
    """The words of the one LCS the package reconstructs (its tie-break: a step along `pred` unless the cell above
    is larger); they decide the union, hence the score."""
    table = _lcs_table(ref, pred)
    i, j, words = len(ref), len(pred), set()
    while i > 0 and j > 0:
        if ref[i - 1] == pred[j - 1]:
            words.add(ref[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return words


def _pkg_lcs_f1(pred_sents: list[str], ref_sents: list[str]) -> float:
    union: set[str] = set()
    for ref_sent in ref_sents:
        for pred_sent in pred_sents:
            union |= _pkg_lcs_words(ref_sent.split(" "), pred_sent.split(" "))
    return _pkg_f1(len(union), len(set(_pkg_words(pred_sents))), len(set(_pkg_words(ref_sents))))


def _rouge_pkg_pair(prediction: str, reference: str) -> dict[str, float]:
    """``Rouge().get_scores(prediction, reference)``'s F1 of rouge-1, rouge-2 and rouge-l (as rougeL, and as
    rougeLsum: the package's only ROUGE-L is summary level). Where the package raises (a side that is empty or
    only dots), this scores 0: a model that said nothing gets nothing, and a validation epoch does not crash."""
    pred_sents, ref_sents = _pkg_sentences(prediction), _pkg_sentences(reference)
    if not pred_sents or not ref_sents:
        return dict.fromkeys(ROUGE_KEYS, 0.0)
    pred, ref = _pkg_words(pred_sents), _pkg_words(ref_sents)
    rouge_l = _pkg_lcs_f1(pred_sents, ref_sents)
    return {"rouge1": _pkg_ngram_f1(pred, ref, 1), "rouge2": _pkg_ngram_f1(pred, ref, 2), "rougeL": rouge_l,
            "rougeLsum": rouge_l}  # fmt: skip


# --- scoring ---------------------------------------------------------------------------------------------------------
def remove_tokens(text: str, tokens: Sequence[str]) -> str:
    """metrics.remove_tokens: each token replaced by a space, in order (as the competition's baseline does, so
    "a<usr>b" is two words)."""
    for token in tokens:
        text = text.replace(token, " ")
    return text


def score_pair(
    prediction: str, reference: str, tokenizer: str = "default", remove: Sequence[str] = ()
) -> dict[str, float]:
    """ROUGE F1 in [0, 1] for each of ROUGE_KEYS; an empty side scores 0. ``remove``: tokens taken out of both
    texts first (metrics.remove_tokens). The per-pair utility: MBR and the corpus scores below use it."""
    if remove:
        prediction, reference = remove_tokens(prediction, remove), remove_tokens(reference, remove)
    if tokenizer == ROUGE_PKG:
        return _rouge_pkg_pair(prediction, reference)
    tokenize_fn = _get_tokenizer(tokenizer)
    pred, ref = tokenize_fn(prediction), tokenize_fn(reference)
    pred_sents = [tokenize_fn(s) for s in split_sentences(prediction)]
    ref_sents = [tokenize_fn(s) for s in split_sentences(reference)]
    return {
        "rouge1": _ngram_score(pred, ref, 1).fmeasure,
        "rouge2": _ngram_score(pred, ref, 2).fmeasure,
        "rougeL": _lcs_score(pred, ref).fmeasure,
        "rougeLsum": _summary_lcs_score(pred_sents, ref_sents).fmeasure,
    }


def score_references(
    prediction: str,
    references: str | Sequence[str],
    tokenizer: str = "default",
    multi_reference: str = "mean",
    remove: Sequence[str] = (),
) -> dict[str, float]:
    """score_pair against one reference, or the mean (or max) of each key over several."""
    if isinstance(references, str):
        return score_pair(prediction, references, tokenizer, remove)
    if not references:
        raise ValueError("an example has no references; give each prediction at least one")
    if multi_reference not in MULTI_REFERENCE:
        raise ValueError(f"unknown multi_reference {multi_reference!r}; use one of {', '.join(MULTI_REFERENCE)}")
    scores = [score_pair(prediction, r, tokenizer, remove) for r in references]
    pick = max if multi_reference == "max" else (lambda values: sum(values) / len(values))
    return {key: pick([s[key] for s in scores]) for key in ROUGE_KEYS}


def score_corpus(
    predictions: Sequence[str],
    references: Sequence[str | Sequence[str]],
    tokenizer: str = "default",
    multi_reference: str = "mean",
    remove: Sequence[str] = (),
) -> dict[str, float]:
    """Mean per-example F1 for each of ROUGE_KEYS (what the HF summarization example reports, without
    its x100), plus rouge_combined = mean of rouge1, rouge2 and rougeL. An example's references may be
    a list: its score is then the mean (or max, ``multi_reference``) over them. With tokenizer rouge_pkg (and
    ``remove``), the rouge1/rouge2/rougeL means equal ``Rouge().get_scores(..., avg=True)``'s F1 values."""
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(references)} references; "
            "pass exactly one reference (or one list of references) per prediction"
        )
    if not predictions:
        raise ValueError("no predictions to score")
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        for key, value in score_references(prediction, reference, tokenizer, multi_reference, remove).items():
            totals[key] += value
    means = {key: total / len(predictions) for key, total in totals.items()}
    means["rouge_combined"] = (means["rouge1"] + means["rouge2"] + means["rougeL"]) / 3
    return means
