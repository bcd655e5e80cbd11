"""The channel probe (grader.channel): fitted on real encoder states it tells a room from clean speech, survives its
file, and its reading turns into the review reason. Real clips (tests/data/speechocean762), the shipped
checkpoint's encoder and probe; the corpus-wide figures are benchmarks/bench_channel.py's."""

import shutil

import numpy as np
import pytest

from grader.audio import load_audio, trim_to_speech
from grader.augment import noise, reverb, telephone
from grader.channel import CLASSES, ChannelProbe, ChannelReading, choose_threshold, fit, main as channel_main
from grader.channel import out_of_fold, pooled
from grader.inference import Grader, encode_audios
from grader.review import review_reasons


@pytest.fixture(scope="module")
def shipped() -> Grader:
    return Grader.load(device="cpu")


@pytest.fixture(scope="module")
def views(shipped, speechocean_clips):
    """Pooled encoder states of 24 real clips and of each through noise, a room and a telephone band (training's
    four classes), with each row's class and a fold by clip."""
    paths = sorted((speechocean_clips / "audio").glob("*.flac"))[:24]
    rng = np.random.default_rng(0)
    clean = [load_audio(p) for p in paths]
    channels = [clean, [noise(a, rng, 10) for a in clean], [reverb(a, rng, 0.5) for a in clean],
                [telephone(a) for a in clean]]
    features, labels, folds = [], [], []
    for k, audios in enumerate(channels):
        states = encode_audios(shipped.model, [trim_to_speech(a.astype(np.float32)) for a in audios])
        features += [pooled(s) for s in states]
        labels += [k] * len(audios)
        folds += [i % 3 for i in range(len(audios))]
    return np.array(features), np.array(labels), np.array(folds), states


def test_a_probe_fitted_on_encoder_states_tells_the_room_and_survives_its_file(views, tmp_path):
    features, labels, folds, states = views
    room = out_of_fold(features, labels, folds, strength=1.0)  # fitted on 16 clips, read on the other 8, thrice
    assert room[labels == 2].mean() > 0.5 > room[labels == 0].mean(), room.round(2)
    chosen = choose_threshold(room, labels, max_false_alarm=0.05)
    assert chosen["flagged"]["clean"] <= 0.05 and set(chosen["flagged"]) == set(CLASSES)
    probe = fit(features, labels, chosen["room_threshold"])
    assert probe.classes == list(CLASSES)
    probe.save(tmp_path)
    again = ChannelProbe.load(tmp_path)
    assert again == probe and ChannelProbe.load(tmp_path / "none") is None
    reading = again.read(states[0])  # a telephone clip's states
    assert max(reading.probabilities, key=reading.probabilities.get) == "telephone"
    assert abs(sum(reading.probabilities.values()) - 1) < 1e-6


def test_the_shipped_probe_flags_rooms_not_clean_clips(shipped, speechocean_clips):
    """All 36 bundled clips, clean and in a room (RT60 0.4 s, benchmarks' small room): the shipped probe
    (checkpoints/default/channel.json) flags at most 2 clean ones and at least 30 in the room."""
    assert shipped.channel is not None, "the shipped checkpoint has no channel.json"
    clean = [load_audio(p) for p in sorted((speechocean_clips / "audio").glob("*.flac"))]
    rng = np.random.default_rng(1)
    roomy = [reverb(a, rng, 0.4).astype(np.float32) for a in clean]
    flags = [[a.channel.reverberant for a in shipped.assess_batch(audios)] for audios in (clean, roomy)]
    assert sum(flags[0]) <= 2 and sum(flags[1]) >= 30, flags


def test_a_reading_over_the_threshold_is_a_review_reason(shipped, speech_clip):
    prediction = shipped.assess(speech_clip).prediction
    probabilities = {"clean": 0.05, "noise": 0.03, "room": 0.9, "telephone": 0.02}
    over, under = ChannelReading(probabilities, 0.85), ChannelReading(probabilities, 0.95)
    assert over.reverberant and not under.reverberant
    assert "reverberant_recording" in [r.code for r in review_reasons(prediction, channel=over)]
    assert "reverberant_recording" not in [r.code for r in review_reasons(prediction, channel=under)]
    assert over.to_dict() == {"probabilities": probabilities, "room_threshold": 0.85, "reverberant": True}


def test_the_command_fits_a_checkpoints_probe_that_grading_then_reads(tiny_checkpoint, small_manifest, tmp_path):
    """`python -m grader.channel CKPT --manifest`: training's views of the 36 bundled clips (encoded and cached on
    the way), a threshold chosen out of fold by speaker, `channel.json` in the checkpoint; `Grader.load` then reads
    every scorable answer with it."""
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, checkpoint)
    probe = channel_main([str(checkpoint), "--manifest", str(small_manifest), "--folds", "3",
                          "--max-false-alarm", "0.2", "--cache-dir", str(tmp_path / "cache")])
    assert probe.report["clips"] == 36 and probe.report["rows"] == 36 * len(CLASSES)
    assert 0.5 <= probe.room_threshold <= 0.99 and probe.report["out_of_fold"]["flagged"]["clean"] <= 0.2
    assert ChannelProbe.load(checkpoint) == probe
    grader = Grader.load(checkpoint, device="cpu")
    a = grader.assess(small_manifest.parent / "audio" / "000010011.flac")
    assert a.channel is not None and a.channel.room_threshold == probe.room_threshold
    assert a.to_dict()["channel"]["reverberant"] == a.channel.reverberant
