"""One grade pipeline: the app, `grader.predict`, `grader.evaluate` and `Grader.assess` grade a recording the same way
(gate, trim, model, review); the silence around an answer does not move its score; and an answer that does not read
its reference text is flagged. Real clips (tests/data/speechocean762), real checkpoints: the tiny one trained on
them for the wiring, the shipped one where the figures mean something."""

import json

import numpy as np
import pytest
import soundfile as sf

from grader.audio import SAMPLE_RATE, load_audio
from grader.augment import noise, reverb, telephone
from grader.evaluate import main as evaluate_main
from grader.inference import AssessOptions, Grader
from grader.predict import main as predict_main
from storage import Database
from ui import callbacks as cb
from ui.config import AppConfig

TEXT = "WE CALL IT BEAR"


@pytest.fixture(scope="module")
def shipped() -> Grader:
    return Grader.load(device="cpu")


@pytest.fixture(scope="module")
def labels(speechocean_clips) -> list[dict]:
    lines = (speechocean_clips / "labels.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def room_tone(seconds: float, seed: int = 0) -> np.ndarray:
    """Pink noise at -60 dBFS RMS: a quiet room, as a microphone hears it before the candidate speaks."""
    n = int(seconds * SAMPLE_RATE)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    pink = np.fft.irfft(spectrum / np.sqrt(np.maximum(np.arange(len(spectrum)), 1)), n)
    return (pink / np.sqrt(np.mean(pink ** 2)) * 10 ** (-60 / 20)).astype(np.float32)


def scores(d: dict) -> dict:
    return {a: (round(s["regression"], 3), round(s["soft"], 3)) for a, s in d["scores"].items()}


def test_every_door_gives_the_same_grade(tiny_checkpoint, speech_clip, tmp_path, capsys):
    """The app's Grade callback, `grader.predict`, `grader.evaluate` and the front door itself, on one file."""
    front = Grader.load(tiny_checkpoint, device="cpu").assess(speech_clip, TEXT).to_dict()

    config = AppConfig(data_dir=str(tmp_path / "data"), db=str(tmp_path / "grades.db"))
    (tmp_path / "work").mkdir()
    with Database.open(config.database_url) as db:
        services = cb.Services(config, Grader.load(tiny_checkpoint, device="cpu"), db, workdir=tmp_path / "work")
        app = cb.result_json(cb.grade_file(services, speech_clip, prompt=TEXT))

    predict_main([str(speech_clip), "--text", TEXT, "--checkpoint", str(tiny_checkpoint)])
    printed = json.loads(capsys.readouterr().out)

    manifest = tmp_path / "one.tsv"
    manifest.write_text(f"utt_id\taudio\ttext\ttotal\nclip\t{speech_clip}\t{TEXT}\t8\n")
    evaluate_main(["--manifest", str(manifest), "--checkpoint", str(tiny_checkpoint), "--predictions",
                   str(tmp_path / "scores.tsv")])
    header, row = [line.split("\t") for line in (tmp_path / "scores.tsv").read_text().splitlines()]
    value = dict(zip(header, row))
    evaluated = {a: (round(float(value[f"{a}_regression"]), 3), round(float(value[f"{a}_soft"]), 3))
                 for a in front["scores"]}

    assert scores(front) == scores(app) == scores(printed) == evaluated
    same = {k: v for k, v in printed.items() if k not in ("file", "latency_s")}
    assert same == {k: v for k, v in app.items() if k not in ("response_id", "grade_id", "latency_s")}
    assert {"review", "reference", "cefr", "gate_code"} <= set(printed)
    assert all(set(r) == {"code", "text"} for r in printed["review"])


def test_predict_prints_the_gates_refusal_and_no_score(tiny_checkpoint, tmp_path, capsys):
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(3 * SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE)
    predict_main([str(silence), "--checkpoint", str(tiny_checkpoint)])
    out = json.loads(capsys.readouterr().out)
    assert out == {"file": str(silence), "scorable": False, "gate_code": "silent",
                   "gate_reason": "No speech detected: the recording is silent."}


def test_silence_before_the_answer_does_not_move_its_score(shipped, labels, speechocean_clips):
    """2 s of room tone before the answer and 0.5 s after: trimmed to the speech, the score is the clean clip's
    within a few hundredths; graded whole (as before trimming), it moves much more."""
    clips = [load_audio(speechocean_clips / r["audio"]) for r in labels[::3]]
    texts = [r["text"] for r in labels[::3]]
    padded = [np.concatenate([room_tone(2.0, i), a, room_tone(0.5, 100 + i)]) for i, a in enumerate(clips)]

    def totals(audios: list[np.ndarray], options: AssessOptions | None = None) -> np.ndarray:
        return np.array([a.prediction.scores["total"].soft for a in shipped.assess_batch(audios, texts, options)])

    trimmed = np.abs(totals(padded) - totals(clips))
    whole = np.abs(totals(padded, AssessOptions(trim_margin_s=None)) - totals(clips, AssessOptions(trim_margin_s=None)))
    assert trimmed.max() <= 0.15 and trimmed.mean() <= 0.05, trimmed.round(3)
    assert whole.mean() > 3 * trimmed.mean(), (whole.round(3), trimmed.round(3))


def test_an_answer_to_another_text_is_flagged(shipped, labels, speechocean_clips):
    """Good readers' clips graded with their own reference text are not flagged; graded with another clip's text
    they are, and the card's sentence says how many of its words were heard."""
    good = [r for r in labels if int(r["accuracy"]) >= 8]
    paths = [speechocean_clips / r["audio"] for r in good]
    own = shipped.assess_batch(paths, [r["text"] for r in good])
    other = shipped.assess_batch(paths, [good[(i + 5) % len(good)]["text"] for i in range(len(good))])

    def flagged(assessments) -> list[bool]:
        return [any(r.code == "reference_mismatch" for r in a.review) for a in assessments]

    assert sum(flagged(own)) <= 1, [(r["utt_id"], a.reference) for r, a in zip(good, own)]
    assert sum(flagged(other)) >= 0.9 * len(good), [(r["utt_id"], a.reference) for r, a in zip(good, other)]
    a = next(a for a in other if flagged([a])[0])
    reason = next(r for r in a.review if r.code == "reference_mismatch")
    assert reason.text == (f"the answer does not match the reference text ({a.reference.found} of "
                           f"{a.reference.words} words)")
    assert a.to_dict()["reference"] == {"words": a.reference.words, "found": a.reference.found}


def test_an_answer_to_another_text_scores_as_not_read(shipped, labels, speechocean_clips):
    """The score itself depends on the answer reading its task (grader.train --mismatch): good readers' clips
    graded with another clip's sentence score low on accuracy and total (the scale's weak band), while fluency and
    prosody, how the answer was spoken, stay near what their own text gives."""
    good = [r for r in labels if int(r["accuracy"]) >= 8]
    paths = [speechocean_clips / r["audio"] for r in good]
    own = [a.prediction.scores for a in shipped.assess_batch(paths, [r["text"] for r in good])]
    other = [a.prediction.scores for a in
             shipped.assess_batch(paths, [good[(i + 5) % len(good)]["text"] for i in range(len(good))])]
    for aspect in ("total", "accuracy"):
        assert np.mean([o[aspect].soft for o in own]) >= 7, aspect
        assert max(o[aspect].soft for o in other) < 4, [round(o[aspect].soft, 2) for o in other]
    for aspect in ("fluency", "prosodic"):
        drop = np.mean([a[aspect].soft - o[aspect].soft for a, o in zip(own, other)])
        assert drop < 1.5, (aspect, drop)


CHANNELS = {  # review code: (the channel it is for, the sentence it gives for the assessment)
    "noisy_recording": (lambda a, rng: noise(a, rng, 10),
                        lambda a: f"a noisy recording (the speech stands {a.gate.measures['snr_db']:.0f} dB above the "
                                  "background): noise can move the score; re-record somewhere quieter if you can"),
    "narrowband_recording": (lambda a, rng: telephone(a),
                             lambda a: "a narrowband recording, as through a telephone line (little above 4 kHz): "
                                       "the band can move the score; record through a microphone, not a call, if "
                                       "you can"),
    "reverberant_recording": (lambda a, rng: reverb(a, rng, 0.5),
                              lambda a: "a reverberant recording, as in an echoing room (the grader hears a room at "
                                        f"{a.channel.probabilities['room']:.0%}): the room can move the score; "
                                        "record closer to the microphone or in a smaller, furnished room if you can"),
}


@pytest.mark.parametrize("code", CHANNELS)
def test_a_noisy_narrowband_or_reverberant_recording_is_flagged_at_every_door(code, shipped, labels,
                                                                               speechocean_clips, tmp_path, capsys):
    """Real clips under pink noise at 10 dB, through a telephone band or in a room (RT60 0.5 s) are graded with
    that review reason, the same clips clean without it; `grader.predict`'s JSON carries the code and the
    sentence."""
    channel, sentence = CHANNELS[code]
    rows = labels[:8]
    clean = [load_audio(speechocean_clips / r["audio"]) for r in rows]
    rng = np.random.default_rng(0)
    changed = [channel(a, rng).astype(np.float32) for a in clean]
    texts = [r["text"] for r in rows]

    def flagged(assessments) -> list[bool]:
        return [any(r.code == code for r in a.review) for a in assessments]

    assert sum(flagged(shipped.assess_batch(clean, texts))) <= 1
    assessed = shipped.assess_batch(changed, texts)
    assert all(flagged(assessed))
    reason = next(r for r in assessed[0].review if r.code == code)
    assert reason.text == sentence(assessed[0])
    sf.write(tmp_path / "changed.wav", changed[0], SAMPLE_RATE)
    predict_main([str(tmp_path / "changed.wav"), "--text", texts[0]])
    printed = json.loads(capsys.readouterr().out)
    assert {"code": code, "text": reason.text} in printed["review"]
    assert printed["channel"]["reverberant"] == (code == "reverberant_recording")


def test_an_open_answer_is_not_checked(shipped, speech_clip):
    """No reference text: nothing to match, so no mismatch is claimed (`reference` is None)."""
    a = shipped.assess(speech_clip)
    assert a.scorable and a.reference is None and a.to_dict()["reference"] is None
    assert "reference_mismatch" not in [r.code for r in a.review]


def test_the_front_door_hands_the_evidence_its_audio_and_speech(shipped, speech_clip):
    """The assessment keeps the decoded recording (whole: word times are times in it) and the gate's speech."""
    a = shipped.assess(speech_clip, TEXT)
    assert np.array_equal(a.audio, load_audio(speech_clip)) and a.speech and a.speech == list(a.gate.speech)
    assert 0 < a.speech[0].start < a.speech[-1].end <= len(a.audio) / SAMPLE_RATE
