"""Recording perturbations: the ways the same answer reaches the grader differently (room tone before and after,
microphone gain, noise, a small room, a telephone line, lossy codecs). One owner for both uses: training draws
random settings (`augment`, its own seed per clip and view) so that the model learns to ignore them, and
benchmarks/bench_robustness.py measures the score's change under fixed settings it states.

Every function takes and returns 16 kHz mono float32; `rng` is a numpy Generator, so a seed gives the same audio.
"""

import tempfile
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, load_audio

TONE_DBFS = -60.0  # room tone: a quiet room through a microphone
CODECS = {"mp3": ("libmp3lame", ".mp3"), "opus": ("libopus", ".ogg")}


def coloured(n: int, rng: np.random.Generator, exponent: float = 1.0) -> np.ndarray:
    """Noise of unit RMS whose power falls as 1/f^exponent: 1 pink (hiss), 2 brown (a room's rumble)."""
    from scipy.fft import irfft, next_fast_len, rfft

    size = next_fast_len(max(n, 1), real=True)  # a prime length would take seconds
    spectrum = rfft(rng.standard_normal(size))
    x = irfft(spectrum / np.maximum(np.arange(len(spectrum)), 1) ** (exponent / 2), size)[:n]
    return x / max(np.sqrt(np.mean(x ** 2)), 1e-12) if n else x


def room_tone(audio: np.ndarray, rng: np.random.Generator, before_s: float, after_s: float,
              dbfs: float = TONE_DBFS) -> np.ndarray:
    """The answer with `before_s` and `after_s` of quiet pink room tone around it: a candidate clicks record,
    then speaks."""
    tone = 10 ** (dbfs / 20)
    return np.concatenate([coloured(int(before_s * SAMPLE_RATE), rng) * tone, audio,
                           coloured(int(after_s * SAMPLE_RATE), rng) * tone])


def noise(audio: np.ndarray, rng: np.random.Generator, snr_db: float, exponent: float = 1.0) -> np.ndarray:
    """Coloured noise at `snr_db` below the recording's RMS level."""
    level = np.sqrt(np.mean(audio.astype(np.float64) ** 2)) / 10 ** (snr_db / 20)
    return audio + coloured(len(audio), rng, exponent) * level


def reverb(audio: np.ndarray, rng: np.random.Generator, rt60_s: float = 0.4) -> np.ndarray:
    """A small room: a synthetic impulse response (the direct sound, then exponentially decaying noise that falls
    60 dB in `rt60_s`, after 5 ms), at the dry recording's level."""
    from scipy.signal import fftconvolve

    t = np.arange(int(rt60_s * SAMPLE_RATE)) / SAMPLE_RATE
    tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60_s) * (t > 0.005) * 0.3
    wet = fftconvolve(audio, np.r_[1.0, tail[1:]])[: len(audio)]
    return wet * np.sqrt(np.mean(audio ** 2) / max(np.mean(wet ** 2), 1e-12))


def telephone(audio: np.ndarray, low_hz: float = 300, high_hz: float = 3400) -> np.ndarray:
    """A telephone line: the band `low_hz`-`high_hz`, 8 kHz sampling, then back to 16 kHz as the grader hears it."""
    from scipy.signal import butter, resample_poly, sosfiltfilt

    band = sosfiltfilt(butter(4, [low_hz, high_hz], "bandpass", fs=SAMPLE_RATE, output="sos"), audio)
    return resample_poly(resample_poly(band, 1, 2), 2, 1)[: len(audio)]


def encode(audio: np.ndarray, codec: str, bitrate: int, folder: Path) -> Path:
    """The recording encoded with PyAV's ffmpeg (`codec`: mp3 or opus) into a file in `folder`, which the grader
    then decodes itself, as it does an upload."""
    import av

    name, suffix = CODECS[codec]
    path = Path(tempfile.mkstemp(suffix=suffix, dir=folder)[1])
    with av.open(str(path), "w") as out:
        stream = out.add_stream(name, rate=SAMPLE_RATE, layout="mono")
        stream.bit_rate = bitrate
        frame = av.AudioFrame.from_ndarray(np.clip(audio, -1, 1)[None].astype(np.float32), format="flt",
                                           layout="mono")
        frame.rate = SAMPLE_RATE
        convert = av.AudioResampler(format=stream.codec_context.format, layout="mono", rate=SAMPLE_RATE)
        for converted in convert.resample(frame) + convert.resample(None):
            out.mux(stream.encode(converted))
        out.mux(stream.encode(None))
    return path


def through_codec(audio: np.ndarray, codec: str, bitrate: int) -> np.ndarray:
    """The recording after a lossy codec and the grader's own decoder."""
    with tempfile.TemporaryDirectory(prefix="augment-") as folder:
        return load_audio(encode(audio, codec, bitrate, Path(folder)))


# The channels a training view can go through, in the order views take them: view v of a clip goes through
# CHANNELS[v % len(CHANNELS)], so three views give every clip a noisy, a reverberant and a telephone recording (the
# channels that move an untrained score most) and five give it every channel.
CHANNELS = ("noise", "room", "telephone", "codec", "clean")
RECIPE = "channels-v2"  # names these settings in the encoder cache: a change of settings must change it


def augment(audio: np.ndarray, rng: np.random.Generator, channel: str | None = None) -> np.ndarray:
    """One random recording of the same answer, for training: one `channel` (drawn from CHANNELS when None): noise
    at 5-25 dB SNR, pink or rumble; a room of RT60 0.2-0.8 s; a telephone band; MP3 at 24-64 kbps or Opus at
    12-32 kbps; or as it is. Half the time 0-3 s of room tone before and 0-1.5 s after (the trim must then find the
    answer), and a gain of -20 to 0 dB. The benchmark's settings are fixed points inside these ranges; its noise,
    rooms and seeds are its own."""
    audio = np.asarray(audio, dtype=np.float32)
    channel = channel or CHANNELS[rng.integers(len(CHANNELS))]
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
    if channel == "noise":
        audio = noise(audio, rng, rng.uniform(5, 25), rng.choice([1.0, 2.0]))
    elif channel == "room":
        audio = reverb(audio, rng, rng.uniform(0.2, 0.8))
    elif channel == "telephone":
        audio = telephone(audio, rng.uniform(200, 400), rng.uniform(3000, 3800))
    if rng.random() < 0.5:
        audio = room_tone(audio, rng, rng.uniform(0, 3), rng.uniform(0, 1.5), rng.uniform(-70, -50))
    audio = np.clip(audio * 10 ** (rng.uniform(-20, 0) / 20), -1, 1).astype(np.float32)
    if channel == "codec":
        audio = (through_codec(audio, "mp3", int(rng.choice([24, 32, 48, 64])) * 1000) if rng.random() < 0.5 else
                 through_codec(audio, "opus", int(rng.choice([12, 16, 24, 32])) * 1000))
    return audio
