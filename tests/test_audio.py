import numpy as np
import pytest
import soundfile as sf

from grader.audio import SAMPLE_RATE, AudioError, AudioLimits, load_audio
from grader.vad import speech_segments


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


def test_refuses_bad_files(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(empty)
    png = tmp_path / "picture.wav"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2000))
    with pytest.raises(AudioError, match="could not be read"):
        load_audio(png)
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(SAMPLE_RATE * 20, dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="limit is 10 s"):
        load_audio(long, AudioLimits(max_seconds=10))
