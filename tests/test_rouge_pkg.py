"""metrics.tokenizer=rouge_pkg equals the `rouge` package (the Korean competition's scorer) to 1e-6.

The package is in the dev extra for this test only: sumlab reimplements it (sumlab.text.rouge).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from rouge import Rouge

from sumlab.text.rouge import ROUGE_KEYS, score_corpus, score_pair, tokenize

COMPETITION_REMOVE = ["<usr>", "<s>", "</s>", "<pad>"]  # the baseline's inference.remove_tokens
PKG_KEYS = {"rouge1": "rouge-1", "rouge2": "rouge-2", "rougeL": "rouge-l"}

# Hand-written pairs: dialogue summaries as the competition has them, and the edges of the package's rules.
HAND_PAIRS = [
    ("#Person1#은 #Person2#에게 병원 예약을 부탁한다.", "#Person1#이 #Person2#에게 병원 예약을 부탁합니다."),
    ("#Person2#는 다음 주 월요일에 면접을 본다.", "#Person2#는 다음 주 화요일에 면접을 보기로 했다."),
    ("두 사람은 주말에 영화를 보기로 한다. 그들은 7시에 만난다.", "두 사람은 7시에 만나서 영화를 보기로 한다."),
    ("Person1 asks Person2 to book a table. They agree on 7 pm.", "#Person1# wants #Person2# to book a table for 7."),
    ("The the the cat sat on the mat.", "The cat sat on the mat, the end."),
    ("Hello, world! How are you?", "hello world how are you"),
    ("가격은 3.5 달러이다.", "가격은 3 달러 50 센트이다."),
    ("회의는 Zoom 으로 진행한다. meeting at 10 a.m.", "Zoom 회의는 오전 10시에 진행한다."),
    ("<s> #Person1#은 택시를 부른다. </s> <pad> <pad>", "#Person1#은 택시를 부른다."),
    ("a<usr>b c", "a b c"),
    ("word word word word", "word"),
    ("...점...점...", "점 점 점"),
    ("  띄어쓰기가   이상한\t문장\n두 번째 줄.  ", "띄어쓰기가 이상한 문장 두 번째 줄."),
    ("서울-부산 KTX (2시간 30분)!", "서울 부산 KTX 2시간 30분"),
    (" . ", "anything at all"),
    ("one", "one. one. one."),
    ("A B. B A. A B.", "B A B A"),
    ("고객은 환불을 요청하고, 직원은 영수증을 요구한다", "직원은 영수증을 요구하고 고객은 환불을 요청한다"),
    ("Ms. Kim meets Dr. Lee at 3.30 p.m.", "Kim meets Lee at 3:30 pm."),
    ("#Person1#과 #Person2#는 #PhoneNumber#로 연락하기로 한다.", "#Person2#는 #PhoneNumber#로 #Person1#에게 연락한다."),
    ("이것은 😀 이모지를 포함한다.", "이것은 이모지를 포함한다 😀"),
    ("中文 한국어 English 日本語.", "English 한국어 中文."),
    ("x", "y"),
    ("same same. same.", "same same same."),
    ("#Person1# : 안녕하세요 . #Person2# : 네 .", "#Person1#과 #Person2#가 인사한다."),
    ("The meeting was moved to Friday because the CEO is travelling.", "The meeting moved to Friday."),
    ("They discuss the weather. It will rain tomorrow. They cancel the picnic.", "Rain cancels their picnic."),
    ("#Person1# buys two tickets; #Person2# pays.", "#Person2# pays for #Person1#'s two tickets."),
    ("그는 1,000원을 냈다.", "그는 1000원을 냈다."),
    ("Mr.Smith", "Mr. Smith"),
]

KO_SUBJECTS = ["#Person1#은", "#Person2#는", "#Person1#과 #Person2#는", "두 사람은", "고객은", "직원은", "그녀는"]
KO_OBJECTS = ["병원 예약을", "회의 일정을", "저녁 메뉴를", "여행 계획을", "택시를", "환불을", "새 노트북을", "숙제를"]
KO_VERBS = ["부탁한다", "정한다", "이야기한다", "취소한다", "확인한다", "요청한다", "추천한다", "미룬다"]
KO_EXTRA = ["다음 주 월요일에", "오후 3시에", "#PhoneNumber#로", "주말에", "회사에서", "Zoom 으로", "3.5 시간 동안"]
EN_SUBJECTS = ["#Person1#", "#Person2#", "The customer", "Tom", "Mary and Jack", "The manager", "They"]
EN_VERBS = ["asks about", "books", "cancels", "recommends", "complains about", "pays for", "discusses"]
EN_OBJECTS = ["a table for two", "the meeting", "a refund", "the new laptop", "their trip", "the the bill", "a taxi"]
EN_EXTRA = ["on Monday", "at 7 p.m.", "because it rains", "with #Person2#", "for $3.50", "again, again", "(twice)"]


def _sentence(rng: random.Random, korean: bool) -> str:
    subjects, verbs, objects, extra = (
        (KO_SUBJECTS, KO_VERBS, KO_OBJECTS, KO_EXTRA) if korean else (EN_SUBJECTS, EN_VERBS, EN_OBJECTS, EN_EXTRA)
    )
    words = [rng.choice(subjects)] + ([rng.choice(extra)] if rng.random() < 0.6 else [])
    words += [rng.choice(objects), rng.choice(verbs)] if korean else [rng.choice(verbs), rng.choice(objects)]
    if not korean and rng.random() < 0.5:
        words.append(rng.choice(extra))
    end = rng.choice([".", ".", ".", "!", "?", "", " ."])
    return " ".join(words) + end


def _edit(rng: random.Random, text: str) -> str:
    """A reference-like variant of a summary: words dropped, swapped, repeated, re-spaced, re-cased."""
    words = text.split(" ")
    for _ in range(rng.randint(0, 3)):
        op, i = rng.random(), rng.randrange(len(words))
        if op < 0.3 and len(words) > 2:
            del words[i]
        elif op < 0.6:
            j = rng.randrange(len(words))
            words[i], words[j] = words[j], words[i]
        elif op < 0.8:
            words.insert(i, words[i])
        else:
            words[i] = words[i].upper() if rng.random() < 0.5 else words[i] + ","
    return rng.choice([" ", "  ", "\n"]).join(words)


def generated_pairs(n: int = 200, seed: int = 20240601) -> list[tuple[str, str]]:
    """Realistic prediction/reference pairs, half Korean, some mixed, some sharing nothing, some with special tokens."""
    rng = random.Random(seed)
    pairs = []
    for k in range(n):
        korean = k % 2 == 0
        reference = " ".join(_sentence(rng, korean) for _ in range(rng.randint(1, 3)))
        prediction = _edit(rng, reference) if rng.random() < 0.8 else _sentence(rng, not korean)
        if rng.random() < 0.2:
            prediction = f"<s> {prediction}</s>" + " <pad>" * rng.randint(0, 3)
        if rng.random() < 0.1:
            prediction = prediction.replace(" ", "<usr>", 1)
        pairs.append((prediction, reference))
    return pairs


def _baseline_clean(texts: list[str], remove: list[str]) -> list[str]:
    """The competition baseline's compute_metrics: `sentence.replace(token, " ")` for each removed token."""
    for token in remove:
        texts = [t.replace(token, " ") for t in texts]
    return texts


def _package_pair(prediction: str, reference: str, remove: list[str]) -> dict[str, float]:
    prediction, reference = _baseline_clean([prediction, reference], remove)
    scores = Rouge().get_scores(prediction, reference)[0]
    return {ours: scores[theirs]["f"] for ours, theirs in PKG_KEYS.items()}


PAIRS = HAND_PAIRS + generated_pairs()


@pytest.mark.parametrize("remove", [[], COMPETITION_REMOVE], ids=["as-is", "remove-tokens"])
def test_each_pair_equals_the_package(remove: list[str]) -> None:
    assert len(PAIRS) >= 200
    for prediction, reference in PAIRS:
        ours = score_pair(prediction, reference, "rouge_pkg", remove)
        theirs = _package_pair(prediction, reference, remove)
        for key, value in theirs.items():
            assert ours[key] == pytest.approx(value, abs=1e-6), (key, prediction, reference)
        assert ours["rougeLsum"] == ours["rougeL"]  # the package's one ROUGE-L is summary level


@pytest.mark.parametrize("remove", [[], COMPETITION_REMOVE], ids=["as-is", "remove-tokens"])
def test_corpus_mean_equals_get_scores_avg(remove: list[str]) -> None:
    predictions, references = (list(texts) for texts in zip(*PAIRS, strict=True))
    theirs = Rouge().get_scores(_baseline_clean(predictions, remove), _baseline_clean(references, remove), avg=True)
    ours = score_corpus(predictions, references, "rouge_pkg", remove=remove)
    for key, pkg_key in PKG_KEYS.items():
        assert ours[key] == pytest.approx(theirs[pkg_key]["f"], abs=1e-6)
    assert ours["rouge_combined"] == pytest.approx(sum(theirs[k]["f"] for k in PKG_KEYS.values()) / 3, abs=1e-6)


def test_what_the_package_does_unlike_the_default_scorer() -> None:
    # case and punctuation kept, distinct n-grams only, and 1e-8 in every F1's denominator
    assert score_pair("Hello, World!", "hello world", "rouge_pkg")["rouge1"] == 0.0
    assert score_pair("Hello, World!", "hello world")["rouge1"] == 1.0
    repeated = score_pair("a a a b", "a b b", "rouge_pkg")
    assert repeated["rouge1"] == pytest.approx(1.0, abs=1e-7) and repeated["rouge1"] < 1.0
    assert tokenize("Dr. Kim  3.5", "rouge_pkg") == ["Dr", "Kim", "3", "5"]  # "." splits sentences, even in 3.5


@pytest.mark.parametrize("empty", ["", "..."])
def test_empty_prediction_scores_zero_where_the_package_raises(empty: str) -> None:
    with pytest.raises(ValueError):
        Rouge().get_scores(empty, "a reference")
    assert score_pair(empty, "a reference", "rouge_pkg") == dict.fromkeys(ROUGE_KEYS, 0.0)
    # a corpus with one empty prediction is still scored: that example counts 0
    corpus = score_corpus([empty, "a reference"], ["a reference", "a reference"], "rouge_pkg")
    assert corpus["rouge1"] == pytest.approx(0.5 * score_pair("a reference", "a reference", "rouge_pkg")["rouge1"])


def test_cli_scores_with_rouge_pkg_and_remove_tokens(tmp_path: Path) -> None:
    predictions, references = (list(texts) for texts in zip(*PAIRS[:40], strict=True))
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prediction": p}) + "\n" for p in predictions), "utf-8")
    (tmp_path / "r.jsonl").write_text("".join(json.dumps({"reference": r}) + "\n" for r in references), "utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "sumlab.rouge", str(tmp_path / "p.jsonl"), str(tmp_path / "r.jsonl"),
         "--tokenizer", "rouge_pkg", "--remove-tokens", *COMPETITION_REMOVE],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(proc.stdout)
    remove = COMPETITION_REMOVE
    theirs = Rouge().get_scores(_baseline_clean(predictions, remove), _baseline_clean(references, remove), avg=True)
    assert scores["rouge2"] == pytest.approx(theirs["rouge-2"]["f"], abs=1e-6)


def test_validation_metric_scores_the_competition_way() -> None:
    import torch

    from sumlab.train.metrics import RougeMetric

    predictions, references = (list(texts) for texts in zip(*PAIRS[:30], strict=True))
    metric = RougeMetric("rouge_pkg", remove=COMPETITION_REMOVE)
    metric.update(torch.arange(30), predictions, references, torch.ones(30))
    theirs = Rouge().get_scores(
        _baseline_clean(predictions, COMPETITION_REMOVE), _baseline_clean(references, COMPETITION_REMOVE), avg=True
    )
    result = metric.compute()
    for key, pkg_key in PKG_KEYS.items():
        assert result[key] == pytest.approx(theirs[pkg_key]["f"], abs=1e-6)


def test_config_takes_the_scorer_and_refuses_an_empty_token(tmp_path: Path) -> None:
    from conftest import compose_config

    from sumlab.config.rules import validate
    from sumlab.core.errors import SumlabError

    cfg = compose_config(["metrics.tokenizer=rouge_pkg", "metrics.remove_tokens=['<usr>','</s>']"], run_dir=tmp_path)
    validate(cfg)
    assert list(cfg.metrics.remove_tokens) == ["<usr>", "</s>"]
    with pytest.raises(SumlabError, match=r"metrics\.remove_tokens"):
        validate(compose_config(["metrics.remove_tokens=['']"], run_dir=tmp_path))


def test_predict_scores_with_the_runs_remove_tokens_unless_given() -> None:
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from sumlab.predict.runner import rouge_remove

    loaded = SimpleNamespace(rouge_remove=["<usr>"])  # the training run's metrics.remove_tokens
    assert rouge_remove(OmegaConf.create({"metrics": {"remove_tokens": None}}), loaded) == ["<usr>"]
    assert rouge_remove(OmegaConf.create({"metrics": {"remove_tokens": []}}), loaded) == []
    assert (
        rouge_remove(OmegaConf.create({"metrics": {"remove_tokens": None}}), SimpleNamespace(rouge_remove=None)) == []
    )
