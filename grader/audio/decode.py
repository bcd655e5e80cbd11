"""Reading audio files: any common format in, 16 kHz mono float32 out, or an AudioError a person can read.

libsndfile (soundfile) reads WAV, FLAC, MP3, Ogg Vorbis/Opus exactly and fast; PyAV's bundled ffmpeg reads
what browsers upload (m4a/AAC, WebM/Opus). Limits are checked from the header before decoding, and decoding
stops at the limit for streams whose header does not say how long they are (a browser's WebM).
"""

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import av
import librosa
import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000
MAX_SECONDS = 120.0  # the longest response graded: the decoder, the gate and the app all use this
MIN_RATE, MAX_RATE = 4_000, 384_000  # outside this a "sample rate" is a corrupt header, not audio
UNREADABLE = "{name} could not be read as audio: it is not a sound file, it is damaged, or its format is not supported."


class AudioError(ValueError):
    """An audio file that cannot be used, with a message meant for a person and a code for machines:
    "unreadable", "too_large" or "too_long"."""

    def __init__(self, message: str, code: str = "unreadable"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class AudioLimits:
    max_bytes: int = 50 * 1024 * 1024
    max_seconds: float = MAX_SECONDS


def load_audio(path: str | Path, limits: AudioLimits = AudioLimits()) -> np.ndarray:
    """Decode `path` to 16 kHz mono float32 in [-1, 1].

    Channels are averaged and any DC offset is kept: judging the recording is the gate's job.
    """
    path = Path(path)
    name = _label(path)
    if not path.is_file():
        raise AudioError(f"The audio file {name} was not found.")
    size = path.stat().st_size
    if size == 0:
        raise AudioError(f"{name} is empty (0 bytes).")
    if size > limits.max_bytes:
        raise AudioError(f"{name} is {size / 2**20:.1f} MB; the limit is {limits.max_bytes / 2**20:.0f} MB.",
                         "too_large")
    try:
        audio, rate = _read_soundfile(path, name, limits) or _read_av(path, name, limits)
    except AudioError:
        raise
    except Exception as error:  # a decoder failing in a way we did not foresee is still a bad file, not a crash
        raise AudioError(f"{name} could not be decoded ({type(error).__name__}); the file may be damaged.") from error
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{name} holds invalid samples (NaN or infinite values).")
    audio = np.clip(audio, -1.0, 1.0)  # float files may exceed full scale; any playback would clip them
    if rate != SAMPLE_RATE:  # soxr's band limiting overshoots full scale around clipped peaks
        audio = np.clip(librosa.resample(audio, orig_sr=rate, target_sr=SAMPLE_RATE), -1.0, 1.0)
    return np.ascontiguousarray(audio, dtype=np.float32)


def _read_soundfile(path: Path, name: str, limits: AudioLimits) -> tuple[np.ndarray, int] | None:
    """libsndfile's exact decoding, or None for a format it does not know."""
    try:
        file = sf.SoundFile(path)
    except Exception:  # not a format libsndfile knows (or a header it rejects): ffmpeg may still read it
        return None
    with file:
        if not 0 < file.frames < 2**62:  # no length in the header (a streamed FLAC): libsndfile fails at its end
            return None
        try:
            return _collect(_sf_blocks(file), name, file.samplerate, file.frames / file.samplerate, limits), \
                file.samplerate
        except sf.LibsndfileError as error:
            raise AudioError(f"{name} is truncated or damaged: its audio could not be decoded to the end.") from error


def _sf_blocks(file: sf.SoundFile) -> Iterator[np.ndarray]:
    while len(block := file.read(file.samplerate * 10, dtype="float32", always_2d=True)):
        yield block


def _read_av(path: Path, name: str, limits: AudioLimits) -> tuple[np.ndarray, int]:
    """ffmpeg's decoding (via PyAV) for what libsndfile cannot read: m4a/AAC, WebM/Opus and the like."""
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as error:
        raise AudioError(UNREADABLE.format(name=name)) from error
    with container:
        if not container.streams.audio:
            raise AudioError(f"{name} is not an audio file: it holds no audio track.")
        stream = container.streams.audio[0]
        if stream.codec_context is None:
            raise AudioError(f"{name} uses an audio encoding that is not supported.")
        rate = stream.codec_context.sample_rate
        seconds = _seconds(container, stream)
        try:
            return _collect(_av_blocks(container, stream), name, rate, seconds, limits), rate
        except av.FFmpegError as error:
            raise AudioError(f"{name} is truncated or damaged: its audio could not be decoded to the end.") from error


def _seconds(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    """How long the audio track says it is; the container's duration only where the track does not say (a video
    track may outlast the audio, and a file is not truncated for that)."""
    if stream.duration and stream.duration > 0 and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration and container.duration > 0 else None


def _av_blocks(container: av.container.InputContainer, stream: av.AudioStream) -> Iterator[np.ndarray]:
    """Decoded frames as (samples, channels) float32 arrays at the stream's own rate.

    Packed float, never planar: PyAV's to_ndarray walks a planar frame's channel pointers until a NULL that 8 or
    more channels do not have, and reads past them (SIGSEGV on a 7.1 AAC or 8-channel Opus/FLAC). A packed frame
    has one plane whatever its channel count; the layout and rate are kept (no rematrixing: averaging the channels
    is _collect's, resampling librosa's)."""
    to_float = av.AudioResampler(format="flt")
    for frame in chain(container.decode(stream), [None]):  # None flushes the converter
        for converted in to_float.resample(frame):
            yield converted.to_ndarray().reshape(-1, converted.layout.nb_channels)


def _collect(blocks: Iterator[np.ndarray], name: str, rate: int, seconds: float | None,
             limits: AudioLimits) -> np.ndarray:
    """Check the header's rate and duration (`seconds`, None where it does not say), then decode, averaging
    channels block by block and stopping as soon as the duration limit is passed."""
    if rate <= 0:  # ffmpeg can take noise for some headerless format, and find no rate in it
        raise AudioError(UNREADABLE.format(name=name))
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"{name} has an unsupported sample rate ({rate} Hz).")
    if seconds is not None and seconds > limits.max_seconds:
        raise AudioError(f"{name} lasts {_span(seconds)}; the limit is {_span(limits.max_seconds)}, so it is "
                         f"{_span(seconds - limits.max_seconds)} too long.", "too_long")
    mono, total = [], 0
    for block in blocks:
        mono.append(block.mean(axis=1, dtype=np.float32))
        total += len(block)
        if total > limits.max_seconds * rate:
            raise AudioError(f"{name} lasts over {_span(limits.max_seconds)}, the limit.", "too_long")
    if total == 0:
        raise AudioError(f"{name} holds no audio samples (only a header).")
    if seconds is not None and total < 0.9 * seconds * rate:
        raise AudioError(f"{name} is truncated or damaged: only {total / rate:.1f} s of the {seconds:.1f} s "
                         "its header announces could be decoded.")
    return np.concatenate(mono)


def _span(seconds: float) -> str:
    """12.3 s, 10 min, 2 min 12 s, 2 min 0.1 s, 1 h 5 min: durations as people say them, never rounded onto a limit they
    exceed (120.1 s is not "2 min")."""
    if seconds < 60:
        return f"{round(seconds, 1):g} s"
    minutes, tenths = divmod(round(seconds * 10), 600)
    if minutes >= 60:
        return f"{minutes // 60} h {round(seconds / 60) % 60} min"
    return f"{minutes} min" + (f" {tenths / 10:g} s" if tenths else "")


def _label(path: Path) -> str:
    """The file's name for messages, quoted, and shortened if it is absurdly long."""
    name = path.name if len(path.name) <= 60 else f"{path.name[:40]}…{path.name[-15:]}"
    return f'"{name}"'
