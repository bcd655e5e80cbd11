import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from grader.audio import SAMPLE_RATE, AudioError, AudioLimits, load_audio
from grader.audio import speech_segments, trim_to_speech

REPO = Path(__file__).resolve().parents[1]


def test_decodes_real_flac(speech_clip):
    audio = load_audio(speech_clip)
    assert audio.dtype == np.float32 and len(audio) == 41280  # 2.58 s at 16 kHz
    segments = speech_segments(audio)
    assert segments and 0.3 < segments[0].start < 1.0 and segments[-1].end > 1.8


def test_resamples_and_downmixes(tmp_path, speech_clip):
    audio = load_audio(speech_clip)
    stereo_48k = np.stack([audio, audio], axis=1).repeat(3, axis=0)
    path = tmp_path / "stereo48k.wav"
    sf.write(path, stereo_48k, 48_000)
    loaded = load_audio(path)
    assert abs(len(loaded) - len(audio)) <= 2 and loaded.ndim == 1


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_sample_formats_decode_alike(tmp_path, speech_clip, subtype):
    audio = load_audio(speech_clip)
    sf.write(tmp_path / "x.wav", audio, SAMPLE_RATE, subtype=subtype)
    assert np.abs(load_audio(tmp_path / "x.wav") - audio).max() < 1e-4


def test_keeps_dc_offset_and_clips_float_overs(tmp_path, speech_clip):
    """The gate judges DC offset and clipping, so loading must not hide them."""
    audio = load_audio(speech_clip)
    sf.write(tmp_path / "dc.wav", audio + 0.25, SAMPLE_RATE, subtype="FLOAT")
    assert abs(load_audio(tmp_path / "dc.wav").mean() - (audio.mean() + 0.25)) < 1e-4
    sf.write(tmp_path / "hot.wav", audio * 8, 44_100, subtype="FLOAT")
    hot = load_audio(tmp_path / "hot.wav")
    assert hot.max() <= 1.0 and hot.min() >= -1.0 and (np.abs(hot) > 0.99).mean() > 0.05


def test_refuses_bad_files(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty)
    png = tmp_path / "picture.wav"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2000))
    with pytest.raises(AudioError, match="not an audio file"):
        load_audio(png)
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(SAMPLE_RATE * 20, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match=r"lasts 20 s; the limit is 10 s") as error:
        load_audio(long, AudioLimits(max_seconds=10))
    assert error.value.code == "too_long"


def test_vad_model_matches_silero_streaming(speech_clip):
    """The batched ONNX export we run (`_silero`) gives the probabilities of Silero's own frame-by-frame model: the
    same segments from them. (speech_segments then adds what Silero misses: see the next tests.)"""
    from silero_vad import get_speech_timestamps, load_silero_vad
    from silero_vad.sequence_vad import get_speech_timestamps_from_probs

    from grader.audio.vad import _silero

    audio = np.tile(load_audio(speech_clip), 3)
    reference, threads = load_silero_vad(), torch.get_num_threads()
    torch.set_num_threads(1)  # its per-frame loop crawls with more on a busy machine
    try:
        expected = get_speech_timestamps(torch.from_numpy(audio), reference, speech_pad_ms=0,
                                         min_silence_duration_ms=100)
    finally:
        torch.set_num_threads(threads)
    found = get_speech_timestamps_from_probs(_silero().audio_forward(audio, sampling_rate=SAMPLE_RATE),
                                             speech_pad_ms=0, min_silence_duration_ms=100,
                                             audio_length_samples=len(audio))
    assert found == expected and len(expected) >= 3


def test_vad_hears_a_childs_quiet_voice(speechocean_clips):
    """A 9-year-old's "CAN I KEEP THEM" (2.0 s): stock Silero hears 0.35 s of it; speech_segments all four words
    (about a second, starting and ending where the voice does)."""
    from silero_vad.sequence_vad import get_speech_timestamps_from_probs

    from grader.audio.vad import _silero, at_typical_level

    audio = load_audio(speechocean_clips / "audio" / "021790112.flac")
    probs = _silero().audio_forward(at_typical_level(audio), sampling_rate=SAMPLE_RATE)
    stock = get_speech_timestamps_from_probs(probs,
                                             speech_pad_ms=0, min_silence_duration_ms=100,
                                             audio_length_samples=len(audio))
    assert sum(s["end"] - s["start"] for s in stock) / SAMPLE_RATE < 0.5
    segments = speech_segments(audio)
    assert 0.9 < sum(s.end - s.start for s in segments) < 1.3 and 0.4 < segments[0].start < 0.6


def test_the_trim_cuts_the_same_answer_wherever_the_recording_starts(speech_clip):
    """2 s of quiet room tone before the answer: the speech is found at the same sound, within a millisecond (its
    edges are placed to the sample, not on the VAD's 32-ms grid, which the lead-in shifts by half a frame), so the
    trim keeps the same answer with the same margin."""
    audio = load_audio(speech_clip)
    padded = np.concatenate([np.random.default_rng(0).standard_normal(2 * SAMPLE_RATE).astype(np.float32) * 1e-3,
                             audio])
    [alone], [after] = speech_segments(audio), speech_segments(padded)
    assert abs(after.start - 2 - alone.start) < 1e-3 and abs(after.end - 2 - alone.end) < 1e-3
    trimmed = trim_to_speech(audio)
    assert abs(len(trim_to_speech(padded)) - len(trimmed)) <= 0.002 * SAMPLE_RATE
    assert 0.2 * SAMPLE_RATE < len(audio) - len(trimmed) < 0.8 * SAMPLE_RATE


def test_importing_vad_keeps_torch_threads():
    """silero_vad's import sets torch to one thread for the whole process (the grader's model included)."""
    code = "import torch; torch.set_num_threads(3); import grader.audio.vad; print(torch.get_num_threads())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "3"
