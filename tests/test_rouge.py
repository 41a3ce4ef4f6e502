from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from rouge_score import rouge_scorer, tokenizers

from sumlab import rouge as rouge_cli
from sumlab.text import rouge
from sumlab.text.rouge import ROUGE_KEYS, score_corpus, score_pair, split_sentences, tokenize

REPO = Path(__file__).resolve().parents[1]
DIALOGSUM = Path(__file__).resolve().parents[2] / "shared" / "data" / "dialogsum"

KO_SAME = "오늘 회의는 Zoom 으로 진행합니다. 내일은 점심을 같이 먹어요!"
KO_A = "오늘 회의는 Zoom 으로 진행합니다"
KO_B = "내일 점심은 Zoom 에서 먹자"


@pytest.fixture(scope="module")
def google_scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)


# every tokenizer (kiwipiepy is a dependency: a broken install fails); kiwi's are slow (loading its model takes seconds)
TOKENIZER_PARAMS = ["default", "whitespace", pytest.param("kiwi", marks=pytest.mark.slow)]


@pytest.mark.parametrize("tokenizer", TOKENIZER_PARAMS)
def test_identical_korean_scores_one(tokenizer: str) -> None:
    assert score_pair(KO_SAME, KO_SAME, tokenizer) == dict.fromkeys(ROUGE_KEYS, 1.0)


@pytest.mark.parametrize("tokenizer", TOKENIZER_PARAMS)
def test_korean_pair_sharing_one_english_word(tokenizer: str, google_scorer: rouge_scorer.RougeScorer) -> None:
    # The bug we fix: rouge_score keeps only "zoom" from both sentences and calls them identical.
    assert google_scorer.score(KO_B, KO_A)["rouge1"].fmeasure == 1.0
    scores = score_pair(KO_A, KO_B, tokenizer)
    assert 0 < scores["rouge1"] < 1
    assert scores["rouge2"] == 0
    if tokenizer != "kiwi":  # 1 shared word of 5 on each side
        assert scores["rouge1"] == pytest.approx(0.2)
        assert scores["rougeL"] == pytest.approx(0.2)
    # Without the shared word nothing overlaps, so the score above came only from "Zoom".
    no_overlap = score_pair(KO_A, KO_B.replace("Zoom", "Teams"), tokenizer)
    assert no_overlap == dict.fromkeys(ROUGE_KEYS, 0.0)


def test_default_tokens_match_rouge_score_on_ascii() -> None:
    google = tokenizers.DefaultTokenizer(use_stemmer=True)
    for text in [
        "#Person1# and #Person2# were running to the U.S. office at 5:30 p.m.",
        "It's a snake_case-word; TESTING, tested... flies, was, has, 3.14!",
        "  multiple   spaces\tand\nnewlines  ",
    ]:
        assert tokenize(text) == google.tokenize(text)


def test_stemming_matches_rouge_score() -> None:
    assert tokenize("Running dogs was") == ["run", "dog", "was"]  # "was" is too short to stem
    assert score_pair("running dogs", "run dog") == dict.fromkeys(ROUGE_KEYS, 1.0)
    assert score_pair("running dogs", "run dog", "whitespace")["rouge1"] == 0.0


def test_default_keeps_non_ascii_words_unstemmed() -> None:
    assert tokenize("Cafés über 회의는, 東京!") == ["cafés", "über", "회의는", "東京"]


def test_decomposed_hangul_matches_composed() -> None:
    assert score_pair(unicodedata.normalize("NFD", KO_SAME), KO_SAME)["rouge1"] == 1.0


def test_rouge_lsum_is_summary_level() -> None:
    scores = score_pair("the dog ran. the cat sat.", "the cat sat. the dog ran.")
    assert scores["rougeLsum"] == 1.0
    assert scores["rougeL"] < 1.0


def test_split_sentences() -> None:
    assert split_sentences("안녕하세요. 반갑습니다!  잘 지내요?\n네\n\n좋아요") == [
        "안녕하세요.",
        "반갑습니다!",
        "잘 지내요?",
        "네",
        "좋아요",
    ]
    assert split_sentences("今日は晴れ。明日は雨！") == ["今日は晴れ。", "明日は雨！"]
    assert split_sentences("pi is 3.14 today") == ["pi is 3.14 today"]
    assert split_sentences("  \n ") == []


@pytest.mark.parametrize("pair", [("", "a cat"), ("a cat", ""), ("", ""), ("...", "a cat")])
def test_empty_side_scores_zero(pair: tuple[str, str]) -> None:
    assert score_pair(*pair) == dict.fromkeys(ROUGE_KEYS, 0.0)


def test_score_corpus_means_and_combined() -> None:
    preds = ["the cat sat", "the dog ran. the cat sat."]
    refs = ["the cat sat", "the cat sat. the dog ran."]
    pairs = [score_pair(p, r) for p, r in zip(preds, refs)]
    scores = score_corpus(preds, refs)
    assert set(scores) == {*ROUGE_KEYS, "rouge_combined"}
    for key in ROUGE_KEYS:
        assert scores[key] == pytest.approx((pairs[0][key] + pairs[1][key]) / 2)
    assert scores["rougeL"] < scores["rougeLsum"] == 1.0
    assert scores["rouge_combined"] == pytest.approx((scores["rouge1"] + scores["rouge2"] + scores["rougeL"]) / 3)


def test_score_corpus_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score_corpus(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no predictions to score"):
        score_corpus([], [])
    with pytest.raises(ValueError, match="unknown tokenizer"):
        score_pair("a", "a", "spacy")


@pytest.mark.slow
def test_kiwi_tokens_are_lowercased_morphemes_without_punctuation() -> None:
    tokens = tokenize("회의는 Zoom으로 진행합니다!", "kiwi")
    assert tokens[:2] == ["회의", "는"] and "zoom" in tokens
    assert "!" not in tokens


def test_kiwi_missing_gives_install_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(rouge, "_kiwi", None)
    monkeypatch.setitem(sys.modules, "kiwipiepy", None)  # makes the import fail
    with pytest.raises(ValueError, match="pip install kiwipiepy"):
        score_pair(KO_A, KO_B, "kiwi")
    # The CLI turns it into one error line.
    texts = tmp_path / "texts.txt"
    texts.write_text(KO_A + "\n", encoding="utf-8")
    assert rouge_cli.main([str(texts), str(texts), "--tokenizer", "kiwi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "pip install kiwipiepy" in err


def _rouge_score(scorer: rouge_scorer.RougeScorer, pred: str, ref: str) -> dict[str, float]:
    """rouge_score's F1 of each key; Lsum's sentences given as ours split them (it splits on newlines only)."""
    scores = {key: score.fmeasure for key, score in scorer.score(ref, pred).items()}
    lsum = scorer.score("\n".join(split_sentences(ref)), "\n".join(split_sentences(pred)))["rougeLsum"]
    return {**scores, "rougeLsum": lsum.fmeasure}


def _assert_parity(scorer: rouge_scorer.RougeScorer, preds: list[str], references: list[list[str]]) -> None:
    """Per example (one reference, or mean/max over several) and corpus means equal rouge_score's."""
    picks = {"mean": lambda v: sum(v) / len(v), "max": max}
    totals = {how: dict.fromkeys(ROUGE_KEYS, 0.0) for how in picks}
    for pred, refs in zip(preds, references, strict=True):
        per_ref = [_rouge_score(scorer, pred, ref) for ref in refs]
        if len(refs) == 1:
            assert score_pair(pred, refs[0]) == pytest.approx(per_ref[0], abs=1e-6), (pred, refs[0])
        for how, pick in picks.items():
            ours = rouge.score_references(pred, refs, multi_reference=how)
            for key in ROUGE_KEYS:
                theirs = pick([s[key] for s in per_ref])
                assert ours[key] == pytest.approx(theirs, abs=1e-6), (how, key, pred)
                totals[how][key] += theirs
    for how in picks:
        corpus = score_corpus(preds, references, multi_reference=how)
        assert all(corpus[k] == pytest.approx(totals[how][k] / len(preds), abs=1e-6) for k in ROUGE_KEYS)


def test_matches_rouge_score_on_committed_pairs(google_scorer: rouge_scorer.RougeScorer) -> None:
    """Always runs (no ../shared): English pairs written for this test, one or three references each, covering
    stemming, case, numbers, prices, times, hyphens, apostrophes, speaker tags, newlines and several sentences."""
    rows = [json.loads(line) for line in (Path(__file__).parent / "data" / "rouge_pairs.jsonl").open(encoding="utf-8")]
    assert len(rows) >= 30 and all(t.isascii() for r in rows for t in (r["prediction"], *r["references"]))
    preds, references = [r["prediction"] for r in rows], [r["references"] for r in rows]
    assert any(len(refs) > 1 for refs in references) and any("\n" in ref for refs in references for ref in refs)
    _assert_parity(google_scorer, preds, references)
    scores = [score_pair(p, refs[0])["rouge1"] for p, refs in zip(preds, references, strict=True)]
    assert min(scores) == 0.0 and max(scores) == 1.0 and len(set(scores)) > len(scores) // 2  # the pairs span the range


@pytest.mark.slow
def test_matches_rouge_score_on_dialogsum(google_scorer: rouge_scorer.RougeScorer) -> None:
    path = DIALOGSUM / "test.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not present")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    pairs = [(row["references"][1], row["references"][0]) for row in rows]
    # rouge_score drops non-ASCII characters by design, so only ASCII pairs must agree.
    ascii_pairs = [(p, r) for p, r in pairs if p.isascii() and r.isascii()]
    assert len(rows) == 500
    assert len(pairs) - len(ascii_pairs) < len(pairs) // 20
    _assert_parity(google_scorer, [p for p, _ in ascii_pairs], [[r] for _, r in ascii_pairs])


def _lead(dialogue: str, words: int = 20) -> str:
    """A lead baseline prediction: the dialogue's first words, speaker tags dropped."""
    return " ".join([w for w in dialogue.split() if not w.startswith("#Person")][:words])


@pytest.mark.slow
def test_multi_reference_matches_rouge_score_on_dialogsum(google_scorer: rouge_scorer.RougeScorer) -> None:
    path = DIALOGSUM / "test.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not present")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if all(t.isascii() for t in [r["dialogue"], *r["references"]])]  # rouge_score is ASCII-only
    assert len(rows) > 450 and all(len(r["references"]) == 3 for r in rows)
    rows = rows[:150]  # enough pairs to cover the rules, few enough to stay quick
    preds = [_lead(r["dialogue"]) for r in rows]
    _assert_parity(google_scorer, preds, [r["references"] for r in rows])
    mean = score_corpus(preds, [r["references"] for r in rows], multi_reference="mean")
    most = score_corpus(preds, [r["references"] for r in rows], multi_reference="max")
    assert most["rouge1"] > mean["rouge1"] + 1 / 150  # the modes differ on real data


def test_single_reference_numbers_unchanged() -> None:
    preds, refs = ["the cat sat on the mat", "a dog barked"], ["a cat was on the mat", "the dog barked loudly"]
    for how in ("mean", "max"):
        assert score_corpus(preds, [[r] for r in refs], multi_reference=how) == score_corpus(preds, refs)
    assert rouge.score_references(preds[0], refs[0]) == score_pair(preds[0], refs[0])
    with pytest.raises(ValueError, match="no references"):
        score_corpus(preds, [[], [refs[1]]])


def test_rouge_metric_scores_reference_lists() -> None:
    import torch

    from sumlab.train.metrics import RougeMetric

    preds, refs = (
        ["the cat sat on the mat", "a dog barked"],
        [["a cat was on the mat", "the cat sat"], ["the dog barked"] * 2],
    )
    for how in ("mean", "max"):
        metric = RougeMetric(multi_reference=how)
        metric.update(torch.tensor([0, 1]), preds, refs, torch.tensor([6, 3]))
        got = metric.compute()
        want = score_corpus(preds, refs, multi_reference=how)
        assert all(got[k] == pytest.approx(want[k]) for k in (*ROUGE_KEYS, "rouge_combined"))


# --- CLI ---------------------------------------------------------------------------------------

PREDS = ["the cat sat on the mat", "회의는 Zoom 으로 진행합니다", ""]
REFS = ["a cat was on the mat", "회의는 내일 Zoom 에서", "nothing here"]


def _run_cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sumlab.rouge", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )


def _write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    lines = (json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.mark.slow
def test_cli_jsonl_and_txt(tmp_path: Path) -> None:
    records = [{"id": i, "prediction": p} for i, p in enumerate(PREDS)]
    preds = _write_jsonl(tmp_path / "preds.jsonl", records)
    refs = tmp_path / "refs.txt"
    refs.write_text("\n".join(REFS) + "\n", encoding="utf-8")
    result = _run_cli(preds, refs)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {**score_corpus(PREDS, REFS), "n": 3}


@pytest.mark.slow
def test_cli_csv_with_columns_and_tokenizer(tmp_path: Path) -> None:
    preds = tmp_path / "preds.csv"
    rows = "".join(f'{i},"{p}"\n' for i, p in enumerate(PREDS))
    preds.write_text("id,output\n" + rows, encoding="utf-8")
    refs = _write_jsonl(tmp_path / "refs.jsonl", [{"summary": "x", "gold": r} for r in REFS])
    result = _run_cli(preds, refs, "--column", "output", "--ref-column", "gold", "--tokenizer", "whitespace")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {**score_corpus(PREDS, REFS, "whitespace"), "n": 3}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["mean", "max"])
def test_cli_reference_lists(tmp_path: Path, how: str) -> None:
    refs = [[r, "the mat"] for r in REFS]
    preds = _write_jsonl(tmp_path / "preds.jsonl", [{"prediction": p} for p in PREDS])
    gold = _write_jsonl(tmp_path / "refs.jsonl", [{"summary": r[0], "references": r} for r in refs])
    result = _run_cli(preds, gold, "--ref-column", "references", "--multi-reference", how)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {**score_corpus(PREDS, refs, multi_reference=how), "n": 3}


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[object], str]]:
    """name -> (CLI args, text the error line must contain)."""
    good = tmp / "good.txt"
    good.write_text("a cat\na dog\n", encoding="utf-8")
    (tmp / "empty.txt").write_text("", encoding="utf-8")
    (tmp / "latin1.txt").write_bytes("café\nnaïve\n".encode("latin-1"))
    _write_jsonl(tmp / "nocol.jsonl", [{"output": "a"}, {"output": "b"}])
    _write_jsonl(tmp / "gap.jsonl", [{"prediction": "a"}, {"text": "b"}])
    (tmp / "badjson.jsonl").write_text('{"prediction": "a"}\n{"prediction": "b\n', encoding="utf-8")
    (tmp / "nocol.csv").write_text("id,output\n1,a\n2,b\n", encoding="utf-8")
    (tmp / "three.txt").write_text("a\nb\nc\n", encoding="utf-8")
    _write_jsonl(tmp / "ragged.jsonl", [{"references": ["a", "b"]}, {"references": ["b"]}])
    _write_jsonl(tmp / "emptyrefs.jsonl", [{"references": ["a"]}, {"references": []}])
    return {
        "missing file": ([tmp / "nope.jsonl", good], "not found"),
        "empty file": ([tmp / "empty.txt", good], "empty"),
        "not utf-8": ([tmp / "latin1.txt", good], "UTF-8"),
        "no known column": ([tmp / "nocol.jsonl", good], "--column"),
        "named column absent": ([good, tmp / "nocol.jsonl", "--ref-column", "gold"], "'gold'"),
        "column missing on a line": ([tmp / "gap.jsonl", good], "line 2"),
        "bad json line": ([tmp / "badjson.jsonl", good], "line 2"),
        "csv column absent": ([tmp / "nocol.csv", good, "--column", "pred"], "'pred'"),
        "count mismatch": ([tmp / "three.txt", good], "3 predictions"),
        "ragged references": (
            [good, tmp / "ragged.jsonl", "--ref-column", "references"],
            "different numbers of references",
        ),
        "empty references": ([good, tmp / "emptyrefs.jsonl", "--ref-column", "references"], "non-empty list"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "empty file",
        "not utf-8",
        "no known column",
        "named column absent",
        "column missing on a line",
        "bad json line",
        "csv column absent",
        "count mismatch",
        "ragged references",
        "empty references",
    ],
)
@pytest.mark.slow
def test_cli_bad_input(tmp_path: Path, case: str) -> None:
    args, expected = _bad_inputs(tmp_path)[case]
    result = _run_cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]
