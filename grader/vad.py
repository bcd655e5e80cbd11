"""Voice activity from Silero VAD (its weights ship inside the PyPI wheel)."""

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .audio import SAMPLE_RATE


@dataclass(frozen=True)
class SpeechSegment:
    start: float  # seconds
    end: float


@lru_cache(maxsize=1)
def _silero():
    from silero_vad import load_silero_vad

    return load_silero_vad()


def speech_segments(audio: np.ndarray, min_silence_ms: int = 100) -> list[SpeechSegment]:
    """Stretches of speech in 16 kHz audio, in seconds."""
    from silero_vad import get_speech_timestamps

    with torch.inference_mode():
        stamps = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)), _silero(),
                                       sampling_rate=SAMPLE_RATE, min_silence_duration_ms=min_silence_ms,
                                       speech_pad_ms=0, return_seconds=False)
    return [SpeechSegment(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]
