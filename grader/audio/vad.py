"""Voice activity from Silero VAD (its weights ship inside the PyPI wheel).

We run Silero's "sequence" ONNX export: the same probabilities as its streaming model, but one call per
16 s of audio instead of one Python-level call per 32-ms frame, on a single thread (~1 ms per second of
audio), so it neither waits on nor slows down the grader's model.
"""

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .decode import SAMPLE_RATE

_threads = torch.get_num_threads()
from silero_vad import load_silero_vad  # noqa: E402
from silero_vad.sequence_vad import SileroVADSequence, get_speech_timestamps_sequence  # noqa: E402

torch.set_num_threads(_threads)  # importing silero_vad sets torch to one thread for the whole process


@dataclass(frozen=True)
class SpeechSegment:
    start: float  # seconds
    end: float


@lru_cache(maxsize=1)
def _silero() -> SileroVADSequence:
    return load_silero_vad(sequence=True)


def speech_segments(audio: np.ndarray, min_silence_ms: int = 100) -> list[SpeechSegment]:
    """Stretches of speech in 16 kHz audio, in seconds."""
    stamps = get_speech_timestamps_sequence(np.asarray(audio, dtype=np.float32), _silero(),
                                            sampling_rate=SAMPLE_RATE, min_silence_duration_ms=min_silence_ms,
                                            speech_pad_ms=0)
    return [SpeechSegment(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]


def at_typical_level(audio: np.ndarray) -> np.ndarray:
    """The recording as the VAD should hear it. Silero misses quiet speech (and some very loud speech), so it
    hears every recording without DC offset and with its peak at -6 dBFS, the median of real clips."""
    centred = np.asarray(audio, dtype=np.float64)
    centred = centred - centred.mean() if len(centred) else centred
    peak = float(np.abs(centred).max(initial=0.0))
    return (centred * (0.5 / peak) if peak > 1e-4 else centred).astype(np.float32)
