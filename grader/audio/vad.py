"""Voice activity from Silero VAD (its weights ship inside the PyPI wheel), and the trim of the silence around an
answer that grading and training share.

We run Silero's "sequence" ONNX export: the same probabilities as its streaming model, but one call per
16 s of audio instead of one Python-level call per 32-ms frame, on a single thread (~1 ms per second of
audio), so it neither waits on nor slows down the grader's model.

Silero misses many children's voices (speechocean762: a 3.5-s answer heard as 0.6 s of speech). Two things
bring them back: it also hears the recording slowed to 2/3 speed, which lowers a child's pitch into the range
it knows, and a stretch as loud as the speech it found (within 15 dB of its median level) joins the speech
when Silero gives it some belief (0.3). Each stretch then starts and ends at speech level (within 20 dB of its
vowels, to the sample), as Silero's belief outlasts a word by 0.1-0.2 s. On the 2,500 clips of speechocean762 the
share of loud frames (25 dB over the room tone) left outside speech fell from 2.2 % to 0.7 % (95th percentile: 11 %
to 3.3 %), and the same answer after 2 s of room tone starts within 5 ms of where it did (95th percentile; 250
clips), so that the trim (`trim_to_speech`) cuts the same answer out of both.
"""

from dataclasses import dataclass
from functools import lru_cache

import librosa
import numpy as np
import torch

from .decode import SAMPLE_RATE

_threads = torch.get_num_threads()
from silero_vad import load_silero_vad  # noqa: E402
from silero_vad.sequence_vad import SileroVADSequence, get_speech_timestamps_from_probs  # noqa: E402

torch.set_num_threads(_threads)  # importing silero_vad sets torch to one thread for the whole process

FRAME = 512  # Silero's frame at 16 kHz: 32 ms
THRESHOLD = 0.5  # Silero's own: a frame is speech from this probability
SLOWED = 1.5  # Silero also hears the recording this many times slower (and lower)
LEVEL_DB = 15.0  # a stretch within this of the speech's median level...
LEVEL_BELIEF = 0.3  # ...that Silero believes this much somewhere is speech too
EDGE_DB = 20.0  # speech level: within this of the loud part of the speech (its frames' 90th percentile level)
EDGE_WINDOW = 160  # samples (10 ms) whose level places a stretch's edges
TRIM_MARGIN_S = 0.25  # kept before the first and after the last speech


@dataclass(frozen=True)
class SpeechSegment:
    start: float  # seconds
    end: float


@lru_cache(maxsize=1)
def _silero() -> SileroVADSequence:
    return load_silero_vad(sequence=True)


def speech_segments(audio: np.ndarray, min_silence_ms: int = 100) -> list[SpeechSegment]:
    """Stretches of speech in 16 kHz audio, in seconds (heard at a typical level: see `at_typical_level`), each
    starting and ending where the speech is at speech level (`EDGE_DB`): Silero's belief outlasts a word by 0.1-0.2 s.
    The edges are found to the sample, from the level of the 10 ms after each sample, so that they fall on the same
    sound wherever the recording starts (not on Silero's 32-ms grid, which moves with it)."""
    audio = at_typical_level(audio)
    stamps = get_speech_timestamps_from_probs(speech_probabilities(audio), sampling_rate=SAMPLE_RATE,
                                              threshold=THRESHOLD, min_silence_duration_ms=min_silence_ms,
                                              speech_pad_ms=0, audio_length_samples=len(audio))
    near, floor = _at_speech_level(audio, [(s["start"], s["end"]) for s in stamps])
    power = np.r_[0.0, np.cumsum(audio.astype(np.float64) ** 2)]
    loud = 10 * np.log10((power[EDGE_WINDOW:] - power[:-EDGE_WINDOW]) / EDGE_WINDOW + 1e-12) >= floor
    segments = []
    for frames in near:
        if len(frames):  # the edges lie in the frames next to the first and last frame at speech level
            lo, hi = max(int(frames[0]) - 1, 0) * FRAME, min(int(frames[-1]) + 2, -(-len(audio) // FRAME)) * FRAME
            found = lo + np.flatnonzero(loud[lo: hi - EDGE_WINDOW + 1])
            segments.append(SpeechSegment(int(found[0]) / SAMPLE_RATE, int(found[-1] + EDGE_WINDOW) / SAMPLE_RATE))
    return segments


def audible(audio: np.ndarray, speech: list[SpeechSegment]) -> list[SpeechSegment]:
    """The parts of `speech` at speech level, split wherever it dips below (between words, in a breath): where a
    word can be heard. Word times are kept on these (grader.evidence.transcribe.place_in_speech)."""
    audio = at_typical_level(audio)
    out = []
    for frames in _at_speech_level(audio, [(int(s.start * SAMPLE_RATE), int(s.end * SAMPLE_RATE)) for s in speech])[0]:
        for run in np.split(frames, np.flatnonzero(np.diff(frames) > 1) + 1) if len(frames) else []:
            out.append(SpeechSegment(int(run[0]) * FRAME / SAMPLE_RATE, int(run[-1] + 1) * FRAME / SAMPLE_RATE))
    return out


def _at_speech_level(audio: np.ndarray, spans: list[tuple[int, int]]) -> tuple[list[np.ndarray], float]:
    """For each span of samples, its frames at speech level, and that level (dB): within EDGE_DB of the 90th
    percentile of the levels of all the spans' frames (the vowels: the median would sink with the pauses inside)."""
    level = frame_levels(audio, -(-len(audio) // FRAME))
    frames = [np.arange(a // FRAME, -(-b // FRAME)) for a, b in spans]
    if not frames:
        return [], 0.0
    floor = float(np.percentile(level[np.concatenate(frames)], 90)) - EDGE_DB
    return [f[level[f] >= floor] for f in frames], floor


def speech_probabilities(audio: np.ndarray) -> np.ndarray:
    """Silero's speech probability of each 32-ms frame: the larger of what it hears at the voice's own pitch and
    slowed to 2/3 speed (a child's voice then lies where the adult voices it learnt from do), raised to speech on
    stretches as loud as the speech and believed somewhat (see the module's docstring)."""
    audio = np.asarray(audio, dtype=np.float32)
    heard = _silero().audio_forward(audio, sampling_rate=SAMPLE_RATE)
    if not len(heard):
        return heard
    slowed = _silero().audio_forward(
        librosa.resample(audio, orig_sr=SAMPLE_RATE, target_sr=int(SAMPLE_RATE * SLOWED)), sampling_rate=SAMPLE_RATE)
    firsts = np.minimum(np.floor(np.arange(len(heard)) * SLOWED).astype(int), len(slowed) - 1)
    probs = np.maximum(heard, np.maximum.reduceat(slowed, firsts))  # frame i is slowed frames from firsts[i] on
    speech = probs >= THRESHOLD
    if speech.any():
        level = frame_levels(audio, len(probs))
        loud = np.r_[False, level >= np.median(level[speech]) - LEVEL_DB, False]
        edges = np.flatnonzero(np.diff(loud.astype(np.int8)))
        for start, stop in zip(edges[::2], edges[1::2]):
            if probs[start:stop].max() >= LEVEL_BELIEF:
                probs[start:stop] = np.maximum(probs[start:stop], THRESHOLD)
    return probs


def frame_levels(audio: np.ndarray, frames: int) -> np.ndarray:
    """The level (dB) of each of the first `frames` 32-ms frames (zero-padded at the end)."""
    padded = np.pad(audio, (0, max(frames * FRAME - len(audio), 0)))[: frames * FRAME].reshape(-1, FRAME)
    return 10 * np.log10(np.mean(padded.astype(np.float64) ** 2, axis=1) + 1e-12)


def trim_to_speech(audio: np.ndarray, speech: list[SpeechSegment] | None = None,
                   margin_s: float = TRIM_MARGIN_S) -> np.ndarray:
    """The recording from `margin_s` before its first speech to `margin_s` after its last (all of it where no
    speech is heard), so that the silence before a candidate starts and after they stop never reaches the model:
    the same answer after a 2-s wait is graded as the same answer. Grading (grader.inference) and training
    (grader.train) both trim here, so the model learns from what it is later shown. `speech`: the recording's
    segments, where already found (the gate finds them)."""
    speech = speech_segments(audio) if speech is None else speech
    if not speech:
        return audio
    start = max(int((speech[0].start - margin_s) * SAMPLE_RATE), 0)
    return audio[start: int(np.ceil((speech[-1].end + margin_s) * SAMPLE_RATE))]


def at_typical_level(audio: np.ndarray) -> np.ndarray:
    """The recording as the VAD should hear it. Silero misses quiet speech (and some very loud speech), so it
    hears every recording without DC offset and with its peak at -6 dBFS, the median of real clips."""
    centred = np.asarray(audio, dtype=np.float64)
    centred = centred - centred.mean() if len(centred) else centred
    peak = float(np.abs(centred).max(initial=0.0))
    return (centred * (0.5 / peak) if peak > 1e-4 else centred).astype(np.float32)
