"""The evidence beside a score, on real speech (speechocean762) with the shipped grader's Whisper (tiny.en): speech rate
against the reference text, pauses where silence was put, the word comparison, phone detail, scores untouched by
transcription, and the evidence stored, listed and exported with its grade."""

import csv
import json

import gradio as gr
import numpy as np
import pytest

from grader.evidence import phones
from grader.evidence.alignment import align, counts, spoken_words
from grader.audio import SAMPLE_RATE, load_audio
from grader.evidence import build_evidence
from grader.evidence.fluency import measure
from grader.inference import DEFAULT_CHECKPOINT, Grader
from grader.evidence.transcribe import Word, transcribe
from grader.audio import SpeechSegment, at_typical_level, speech_segments
from storage import Database
from ui import callbacks as cb
from ui.config import AppConfig
from ui.cards import evidence_html


@pytest.fixture(scope="module")
def grader() -> Grader:
    if not (DEFAULT_CHECKPOINT / "grader.json").is_file():
        pytest.fail(f"the default checkpoint is missing from {DEFAULT_CHECKPOINT}")
    return Grader.load(device="cpu")


@pytest.fixture(scope="module")
def labels(speechocean_clips) -> list[dict]:
    with open(speechocean_clips / "labels.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def clip(folder, utt_id: str) -> np.ndarray:
    return load_audio(folder / "audio" / f"{utt_id}.flac")


def background(audio: np.ndarray, seconds: float) -> np.ndarray:
    """`seconds` of the recording's own room noise: its silence before the first speech, repeated."""
    lead = audio[: int(speech_segments(at_typical_level(audio))[0].start * SAMPLE_RATE)]
    return np.tile(lead, int(np.ceil(seconds * SAMPLE_RATE / len(lead))))[: int(seconds * SAMPLE_RATE)]


def test_speech_rate_matches_the_reference_text(grader, labels, speechocean_clips):
    """Words per minute from the transcript against the reference text's word count over the same speaking span,
    on 12 clips the experts rated 8+ for accuracy (every other bundled clip with that rating: 8 speakers)."""
    chosen = [r for r in labels if int(r["accuracy"]) >= 8][::2]
    assert len(chosen) == 12
    errors = []
    for row in chosen:
        evidence = build_evidence(grader, clip(speechocean_clips, row["utt_id"]))
        m = evidence["measures"]
        expected = 60 * len(spoken_words(row["text"])) / m["span_s"]
        errors.append(abs(m["speech_rate_wpm"] / expected - 1))
        assert 0 < m["span_s"] <= m["duration_s"] and m["phonation_s"] <= m["span_s"]
        assert m["articulation_rate_sps"] >= m["speech_rate_sps"] > 0
    within = sum(e <= 0.15 for e in errors)
    assert within >= 8 and np.median(errors) <= 0.05, [round(e, 2) for e in errors]


def test_each_word_plays_speech_and_the_rate_is_plausible(grader, labels, speechocean_clips):
    """Every bundled clip (children's quiet voices among them) through the front door, its evidence built on the
    grade's audio and speech: each transcript word lasts 0.1 s at least, and what "play word" plays is speech, well
    above the room tone (the 10th-percentile level of the recording's 32-ms frames): 10 dB at the least, 20 dB for
    the median word; and the speech rate is one people read at (40-300 words/min)."""
    margins, rates = [], []
    for row in labels:
        a = grader.assess(speechocean_clips / row["audio"], row["text"])
        evidence = build_evidence(grader, a.audio, None, a.speech)
        audio = a.audio - a.audio.mean()
        frames = audio[: len(audio) // 512 * 512].reshape(-1, 512).astype(np.float64)
        tone = np.percentile(10 * np.log10((frames ** 2).mean(1) + 1e-12), 10)
        for w in evidence["transcript"]["words"]:
            assert w["end"] - w["start"] >= 0.1 - 1e-3, (row["utt_id"], w)
            played = audio[int(w["start"] * SAMPLE_RATE): int(w["end"] * SAMPLE_RATE)].astype(np.float64)
            margins.append((10 * np.log10((played ** 2).mean() + 1e-12) - tone, row["utt_id"], w["text"]))
        rates.append((evidence["measures"]["speech_rate_wpm"], row["utt_id"]))
    assert min(margins)[0] >= 10 and np.median([m[0] for m in margins]) >= 20, sorted(margins)[:5]
    assert 40 <= min(rates)[0] and max(rates)[0] <= 300, (min(rates), max(rates))


def test_silence_around_the_speech_does_not_change_the_rates(grader, speechocean_clips):
    audio = clip(speechocean_clips, "000360013")  # "IT'S JUST SO HARD TO PICTURE"
    padded = np.concatenate([background(audio, 1.5), audio, background(audio, 1.0)])
    plain, more = (build_evidence(grader, a)["measures"] for a in (audio, padded))
    assert more["duration_s"] == pytest.approx(plain["duration_s"] + 2.5, abs=0.01)
    assert more["span_s"] == pytest.approx(plain["span_s"], abs=0.05)
    assert more["speech_rate_wpm"] == pytest.approx(plain["speech_rate_wpm"], rel=0.05)


def test_an_inserted_second_of_silence_is_found_where_it_was_put(grader, speechocean_clips):
    audio = clip(speechocean_clips, "020590164")  # "I KNOW HOW TO PROGRAM", no pause of its own
    longest = max(speech_segments(at_typical_level(audio)), key=lambda s: s.end - s.start)
    at = (longest.start + longest.end) / 2  # inside speech, so the inserted second is the whole pause there
    cut = int(at * SAMPLE_RATE)
    before = build_evidence(grader, audio)
    after = build_evidence(grader, np.concatenate([audio[:cut], background(audio, 1.0), audio[cut:]]))
    assert after["measures"]["pauses"] == before["measures"]["pauses"] + 1
    (found,) = [p for p in after["pauses"] if p["duration"] >= 0.5]
    assert found["start"] == pytest.approx(at, abs=0.15) and found["duration"] == pytest.approx(1.0, abs=0.15)
    words = [w["text"] for w in after["transcript"]["words"]]
    assert found["after"] in words and found["before"] in words  # Whisper's word times are only ±0.1-0.2 s
    assert after["measures"]["longest_pause_s"] == found["duration"]
    assert after["measures"]["phonation_ratio"] < before["measures"]["phonation_ratio"]


def test_pause_measures_add_up():
    speech = [SpeechSegment(0.5, 1.5), SpeechSegment(1.6, 2.0), SpeechSegment(3.0, 4.0)]
    words = [Word("one", 0.5, 1.0, 0.9), Word("two", 1.0, 1.5, 0.9), Word("three", 1.6, 2.0, 0.9),
             Word("seven", 3.0, 4.0, 0.9)]
    m, pauses = measure(speech, words, 5.0)
    assert [(p.start, p.end, p.after, p.before) for p in pauses] == [(2.0, 3.0, "three", "seven")]  # 0.1 s: no pause
    assert (m.span_s, m.phonation_s, m.pauses, m.longest_pause_s, m.phonation_ratio) == (3.5, 2.5, 1, 1.0, 2.5 / 3.5)
    assert (m.words, m.syllables) == (4, 5) and m.speech_rate_wpm == pytest.approx(60 * 4 / 3.5)
    assert m.articulation_rate_sps == pytest.approx(5 / 2.5)


def test_word_alignment_finds_each_kind_of_edit():
    heard = ["It's", "just", "so", "hard", "to", "picture."]
    ops = align("IT'S JUST SO HARD TO PICTURE", heard)
    assert counts(ops) == {"correct": 6, "substituted": 0, "omitted": 0, "inserted": 0}
    ops = align("IT'S JUST SO VERY HARD TO PICTURE", heard)
    assert [(o.op, o.reference) for o in ops if o.op != "correct"] == [("omitted", "very")]
    ops = align("IT'S SO HARD TO PICTURE", heard)
    assert [(o.op, o.heard) for o in ops if o.op != "correct"] == [("inserted", 1)]
    ops = align("IT'S JUST SO HARD TO CAPTURE", heard)
    assert [(o.op, o.reference, o.heard) for o in ops if o.op != "correct"] == [("substituted", "capture", 5)]
    assert [o.heard for o in align("well-known", ["Well-", "known."])] == [0, 1]


def test_reference_comparison_on_real_speech(grader, speechocean_clips):
    audio = clip(speechocean_clips, "000360013")
    assert transcribe(grader, audio).text == "It's just so hard to picture."
    evidence = build_evidence(grader, audio, "IT'S JUST SO VERY HARD TO CAPTURE")
    ref = evidence["reference"]
    assert ref["counts"] == {"correct": 5, "substituted": 1, "omitted": 1, "inserted": 0}
    very, capture = ref["words"][3], ref["words"][-1]
    assert (very["op"], very["heard"], very["start"]) == ("omitted", None, None)
    assert (capture["op"], capture["heard"], capture["likely_mispronounced"]) == ("substituted", "picture.", True)
    assert capture["phones"]["expected"] == "k æ p t͡ʃ ɚ" and capture["phones"]["errors"] >= 1
    words = evidence["transcript"]["words"]
    assert [w["start"] < w["end"] for w in words] == [True] * 6
    assert all(a["end"] <= b["start"] + 1e-3 for a, b in zip(words, words[1:]))
    assert json.loads(json.dumps(evidence)) == evidence and evidence["version"] == 1


def test_phone_detail_tells_good_readers_from_weak_ones(labels, speechocean_clips):
    """Mean phone accuracy of the reference words (hama's recogniser against the dictionary) over the 22 bundled
    clips the experts rated 9+ for accuracy (8 speakers), and the 12 rated 4 or less (4 other speakers)."""
    def accuracy(row) -> float:
        detail = phones.compare(spoken_words(row["text"]), phones.recognise(clip(speechocean_clips, row["utt_id"])))
        return float(np.mean([w.accuracy for w in detail if w]))

    good = [accuracy(r) for r in labels if int(r["accuracy"]) >= 9]
    weak = [accuracy(r) for r in labels if int(r["accuracy"]) <= 4]
    assert (len(good), len(weak)) == (22, 12)
    assert np.mean(good) > np.mean(weak) + 0.15, (np.mean(good), np.mean(weak))


def test_phone_comparison_counts_only_real_differences():
    [we, call] = phones.compare(["we", "call"], ["w", "i", "k", "ɑ", "l"])  # ɑ for ɔ: the cot-caught merger
    assert (we.errors, call.errors, call.heard) == (0, 0, ["k", "ɑ", "l"])
    [three, two] = phones.compare(["three", "two"], ["s", "ɹ", "i", "t", "u", "u"])
    assert (three.expected, three.heard, three.errors) == (["θ", "ɹ", "i"], ["s", "ɹ", "i"], 1)
    assert three.accuracy == pytest.approx(2 / 3)
    assert (two.heard, two.errors) == (["t", "u", "u"], 1)


def test_transcribing_leaves_the_scores_and_the_model_as_they_were(grader, speechocean_clips):
    audio = clip(speechocean_clips, "000010011")
    model = grader.model.backbone.model
    trainable = {n for n, p in grader.model.named_parameters() if p.requires_grad}
    attention = model.config._attn_implementation
    first = grader.grade(audio, "WE CALL IT BEAR")
    transcript = transcribe(grader, audio)
    second = grader.grade(audio, "WE CALL IT BEAR")
    assert transcript.words and first.scores == second.scores
    assert {n for n, p in grader.model.named_parameters() if p.requires_grad} == trainable
    assert model.config._attn_implementation == attention


def test_evidence_is_stored_listed_and_exported_with_its_grade(grader, speechocean_clips, tmp_path):
    config = AppConfig(data_dir=str(tmp_path / "data"), db=str(tmp_path / "grades.db"))
    (tmp_path / "work").mkdir()
    with Database.open(config.database_url) as db:
        services = cb.Services(config, grader, db, workdir=tmp_path / "work")
        path = speechocean_clips / "audio" / "000360013.flac"
        graded = cb.grade_file(services, path, "cand-9", "read aloud", "IT'S JUST SO HARD TO PICTURE")
        found = cb.evidence_for(services, graded)
        stored = db.grade(graded.grade_id)
        assert stored["evidence"] == found.evidence
        assert stored["regression"] == graded.prediction.scores["total"].regression

        [row] = cb.history_rows(services)
        assert row[-1] == "It's just so hard to picture." and row[cb.HISTORY_COLUMNS.index("words/min")] == round(
            found.evidence["measures"]["speech_rate_wpm"], 1)
        with open(cb.export_history(services), newline="", encoding="utf-8") as f:
            [exported] = list(csv.DictReader(f))
        assert json.loads(exported["evidence"]) == found.evidence
        assert float(exported["speech_rate_wpm"]) == found.evidence["measures"]["speech_rate_wpm"]

        panel, figure, picker, _ = cb.evidence_outputs(found)
        assert "It&#x27;s" in panel and "6 read as written" in panel and len(figure.data) == 2
        rate, samples = cb.word_audio(found, 3)  # "hard"
        w = found.evidence["transcript"]["words"][3]
        assert rate == SAMPLE_RATE and len(samples) == pytest.approx((w["end"] - w["start"] + 0.1) * rate, abs=2)
        with pytest.raises(gr.Error, match="Grade a response first"):
            cb.evidence_for(services, None)


def test_evidence_html_escapes_what_it_shows(grader, speechocean_clips):
    evidence = build_evidence(grader, clip(speechocean_clips, "000360013"), "IT'S <b>JUST</b> SO HARD")
    evidence["transcript"]["words"][0]["text"] = "<script>alert(1)</script>"
    panel = evidence_html(evidence)
    assert "<script>" not in panel and "&lt;script&gt;" in panel and "<b>" not in panel


def test_predict_prints_the_evidence_beside_the_scores(speechocean_clips, capsys):
    from grader.predict import main

    main([str(speechocean_clips / "audio" / "000360013.flac"), "--text", "IT'S JUST SO HARD TO PICTURE", "--evidence"])
    out = json.loads(capsys.readouterr().out)
    assert "total" in out["scores"] and out["evidence"]["reference"]["counts"]["correct"] == 6
