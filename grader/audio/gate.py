"""The non-scorable gate: a response is graded only if it holds enough clean speech; otherwise it is stored
as non-scorable with a reason a person can act on, never silently graded.

Thresholds were tuned on the 2,500 real read-aloud clips of speechocean762 (children and adults, many
single-word answers): all of them pass.
"""

from dataclasses import dataclass, field
from pathlib import Path

import librosa
import numpy as np

from .decode import MAX_SECONDS, SAMPLE_RATE, AudioError, AudioLimits, load_audio
from .vad import SpeechSegment, speech_segments


@dataclass(frozen=True)
class GateConfig:
    min_seconds: float = 1.0
    max_seconds: float = MAX_SECONDS
    min_speech_seconds: float = 0.3  # real one-word answers ("CAR") hold 0.35-0.45 s by Silero's measure
    min_speech_ratio: float = 0.05  # below this a long recording is a forgotten stop button, not an answer
    max_clipped_fraction: float = 0.01
    silence_dbfs: float = -60.0  # RMS below this is a muted or unplugged microphone
    clip_level: float = 0.9  # |sample| from here counts as full scale: AAC flattens clipped peaks to ~0.9-1.0


@dataclass(frozen=True)
class GateResult:
    scorable: bool
    reason: str | None  # a short sentence for a person
    code: str | None  # for machines: silent, no_speech, too_little_speech, clipped, too_short, too_long, ...
    measures: dict[str, float] = field(default_factory=dict)
    speech: tuple[SpeechSegment, ...] = ()  # what the VAD heard, handed on to the trim and the evidence


def check_audio(audio: np.ndarray, config: GateConfig = GateConfig()) -> GateResult:
    """Judge 16 kHz mono audio (as load_audio returns it): scorable, or why not."""
    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    duration = len(audio) / SAMPLE_RATE
    if not np.all(np.isfinite(audio)):
        return GateResult(False, "The audio holds invalid samples (NaN or infinite values).", "unreadable",
                          {"duration_s": duration})
    audio = np.clip(audio, -1.0, 1.0)
    measures, segments = _measure(audio, config)

    def refuse(code: str, reason: str) -> GateResult:
        return GateResult(False, reason, code, measures, segments)

    speech = measures["speech_s"]
    if duration < config.min_seconds:
        return refuse("too_short", f"Too short ({duration:.1f} s; at least {config.min_seconds:.1f} s).")
    if duration > config.max_seconds:
        return refuse("too_long", f"Too long ({duration:.1f} s; at most {config.max_seconds:.1f} s).")
    if measures["rms_dbfs"] < config.silence_dbfs:
        return refuse("silent", "No speech detected: the recording is silent.")
    if measures["clipped_fraction"] > config.max_clipped_fraction:
        return refuse("clipped", f"The recording is clipped ({measures['clipped_fraction']:.1%} of samples at "
                                 "full scale); re-record further from the microphone.")
    if speech == 0:
        return refuse("no_speech", "No speech detected: the recording holds only noise or other sounds.")
    if speech < config.min_speech_seconds:
        return refuse("too_little_speech",
                      f"Too little speech ({speech:.1f} s; at least {config.min_speech_seconds:.1f} s is needed).")
    if measures["speech_ratio"] < config.min_speech_ratio:
        return refuse("too_little_speech", f"Too little speech ({speech:.1f} s in {duration:.1f} s of recording; "
                                           f"at least {config.min_speech_ratio:.0%} of it should be speech).")
    return GateResult(True, None, None, measures, segments)


def inspect_file(path: str | Path, limits: AudioLimits = AudioLimits(),
                 gate_config: GateConfig = GateConfig()) -> tuple[np.ndarray | None, GateResult]:
    """Load and judge an upload in one step; a file that cannot be used becomes a non-scorable result
    (code "unreadable", "too_large" or "too_long") instead of an exception."""
    try:
        audio = load_audio(path, limits)
    except AudioError as error:
        return None, GateResult(False, str(error), error.code)
    return audio, check_audio(audio, gate_config)


def _measure(audio: np.ndarray, config: GateConfig) -> tuple[dict[str, float], tuple[SpeechSegment, ...]]:
    """Levels after removing DC (an offset is harmless, but would hide silence and fool the VAD); clipping on
    the raw samples, where the converter's rails are."""
    n = max(len(audio), 1)  # an empty recording measures as silence
    dc_offset = float(audio.sum() / n)
    centred = audio - dc_offset
    peak = float(np.abs(centred).max(initial=0.0))
    rms = float(np.sqrt(centred @ centred / n))
    segments = tuple(speech_segments(centred))
    speech = float(sum(segment.end - segment.start for segment in segments))
    duration = len(audio) / SAMPLE_RATE
    return {"duration_s": duration, "speech_s": speech, "speech_ratio": speech / duration if duration else 0.0,
            "peak_dbfs": _dbfs(peak), "rms_dbfs": _dbfs(rms), "clipped_fraction": _clipped_fraction(audio, config),
            "dc_offset": dc_offset, "snr_db": _snr_db(centred), "high_band_db": _high_band_db(centred)}, segments


SNR_FRAME = 400  # 25 ms


def _snr_db(audio: np.ndarray) -> float:
    """How far the speech stands above the background: the 95th percentile of 25-ms frame levels over the 10th, in
    dB (a percentile estimate, as NIST's STNR). Every answer pauses between words, and in a clean recording those
    frames hold only the room; under noise they hold the noise. Gain does not move it; a lead-in of room tone only
    raises it. On 500 speechocean762 clips it is 30-63 dB (5th-95th percentile), and 17-20 dB after pink noise at
    10 dB below the recording's level (benchmarks/bench_channel.py, results/channel.json)."""
    if len(audio) < SNR_FRAME:
        return 0.0
    levels = librosa.feature.rms(y=audio, frame_length=SNR_FRAME, hop_length=SNR_FRAME, center=False)[0]
    db = librosa.amplitude_to_db(levels, ref=1.0, amin=1e-6, top_db=None)
    return float(np.percentile(db, 95) - np.percentile(db, 10))


HIGH_BAND_FFT = 512  # 32 ms


def _high_band_db(audio: np.ndarray) -> float:
    """How much of the speech reaches above a telephone line's band: the mean power of 4.5-7.5 kHz over that of
    2.5-3.3 kHz, in dB, in the loudest 30 % of 32-ms frames (the speech, not the pauses). Fricatives and bursts fill
    the upper band of a 16-kHz microphone recording; a telephone line (300-3,400 Hz, sampled at 8 kHz) leaves it
    empty. On 500 speechocean762 clips it is -20 to 8 dB (5th-95th percentile), and -59 to -44 dB through a
    telephone band; MP3, Opus, a room, noise and gain leave it where it was (benchmarks/bench_channel.py,
    results/channel.json)."""
    if len(audio) < HIGH_BAND_FFT:
        return 0.0
    power = np.abs(librosa.stft(audio, n_fft=HIGH_BAND_FFT, hop_length=HIGH_BAND_FFT // 2, center=False)) ** 2
    loud = power[:, power.sum(0) >= np.percentile(power.sum(0), 70)].mean(1)
    hz = librosa.fft_frequencies(sr=SAMPLE_RATE, n_fft=HIGH_BAND_FFT)
    high, mid = loud[(hz >= 4500) & (hz < 7500)].mean(), loud[(hz >= 2500) & (hz < 3300)].mean()
    return float(10 * np.log10(max(high, 1e-20) / max(mid, 1e-20)))


def _clipped_fraction(audio: np.ndarray, config: GateConfig) -> float:
    """Share of samples in runs (two or more in a row) at full scale: a flattened waveform, not a lone peak."""
    full = np.abs(audio) >= config.clip_level
    in_run = full & (np.r_[False, full[:-1]] | np.r_[full[1:], False])[: len(full)]
    return float(in_run.sum() / max(len(full), 1))


def _dbfs(level: float) -> float:
    return 20 * float(np.log10(max(level, 1e-6)))  # floor at -120 dBFS keeps measures finite
