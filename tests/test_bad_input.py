"""A corpus of bad and odd uploads, built in tmp_path from real speech where that makes sense. Every case ends
in a specific message or gate code: never a traceback, never a silent grade. Then fuzzing for the same."""

import io
import re
import struct
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import grader.audio.decode
from grader.audio import SAMPLE_RATE, AudioError, AudioLimits, load_audio
from grader.audio import GateResult, check_audio, inspect_file

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def speech(speech_clip) -> np.ndarray:
    """2.6 s of a child reading "WE CALL IT BEAR", 16 kHz."""
    return load_audio(speech_clip)


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    import librosa

    return librosa.resample(audio, orig_sr=SAMPLE_RATE, target_sr=rate)


def wav_header(data_bytes: int, rate: int, channels: int = 1, bits: int = 16, format_tag: int = 1) -> bytes:
    """A canonical 44-byte WAV header, for files whose header and body disagree (or whose body is sparse)."""
    fmt = struct.pack("<HHIIHH", format_tag, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", data_bytes))


def sparse_wav(path: Path, seconds: float, rate: int, bits: int) -> Path:
    """A long WAV of silence that costs no disk: the body is a hole in the file."""
    data_bytes = int(seconds * rate) * bits // 8
    with open(path, "wb") as file:
        file.write(wav_header(data_bytes, rate, bits=bits))
        file.truncate(44 + data_bytes)
    return path


def encode(target: str | io.RawIOBase, audio: np.ndarray, container: str, codec: str, rate: int = SAMPLE_RATE) -> None:
    """Encode audio with PyAV at 48 kHz, as a browser's MediaRecorder would."""
    with av.open(target, "w", format=container) as output:
        stream = output.add_stream(codec, rate=48_000, layout="mono")
        frame = av.AudioFrame.from_ndarray(audio[None].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = rate
        to_codec = av.AudioResampler(format=stream.format, layout="mono", rate=48_000)
        for chunk in to_codec.resample(frame) + to_codec.resample(None):
            output.mux(stream.encode(chunk))
        output.mux(stream.encode(None))


class Unseekable(io.RawIOBase):
    """A write-only stream: the muxer cannot go back to write the duration, as in a browser's WebM."""

    def __init__(self, file: io.BufferedWriter):
        self.file = file

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:
        return self.file.write(data)


def damaged(data: bytes, start: float, end: float) -> bytes:
    """`data` with the bytes between two fractions of its length replaced by noise."""
    a, b = int(len(data) * start), int(len(data) * end)
    return data[:a] + RNG.integers(0, 256, b - a, dtype=np.uint8).tobytes() + data[b:]


def written(path: Path, audio: np.ndarray, rate: int = SAMPLE_RATE, **kwargs) -> Path:
    sf.write(path, audio, rate, **kwargs)
    return path


def as_bytes(audio: np.ndarray, extension: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, SAMPLE_RATE, format=extension, **kwargs)
    return buffer.getvalue()


# name -> (build(folder, speech) -> path, expected code (None: scorable), message pattern or None, limits)
CASES: dict[str, tuple[Callable[[Path, np.ndarray], Path], str | None, str | None, AudioLimits]] = {}


def case(code: str | None, message: str | None = None, limits: AudioLimits = AudioLimits()):
    def register(build: Callable[[Path, np.ndarray], Path]) -> Callable[[Path, np.ndarray], Path]:
        CASES[build.__name__] = (build, code, message, limits)
        return build

    return register


def put(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# Files that cannot be read.
@case("unreadable", r'^The audio file "missing\.wav" was not found\.$')
def missing_file(d, speech):
    return d / "missing.wav"


@case("unreadable", r'^"empty\.wav" is empty \(0 bytes\)\.$')
def empty_file(d, speech):
    return put(d / "empty.wav", b"")


@case("unreadable", r'^"zero\.wav" holds no audio samples \(only a header\)\.$')
def zero_length_wav(d, speech):
    return written(d / "zero.wav", np.zeros(0, dtype=np.float32))


@case("unreadable", r"holds no audio samples \(only a header\)")
def header_only_wav(d, speech):
    return put(d / "header.wav", as_bytes(speech, "WAV")[:44])


@case("unreadable", r'^"cut\.flac" is truncated or damaged: its audio could not be decoded to the end\.$')
def truncated_flac(d, speech):
    data = as_bytes(speech, "FLAC")
    return put(d / "cut.flac", data[: len(data) // 2])


@case("unreadable", r"is truncated or damaged: only 1\.\d s of the 2\.6 s its header announces could be decoded")
def truncated_mp3(d, speech):
    data = as_bytes(speech, "MP3")
    return put(d / "cut.mp3", data[: len(data) // 2])


@case("unreadable", r"^\"corrupt\.mp3\" is truncated or damaged: ")
def corrupt_mp3(d, speech):
    return put(d / "corrupt.mp3", damaged(as_bytes(speech, "MP3"), 0.05, 0.5))


@case("unreadable", r"is truncated or damaged: only 1\.\d s of the 2\.6 s")
def truncated_webm(d, speech):
    encode(str(d / "full.webm"), speech, "webm", "libopus")
    data = (d / "full.webm").read_bytes()
    return put(d / "cut.webm", data[: len(data) // 2])


@case("unreadable", r'^"junk\.mp3" could not be read as audio: it is not a sound file, it is damaged, or its format '
                    r"is not supported\.$")
def mp3_header_then_junk(d, speech):
    return put(d / "junk.mp3", as_bytes(speech, "MP3")[:4] + RNG.integers(0, 256, 20_000, dtype=np.uint8).tobytes())


@case("unreadable", r'^"picture\.wav" is not an audio file: it holds no audio track\.$')
def png_renamed_wav(d, speech):
    return put(d / "picture.wav", b"\x89PNG\r\n\x1a\n" + bytes(2000))


@case("unreadable", r"could not be read as audio")
def text_file(d, speech):
    return put(d / "notes.wav", "This is my answer, typed instead of spoken.\n".encode() * 50)


@case("unreadable", r"could not be read as audio")
def random_bytes(d, speech):
    return put(d / "noise.flac", RNG.integers(0, 256, 10_000, dtype=np.uint8).tobytes())


@case("unreadable", r"could not be read as audio")
def m4a_without_its_index(d, speech):  # an upload cut short: the mp4 index (moov) comes last
    encode(str(d / "full.m4a"), speech, "ipod", "aac")
    data = (d / "full.m4a").read_bytes()
    return put(d / "cut.m4a", data[: len(data) // 2])


@case("unreadable", r"uses an audio encoding that is not supported")
def unknown_wav_codec(d, speech):
    return put(d / "codec.wav", wav_header(32_000, SAMPLE_RATE, format_tag=0x1234) + bytes(32_000))


@case("unreadable", r"has an unsupported sample rate \(1 Hz\)")
def absurd_sample_rate(d, speech):
    return put(d / "rate.wav", wav_header(32_000, 1) + bytes(32_000))


@case("unreadable", r'^"nan\.wav" holds invalid samples \(NaN or infinite values\)\.$')
def nan_samples(d, speech):
    audio = speech.copy()
    audio[1000:1010] = np.nan
    return written(d / "nan.wav", audio, subtype="FLOAT")


@case("unreadable", r"holds invalid samples \(NaN or infinite values\)")
def inf_samples(d, speech):
    audio = speech.copy()
    audio[5] = -np.inf
    return written(d / "inf.wav", audio, subtype="DOUBLE")


@case("unreadable", r'^"a{40}…a{11}\.wav" is empty')
def very_long_name_in_message(d, speech):
    return put(d / ("a" * 240 + ".wav"), b"")


# Limits.
@case("too_long", r'^"ten\.flac" lasts 10 min; the limit is 2 min, so it is 8 min too long\.$')
def ten_minute_file(d, speech):
    return written(d / "ten.flac", np.tile(speech, 233)[: 600 * SAMPLE_RATE])


@case("too_long", r'^"hour\.wav" lasts 1 h 0 min; the limit is 2 min, so it is 58 min too long\.$')
def one_hour_file(d, speech):
    return sparse_wav(d / "hour.wav", 3600, 8000, bits=8)


@case("too_long", r'^"long\.wav" lasts 2 min 12 s; the limit is 2 min, so it is 12 s too long\.$')
def file_12_s_over_the_limit(d, speech):  # issue 16: once said "lasts 2 min; the limit is 2 min"
    return sparse_wav(d / "long.wav", 132, 8000, bits=8)


@case("too_large", r'^"big\.wav" is 51\.0 MB; the limit is 50 MB\.$')
def over_size_limit(d, speech):
    return sparse_wav(d / "big.wav", (51 * 2**20 - 44) / 32_000, SAMPLE_RATE, bits=16)


@case("too_long", r'^"live\.webm" lasts over 10 s, the limit\.$', AudioLimits(max_seconds=10))
def webm_without_duration_over_limit(d, speech):
    with open(d / "live.webm", "wb") as file:
        encode(Unseekable(file), np.tile(speech, 6), "webm", "libopus")
    return d / "live.webm"


@case("too_long")  # decodes (under the 5-min file limit) but is over the gate's 2 min
def two_and_a_half_minutes(d, speech):
    return written(d / "long.flac", np.tile(speech, 58))


# Readable, but not a scorable answer.
@case("silent")
def pure_silence(d, speech):
    return written(d / "silence.wav", np.zeros(3 * SAMPLE_RATE))


@case("silent")
def dc_offset_only(d, speech):
    return written(d / "dc.wav", np.full(3 * SAMPLE_RATE, 0.3))


@case("no_speech")
def white_noise(d, speech):
    return written(d / "noise.wav", np.clip(RNG.standard_normal(3 * SAMPLE_RATE) * 0.2, -1, 1))


@case("no_speech")
def pure_tone(d, speech):
    return written(d / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * np.arange(3 * SAMPLE_RATE) / SAMPLE_RATE))


@case("clipped")
def clipped_speech(d, speech):
    return written(d / "clipped.wav", np.clip(speech * 4, -1, 1))


@case("clipped")
def clipped_speech_in_aac(d, speech):  # AAC rounds off the flat tops that clipping leaves
    encode(str(d / "clipped.m4a"), np.clip(resample(speech, 48_000) * 4, -1, 1), "ipod", "aac", rate=48_000)
    return d / "clipped.m4a"


@case("clipped")
def float_speech_over_full_scale(d, speech):
    return written(d / "hot.wav", speech * 8, subtype="FLOAT")


@case("too_short")
def half_a_second(d, speech):
    return written(d / "short.wav", speech[int(0.8 * SAMPLE_RATE): int(1.3 * SAMPLE_RATE)])


@case("too_little_speech")
def a_word_in_a_minute_of_hiss(d, speech):
    audio = RNG.standard_normal(60 * SAMPLE_RATE) * 1e-3
    audio[30 * SAMPLE_RATE: 30 * SAMPLE_RATE + len(speech)] += speech
    return written(d / "forgot-to-stop.flac", audio)


# Odd but fine: these must be graded.
@case(None)
def flac_named_mp3(d, speech):
    return put(d / "answer.mp3", as_bytes(speech, "FLAC"))


@case(None)
def dc_offset_speech(d, speech):
    return written(d / "dc-speech.wav", speech + 0.3)


@case(None)
def speech_8k(d, speech):
    return written(d / "phone.wav", resample(speech, 8000), 8000)


@case(None)
def speech_48k_stereo(d, speech):
    left = resample(speech, 48_000)
    return written(d / "stereo.wav", np.stack([left, 0.5 * left], axis=1), 48_000)


@case(None)
def speech_96k_24bit(d, speech):
    return written(d / "studio.wav", resample(speech, 96_000), 96_000, subtype="PCM_24")


@case(None)
def quiet_speech(d, speech):
    return written(d / "quiet.wav", speech * 0.02)


@case(None)
def speech_m4a_aac(d, speech):
    encode(str(d / "safari.m4a"), speech, "ipod", "aac")
    return d / "safari.m4a"


@case(None)
def speech_webm_opus(d, speech):
    with open(d / "chrome.webm", "wb") as file:
        encode(Unseekable(file), speech, "webm", "libopus")
    return d / "chrome.webm"


@case(None)
def speech_ogg_opus(d, speech):
    encode(str(d / "firefox.ogg"), speech, "ogg", "libopus")
    return d / "firefox.ogg"


@case(None)
def flac_stream_without_length(d, speech):  # its header says "length unknown"
    with open(d / "streamed.flac", "wb") as file:
        encode(Unseekable(file), speech, "flac", "flac")
    return d / "streamed.flac"


@case(None)
def speech_mp3(d, speech):
    return put(d / "answer.mp3", as_bytes(resample(speech, 44_100), "MP3"))


@pytest.mark.parametrize("name", CASES)
def test_bad_input(tmp_path, speech, name):
    build, code, message, limits = CASES[name]
    path = build(tmp_path, speech)
    audio, result = inspect_file(path, limits)
    assert result.code == code, result.reason
    assert result.scorable == (code is None)
    if message:
        assert audio is None and result.reason is not None
        assert re.search(message, result.reason), result.reason
        with pytest.raises(AudioError, match=message):
            load_audio(path, limits)
    if audio is not None:
        assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all()
        assert set(result.measures) >= {"duration_s", "speech_s", "clipped_fraction", "dc_offset"}


def test_browser_formats_keep_the_speech(tmp_path, speech):
    """What a browser uploads decodes to the same speech, within the codec's delay."""
    for build in (speech_m4a_aac, speech_webm_opus, speech_ogg_opus):
        audio = load_audio(build(tmp_path, speech))
        lag = int(np.argmax(np.correlate(audio[:len(speech) + 600], speech[4000:20_000], "valid"))) - 4000
        aligned = audio[max(lag, 0):][: len(speech) - max(-lag, 0)]
        assert abs(lag) < 600 and np.corrcoef(aligned, speech[max(-lag, 0):][: len(aligned)])[0, 1] > 0.98


def test_one_hour_is_refused_without_decoding(tmp_path, speech, monkeypatch):
    path = one_hour_file(tmp_path, speech)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded samples of a file its header already refuses")

    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    start = time.perf_counter()
    with pytest.raises(AudioError, match="lasts 1 h 0 min") as error:
        load_audio(path)
    elapsed = time.perf_counter() - start
    assert error.value.code == "too_long" and elapsed < 5  # ~0.2 ms; loose, for busy machines
    print(f"refused in {elapsed * 1000:.1f} ms")


def test_stream_without_duration_stops_at_the_limit(tmp_path, speech, monkeypatch):
    """A browser's WebM does not say how long it is: decoding stops at the limit, not at the end."""
    with open(tmp_path / "live.webm", "wb") as file:
        encode(Unseekable(file), np.tile(speech, 50), "webm", "libopus")  # 2 min 9 s
    decoded, blocks = [], grader.audio.decode._av_blocks

    def counted(*args):
        for block in blocks(*args):
            decoded.append(len(block))
            yield block

    monkeypatch.setattr(grader.audio.decode, "_av_blocks", counted)
    with pytest.raises(AudioError, match="lasts over 5 s"):
        load_audio(tmp_path / "live.webm", AudioLimits(max_seconds=5))
    assert 5 * 48_000 < sum(decoded) < 6 * 48_000


@pytest.mark.parametrize("name", [
    "my answer (final).flac", "ответ ученика 🎤.flac", "..flac", "...flac", "..\\..\\etc passwd.flac",
    "-rf .flac", "line\nbreak.flac", "no-extension", "a" * 245 + ".flac", ".hidden.flac", "ca$h `whoami` ;.flac",
])
def test_odd_file_names(tmp_path, speech, name):
    path = written(tmp_path / name, speech, format="FLAC")
    audio, result = inspect_file(path)
    assert result.scorable and len(audio) == len(speech)


def test_dotdot_in_the_path(tmp_path, speech):
    (tmp_path / "sub").mkdir()
    written(tmp_path / "answer.flac", speech)
    assert inspect_file(tmp_path / "sub" / ".." / "answer.flac")[1].scorable


# Fuzzing: whatever the bytes, load_audio returns finite float32 mono audio or raises AudioError.
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def seeds(speech, scratch) -> dict[str, bytes]:
    """Real, short files whose headers the fuzzer mutates."""
    part = speech[: SAMPLE_RATE // 2]
    for container, codec, suffix in [("webm", "libopus", ".webm"), ("ogg", "libopus", ".ogg"), ("ipod", "aac", ".m4a")]:
        encode(str(scratch / f"seed{suffix}"), part, container, codec)
    return {".wav": as_bytes(part, "WAV"), ".flac": as_bytes(part, "FLAC"),
            **{suffix: (scratch / f"seed{suffix}").read_bytes() for suffix in (".webm", ".ogg", ".m4a")}}


def loads_or_refuses(path: Path) -> None:
    try:
        audio = load_audio(path, AudioLimits(max_seconds=30))
    except AudioError as error:
        assert str(error)
        return
    assert audio.dtype == np.float32 and audio.ndim == 1 and len(audio) > 0 and np.isfinite(audio).all()


@FUZZ
@given(data=st.binary(min_size=1, max_size=4096), suffix=st.sampled_from(["", ".wav", ".flac", ".mp3", ".webm"]))
def test_fuzz_random_bytes(scratch, data, suffix):
    loads_or_refuses(put(scratch / f"random{suffix}", data))


@FUZZ
@given(kind=st.sampled_from([".wav", ".flac", ".webm", ".ogg", ".m4a"]),
       edits=st.lists(st.tuples(st.integers(0, 199), st.integers(0, 255)), min_size=1, max_size=6),
       keep=st.one_of(st.none(), st.integers(1, 20_000)))
def test_fuzz_mutated_headers(scratch, seeds, kind, edits, keep):
    data = bytearray(seeds[kind])
    for position, value in edits:
        data[position % len(data)] = value
    loads_or_refuses(put(scratch / f"mutated{kind}", bytes(data[:keep])))


# Whatever the array, check_audio returns a GateResult with finite measures.
ARRAYS = st.one_of(
    hnp.arrays(np.float64, st.integers(0, 3000), elements=st.floats(allow_nan=True, allow_infinity=True)),
    hnp.arrays(np.float32, st.integers(0, 3000), elements=st.floats(-2, 2, width=32)),
    hnp.arrays(np.int16, st.integers(0, 3000)),
    st.builds(lambda n, scale, offset, seed: np.random.default_rng(seed).standard_normal(n) * scale + offset,
              st.integers(0, 3 * SAMPLE_RATE), st.floats(0, 1e30), st.floats(-2, 2), st.integers(0, 2**32 - 1)),
)


@FUZZ
@given(audio=ARRAYS)
def test_fuzz_check_audio(audio):
    result = check_audio(audio)
    assert isinstance(result, GateResult) and result.scorable == (result.code is None)
    assert result.scorable or result.reason
    assert all(np.isfinite(value) for value in result.measures.values())
