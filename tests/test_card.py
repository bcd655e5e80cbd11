"""What the examiner reads: the score card (headline, what it is, band, the disclosure), the review reasons on real
predictions, the word scores in the evidence panel, the API and the CSV exports, all escaped or neutralised. Real
clips (tests/data/speechocean762), the shipped grader and a tiny checkpoint trained with word heads, a real SQLite
file."""

import csv
import dataclasses
import json
import re

import numpy as np
import pytest
from peft.tuners.tuners_utils import BaseTunerLayer

from grader.audio import SAMPLE_RATE
from grader.inference import Grader
from grader.predict import main as predict_main
from grader.report import main as report_main
from grader.review import LOW_SCORE, Review, ReviewRule, review_reasons
from storage import Database
from ui import callbacks as cb
from ui.cards import ABOUT, STRETCHED, evidence_html, likely_range, result_card
from ui.config import AppConfig

TEXT = "WE CALL IT BEAR"
HOSTILE = '<img src=x onerror="alert(1)">'


@pytest.fixture(scope="module")
def shipped() -> Grader:
    return Grader.load(device="cpu")


@pytest.fixture(scope="module")
def labels(speechocean_clips) -> list[dict]:
    with open(speechocean_clips / "labels.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture(scope="module")
def word_checkpoint(tiny_whisper, small_manifest, speechocean_clips, tmp_path_factory):
    """A real checkpoint with word heads (accuracy, total), one epoch on the 36 bundled clips and their words."""
    from grader.train import main as train_main

    out = tmp_path_factory.mktemp("words") / "tiny-words"
    train_main(["--manifest", str(small_manifest), "--model", tiny_whisper, "--dev-speakers", "3", "--epochs", "1",
                "--batch-size", "8", "--target", "total,accuracy,fluency,prosodic", "--cache-dir", "",
                "--word-scores", str(speechocean_clips / "words.tsv"), "--word-target", "accuracy,total",
                "--out", str(out)])
    return out


@pytest.fixture
def services(word_checkpoint, tmp_path):
    config = AppConfig(data_dir=str(tmp_path / "data"), db=str(tmp_path / "grades.db"))
    (tmp_path / "work").mkdir()
    with Database.open(config.database_url) as db:
        yield cb.Services(config, Grader.load(word_checkpoint, device="cpu"), db, workdir=tmp_path / "work")


def test_the_card_says_what_its_one_number_is(shipped, speech_clip):
    """One headline number (the expected score), what it is in words, its band, its likely range; the other two
    numbers only behind "About this score", each with its sentence."""
    graded = cb.Graded(7, 9, shipped.assess(speech_clip, TEXT))
    p = graded.prediction
    card = result_card(graded)
    head = p.scores["total"]
    assert re.findall(r'<span class="score">([^<]*)</span>', card) == [f"{head.soft:.1f}"]
    assert "The grader's expected total score for this answer, on the speechocean762 scale (0–10)" in card
    band = next(b for b in ("0–3", "4–5", "6–7", "8–10") if round(head.soft, 1) < int(b.split("–")[1]) + 1)
    assert f'<span class="cefr">band {band}</span>' in card
    low, high, mass = likely_range(head.probs, p.scale)
    assert f"Likely range {low:g}–{high:g} ({mass:.0%} of the probability" in card and mass >= 0.8
    visible, about = card.split('<details class="about">')
    assert f"{head.regression:.2f}" not in visible and "regression" not in visible
    assert "<summary>About this score</summary>" in about
    for aspect, s in p.scores.items():
        assert f'<th scope="row">{aspect}</th><td>{s.soft:.2f}</td><td>{s.regression:.2f}</td><td>{s.hard:g}</td>' \
               in about
    for sentence in ABOUT.values():
        assert sentence in about
    assert p.stretch == 0.5 and STRETCHED.format(0.5) in about and "50% of the way" in about  # the shipped stretch
    assert p.blended == ["total", "accuracy", "fluency", "prosodic"] and p.blended_text  # read with its text
    assert "<strong>Blended</strong>: Total, accuracy, fluency and prosodic also weigh" in about
    assert "lowest and mean word accuracy" in about
    assert p.to_dict()["blended"] == p.blended and p.to_dict()["blended_text"]  # the API and grader.predict too
    textless = cb.Graded(7, 10, shipped.assess(speech_clip)).prediction  # no word scores: the probe on two aspects
    assert textless.blended == ["fluency", "prosodic"] and not textless.blended_text
    about = result_card(cb.Graded(7, 10, shipped.assess(speech_clip))).split('<details class="about">')[1]
    assert "Fluency and prosodic also weigh" in about and "word accuracy" not in about


def test_the_range_is_the_narrowest_run_holding_most_of_the_probability(shipped):
    probs = [0, 0, 0, 0.05, 0.1, 0.5, 0.3, 0.05, 0, 0, 0]
    assert likely_range(probs, shipped.scale) == (5.0, 6.0, pytest.approx(0.8))
    assert likely_range([1 / 11] * 11, shipped.scale)[:2] == (0.0, 8.0)


def test_hostile_text_on_the_card_is_escaped(shipped, speech_clip):
    graded = cb.Graded(1, 1, shipped.assess(speech_clip, TEXT))
    graded.prediction.checkpoint = HOSTILE
    graded.assessment.review = [Review('x" onmouseover="alert(1)', f"the reference {HOSTILE}")]
    card = result_card(graded)
    assert "<img" not in card and 'onmouseover="' not in card and "&lt;img src=x" in card


def test_review_reasons_on_real_predictions(shipped, labels, speechocean_clips):
    """The shipped grader on all 36 bundled clips: "low score" exactly where the headline is under 6.25, in words an
    examiner uses; the weak readers (experts' total 3-4) are flagged more often than the good ones."""
    assessed = shipped.assess_batch([speechocean_clips / r["audio"] for r in labels], [r["text"] for r in labels])
    flagged = {"weak": [], "good": []}
    for row, a in zip(labels, assessed):
        codes = [r.code for r in a.review]
        soft = a.prediction.scores["total"].soft
        assert ("low_score" in codes) == (soft < LOW_SCORE["speechocean762"]), (row["utt_id"], soft, codes)
        if "low_score" in codes:
            text = next(r.text for r in a.review if r.code == "low_score")
            assert text == (f"a low score ({soft:.1f}, under 6.25): the grader is least reliable for weak answers, "
                            "which it tends to score too high")
        group = "weak" if int(row["total"]) <= 4 else "good" if int(row["total"]) >= 8 else None
        if group:
            flagged[group].append(bool(codes))
    assert np.mean(flagged["weak"]) > np.mean(flagged["good"]) + 0.3, flagged
    prediction = assessed[0].prediction
    fluency = prediction.scores["fluency"]
    fluency.regression, fluency.soft = 5.0, 6.0
    reasons = review_reasons(prediction, rule=ReviewRule(low_score={}))
    assert [r.to_dict() for r in reasons] == [{"code": "heads_disagree", "text": "the grader's two estimates of "
                                               "fluency disagree (6.0 and 5.0): it is unsure of this answer"}]
    with pytest.raises(ValueError, match="heads_gap must be positive"):
        ReviewRule(heads_gap=0)


def test_the_review_figures_out_of_fold(tmp_path, capsys):
    """`grader.report RUN --review` on a hand-made run of 2 folds (10 responses), figures counted by hand."""
    aspects = ["total", "accuracy"]
    # (fold, expert total, soft, regression), accuracy as total; misgraded: |soft - expert| > 2
    rows = [(0, 3, 5.5, 5.5), (0, 8, 8.0, 8.1), (0, 9, 8.5, 8.4), (0, 7, 7.0, 5.9), (0, 4, 7.0, 7.0),
            (1, 3, 6.5, 6.4), (1, 8, 5.8, 5.7), (1, 9, 9.0, 9.0), (1, 2, 4.5, 4.4), (1, 8, 8.2, 8.3)]
    (tmp_path / "cv.json").write_text(json.dumps({"run": tmp_path.name, "training": {"model": {
        "aspects": aspects, "scale": "speechocean762", "objective": "fa+reg"}}}))
    with open(tmp_path / "oof.tsv", "w") as f:
        f.write("\t".join(["utt_id", "speaker", "fold", *[f"{a}{s}" for a in aspects
                                                        for s in ("", "_regression", "_soft", "_hard")], "review"]))
        for i, (fold, human, soft, regression) in enumerate(rows):
            f.write("\n" + "\t".join(map(str, [i, f"s{i}", fold, *[human, regression, soft, round(soft)] * 2, ""])))
    report_main([str(tmp_path), "--review"])
    out = capsys.readouterr().out
    # flagged: soft < 6.25 (rows 0, 6, 8) or heads > 0.75 apart (row 3): 4 of 10; misgraded: rows 0, 4, 5, 6, 8 (5);
    # caught: 0, 6, 8
    assert "| shipped: score under 6.25, or heads more than 0.75 step apart | 40.0 % | 3 of 5 | 0.75 | 0.60 |" in out
    assert "| reason: heads disagree | 10.0 % | 0 of 5 | 0.00 | 0.00 |" in out
    assert "| shipped, fold 1 alone | 40.0 % | 2 of 3 | 1.00 | 0.67 |" in out
    assert "thresholds chosen on the other folds" in out


def test_word_scores_in_the_panel_the_api_and_both_csvs(services, speechocean_clips, speech_clip, tmp_path):
    """A word-head checkpoint: each reference word's accuracy in the evidence panel (a chip per word, the figures
    on hover and for screen readers, a style per band), in the API result, in History's CSV (with every aspect's
    scores, floats rounded) and in Batch's."""
    hostile_candidate = "=HYPERLINK(\"http://x\")"
    graded = cb.grade_file(services, speech_clip, hostile_candidate, "part 1", TEXT)
    words = graded.prediction.words
    assert [w["word"] for w in words] == TEXT.split() and set(words[0]) == {"word", "accuracy", "total"}
    assert cb.result_json(graded)["words"] == words
    found = cb.evidence_for(services, graded)
    assert found.evidence["word_scores"]["words"] == words
    assert services.db.grade(graded.grade_id)["evidence"]["word_scores"]["words"] == words
    panel = evidence_html(found.evidence)
    chips = re.findall(r'<span class="wscore (w-\w+)" title="([^"]*)" aria-label="([^"]*)" tabindex="0">(\w+)</span>',
                       panel)
    assert [c[3] for c in chips] == TEXT.split()
    for (cls, title, label, word), w in zip(chips, words):
        assert title == label == f'{word}: accuracy {w["accuracy"]:.1f}, total {w["total"]:.1f} (of 10)'
        assert cls == ("w-poor" if w["accuracy"] < 5 else "w-fair" if w["accuracy"] < 8 else "w-good")

    with open(cb.export_history(services), newline="", encoding="utf-8") as f:
        [row] = list(csv.DictReader(f))
    assert row["candidate_id"] == "'" + hostile_candidate
    assert row["word_accuracy"] == "; ".join(f'{w["word"]} {w["accuracy"]:.1f}' for w in words)
    for aspect, s in graded.prediction.scores.items():
        assert float(row[f"{aspect}_soft"]) == round(s.soft, 3) and float(row[f"{aspect}_regression"]) == round(
            s.regression, 3)
    decimals = [len(v.split(".")[1]) for k, v in row.items() if k != "evidence" and re.fullmatch(r"-?\d+\.\d+", v)]
    assert decimals and max(decimals) <= 3

    items = [(speech_clip, "=cmd|' /C calc'!A0", "", TEXT), (speechocean_clips / "audio" / "000360013.flac", "b", "",
                                                               "")]
    header, rows, path = cb.grade_many(services, items)
    with open(path, newline="", encoding="utf-8") as f:
        written = list(csv.DictReader(f))
    assert header[-2:] == ["word_accuracy", "word_total"] and list(written[0]) == header
    assert written[0]["candidate"].startswith("'=") and written[0]["word_accuracy"].startswith("WE ")
    assert written[1]["word_accuracy"] == ""  # no reference text: no word scores


def test_without_word_scores_the_panel_says_why(services, tiny_checkpoint, speech_clip):
    graded = cb.grade_file(services, speech_clip)  # a word-head checkpoint, no reference text
    panel = evidence_html(cb.evidence_for(services, graded).evidence)
    assert "wscore" not in panel and "Word scores need a reference text: give the sentence the candidate read." \
           in panel
    note = Grader.load(tiny_checkpoint).assess(speech_clip, TEXT).prediction.words_note  # a grader without word heads
    evidence = {**cb.evidence_for(services, graded).evidence, "word_scores": {"words": [], "note": note}}
    assert "this checkpoint has no word heads" in evidence_html(evidence).lower()


def test_predict_prints_the_words(word_checkpoint, speech_clip, capsys):
    predict_main([str(speech_clip), "--text", TEXT, "--checkpoint", str(word_checkpoint)])
    out = json.loads(capsys.readouterr().out)
    assert [w["word"] for w in out["words"]] == TEXT.split() and "accuracy" in out["words"][0]


def test_the_evidence_step_uses_the_grades_audio_and_speech(services, speech_clip, tmp_path):
    """The evidence is built from what the grade decoded and heard: the file is gone by then, and the speech
    segments are the gate's, not found again."""
    copy = tmp_path / "answer.flac"
    copy.write_bytes(speech_clip.read_bytes())
    graded = cb.grade_file(services, copy, prompt=TEXT)
    copy.unlink()
    gate = graded.assessment.gate  # what the evidence must take as heard: the gate's first segment only
    graded.assessment.gate = dataclasses.replace(gate, speech=gate.speech[:1])
    found = cb.evidence_for(services, graded)
    first = graded.assessment.speech[0]
    assert found.evidence["speech"] == [[round(first.start, 3), round(first.end, 3)]]
    assert found.audio is graded.assessment.audio and len(found.audio) / SAMPLE_RATE == found.evidence["measures"][
        "duration_s"]


def test_stock_whisper_turns_the_adapters_off_and_holds_the_lock(shipped, speech_clip):
    """`Grader.stock_whisper` is how the transcript and the reference check reach Whisper: inside, no grade can
    run (the lock is held) and the LoRA adapters are off; after, even after an error, both are as they were."""
    audio = shipped.assess(speech_clip).audio
    lora = [m for m in shipped.model.backbone.model.modules() if isinstance(m, BaseTunerLayer)]
    assert lora and not any(m.disable_adapters for m in lora)
    with pytest.raises(RuntimeError, match="inside"):
        with shipped.stock_whisper() as whisper:
            assert whisper is shipped.model.backbone and shipped.lock.locked()
            assert all(m.disable_adapters for m in lora)
            raise RuntimeError("inside")
    assert not shipped.lock.locked() and not any(m.disable_adapters for m in lora)
    assert shipped.grade(audio).scores == shipped.grade(audio).scores


def test_hostile_words_and_notes_in_the_word_scores_are_escaped():
    from ui.cards import word_scores_html

    panel = word_scores_html({"words": [{"word": HOSTILE, "accuracy": 3.0, "total": 4.5},
                                        {"word": "bear", "accuracy": 9.1}], "note": None})
    assert "<img" not in panel and panel.count("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;") == 3
    assert 'class="wscore w-poor"' in panel and 'class="wscore w-good"' in panel
    assert "<img" not in word_scores_html({"words": [], "note": HOSTILE})
