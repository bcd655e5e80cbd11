"""Reading audio files: any common format in, 16 kHz mono float32 out, or a clear AudioError."""

from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000


class AudioError(ValueError):
    """An audio file that cannot be used, with a message meant for a person."""


@dataclass(frozen=True)
class AudioLimits:
    max_bytes: int = 50 * 1024 * 1024
    max_seconds: float = 300.0


def load_audio(path: str | Path, limits: AudioLimits = AudioLimits()) -> np.ndarray:
    """Decode `path` to 16 kHz mono float32 in [-1, 1].

    Size and duration limits are checked from the file header before decoding, so a
    one-hour file is refused without reading all of it.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(f"{path.name} is empty (0 bytes)")
    if size > limits.max_bytes:
        raise AudioError(f"{path.name} is {size / 2**20:.1f} MiB; the limit is {limits.max_bytes / 2**20:.0f} MiB")
    try:
        info = sf.info(str(path))
    except Exception:
        info = None
    if info is not None and info.samplerate > 0 and info.frames / info.samplerate > limits.max_seconds:
        raise AudioError(f"{path.name} lasts {info.frames / info.samplerate:.0f} s; the limit is {limits.max_seconds:.0f} s")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
    except Exception:
        try:
            audio, rate = librosa.load(str(path), sr=None, mono=True, duration=limits.max_seconds + 1)
        except Exception as error:
            raise AudioError(f"{path.name} could not be read as audio ({type(error).__name__})") from error
    if len(audio) == 0:
        raise AudioError(f"{path.name} holds no audio samples")
    if len(audio) / rate > limits.max_seconds:
        raise AudioError(f"{path.name} lasts over {limits.max_seconds:.0f} s, the limit")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path.name} holds invalid (NaN or infinite) samples")
    if rate != SAMPLE_RATE:
        audio = librosa.resample(audio, orig_sr=rate, target_sr=SAMPLE_RATE)
    return np.ascontiguousarray(audio, dtype=np.float32)
