import csv

import numpy as np
import pytest

from grader.audio import SAMPLE_RATE, load_audio
from grader.audio import GateConfig, GateResult, check_audio, inspect_file
from grader.augment import noise, reverb, telephone, through_codec
from grader.review import MIN_HIGH_BAND_DB, MIN_SNR_DB

RNG = np.random.default_rng(0)
MEASURES = {"duration_s", "speech_s", "speech_ratio", "peak_dbfs", "rms_dbfs", "clipped_fraction", "dc_offset",
            "snr_db", "high_band_db"}


@pytest.fixture(scope="module")
def speech(speech_clip) -> np.ndarray:
    return load_audio(speech_clip)


def seconds(n: float) -> int:
    return int(n * SAMPLE_RATE)


def test_real_speech_is_scorable(speech):
    result = check_audio(speech)
    assert result == GateResult(True, None, None, result.measures, result.speech) and result.speech
    assert set(result.measures) == MEASURES and 1.2 < result.measures["speech_s"] < 2.0


def test_real_clips_all_pass(speechocean_dir):
    """A false refusal of real speech is a bug: every 25th clip of speechocean762 (100 clips) must pass.
    (All 2,500 pass; that run takes a minute.)"""
    with open(speechocean_dir / "labels.tsv") as file:
        rows = list(csv.DictReader(file, delimiter="\t"))[::25]
    refused = [(row["utt_id"], row["text"], result.reason) for row in rows
               if not (result := inspect_file(speechocean_dir / row["audio"])[1]).scorable]
    assert len(rows) >= 100 and refused == []


@pytest.mark.parametrize("make, code", [
    (lambda: np.zeros(seconds(3)), "silent"),
    (lambda: np.full(seconds(3), 0.4), "silent"),  # DC alone is silence
    (lambda: RNG.standard_normal(seconds(3)) * 1e-4, "silent"),  # an unplugged microphone's hiss
    (lambda: RNG.standard_normal(seconds(3)) * 0.2, "no_speech"),
    (lambda: 0.5 * np.sin(2 * np.pi * 440 * np.arange(seconds(3)) / SAMPLE_RATE), "no_speech"),
    (lambda: 0.5 * np.sign(np.sin(2 * np.pi * 200 * np.arange(seconds(3)) / SAMPLE_RATE)), "no_speech"),
    (lambda: np.zeros(seconds(0.4)), "too_short"),
    (lambda: np.zeros(0), "too_short"),
    (lambda: RNG.standard_normal(seconds(121)) * 0.1, "too_long"),
], ids=["zeros", "dc", "hiss", "white-noise", "tone", "square-wave", "short", "empty", "long"])
def test_refuses_what_is_not_speech(make, code):
    result = check_audio(make())
    assert not result.scorable and result.code == code and result.reason.endswith(".")


def test_messages(speech):
    assert check_audio(np.zeros(seconds(0.4))).reason == "Too short (0.4 s; at least 1.0 s)."
    assert check_audio(np.zeros(seconds(3))).reason == "No speech detected: the recording is silent."
    assert check_audio(np.clip(speech * 4, -1, 1)).reason.startswith("The recording is clipped (")
    assert check_audio(speech, GateConfig(min_speech_seconds=5)).reason == \
        "Too little speech (1.4 s; at least 5.0 s is needed)."
    assert check_audio(speech, GateConfig(max_seconds=2)).reason == "Too long (2.6 s; at most 2.0 s)."


def test_dc_offset_speech_is_scorable_and_measured(speech):
    result = check_audio(speech + 0.3)
    assert result.scorable and abs(result.measures["dc_offset"] - 0.3) < 0.01
    assert result.measures["rms_dbfs"] == pytest.approx(check_audio(speech).measures["rms_dbfs"], abs=0.01)


def test_quiet_speech_is_heard(speech):
    """Silero misses quiet speech; the gate normalises the level first."""
    assert check_audio(speech * 0.02).scorable


def test_clipping_counts_runs_not_peaks(speech):
    spiky = speech.copy()
    spiky[::400] = 1.0  # isolated full-scale samples: 0.25% of samples, no runs
    assert check_audio(spiky).measures["clipped_fraction"] == 0
    clipped = check_audio(np.clip(speech * 4, -1, 1))
    assert clipped.code == "clipped" and clipped.measures["clipped_fraction"] > 0.05


def test_speech_lost_in_a_long_recording(speech):
    audio = RNG.standard_normal(seconds(60)) * 1e-3
    audio[seconds(30):seconds(30) + len(speech)] += speech
    result = check_audio(audio)
    assert result.code == "too_little_speech" and "in 60.0 s of recording" in result.reason


def test_invalid_samples_do_not_raise():
    result = check_audio(np.array([0.1, np.nan, np.inf] * 20_000))
    assert result.code == "unreadable" and "NaN" in result.reason



def test_noise_lowers_the_speech_over_background_measure_and_gain_does_not(speechocean_clips):
    """On the bundled real clips: clean ones stand above the noisy-recording threshold, the same clips under pink
    noise at 10 dB fall below it, and a microphone 20 dB quieter measures the same."""
    clips = [load_audio(path) for path in sorted((speechocean_clips / "audio").iterdir())]
    rng = np.random.default_rng(0)
    clean = np.array([check_audio(a).measures["snr_db"] for a in clips])
    noisy = np.array([check_audio(noise(a, rng, 10).astype(np.float32)).measures["snr_db"] for a in clips])
    quiet = np.array([check_audio(a * 0.1).measures["snr_db"] for a in clips])
    assert len(clips) >= 30
    assert np.mean(clean >= MIN_SNR_DB) >= 0.9 and np.all(noisy < MIN_SNR_DB)
    assert np.all(noisy < clean - 5) and np.abs(quiet - clean).max() < 0.5


def test_a_telephone_band_empties_the_upper_band_and_codecs_do_not(speechocean_clips):
    """On the bundled real clips: clean ones stand above the narrowband threshold, and so do they after MP3 at 32
    kbps, a small room or a quieter microphone; through a telephone band all of them fall far below it."""
    clips = [load_audio(path) for path in sorted((speechocean_clips / "audio").iterdir())]
    rng = np.random.default_rng(0)

    def high_band(audios) -> np.ndarray:
        return np.array([check_audio(np.asarray(a, dtype=np.float32)).measures["high_band_db"] for a in audios])

    clean = high_band(clips)
    assert np.mean(clean >= MIN_HIGH_BAND_DB) >= 0.95
    assert np.all(high_band(telephone(a) for a in clips) < min(MIN_HIGH_BAND_DB, clean.min()) - 5)
    for changed in ([through_codec(a, "mp3", 32_000) for a in clips[:10]], [reverb(a, rng) for a in clips[:10]],
                    [a * 0.1 for a in clips[:10]]):
        assert np.abs(high_band(changed) - clean[:10]).max() < 6

