import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from grader.audio import SAMPLE_RATE, AudioError, AudioLimits, load_audio
from grader.audio import speech_segments

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
    with pytest.raises(AudioError, match=r"lasts 20.0 s; the limit is 10.0 s") as error:
        load_audio(long, AudioLimits(max_seconds=10))
    assert error.value.code == "too_long"


@pytest.mark.xfail(reason="issue 15, open: the VAD now also hears the clip slowed and joins loud stretches (for "
                          "children's voices), so it no longer equals stock Silero on this clip; the test needs a clip "
                          "where neither adds speech", strict=False)
def test_vad_matches_silero_streaming(speech_clip):
    """The batched ONNX export we run finds the segments of Silero's own frame-by-frame model (on an adult voice,
    where neither the slowed hearing nor the level rule adds any speech)."""
    from silero_vad import get_speech_timestamps, load_silero_vad

    audio = np.tile(load_audio(speech_clip), 3)
    reference, threads = load_silero_vad(), torch.get_num_threads()
    torch.set_num_threads(1)  # its per-frame loop crawls with more on a busy machine
    try:
        expected = get_speech_timestamps(torch.from_numpy(audio), reference, speech_pad_ms=0,
                                         min_silence_duration_ms=100)
    finally:
        torch.set_num_threads(threads)
    assert [(s.start, s.end) for s in speech_segments(audio)] == [
        (s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in expected]
    assert len(expected) >= 3


def test_importing_vad_keeps_torch_threads():
    """silero_vad's import sets torch to one thread for the whole process (the grader's model included)."""
    code = "import torch; torch.set_num_threads(3); import grader.audio.vad; print(torch.get_num_threads())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "3"
