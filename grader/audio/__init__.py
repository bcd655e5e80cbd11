"""Audio in: decode any common format to 16 kHz mono (`decode`), find the speech in it (`vad`), and refuse what
cannot be graded (`gate`); trim the silence around the answer (`vad.trim_to_speech`)."""

from .decode import MAX_SECONDS, SAMPLE_RATE, AudioError, AudioLimits, load_audio
from .gate import GateConfig, GateResult, check_audio, inspect_file
from .vad import TRIM_MARGIN_S, SpeechSegment, at_typical_level, speech_segments, trim_to_speech

__all__ = ["MAX_SECONDS", "SAMPLE_RATE", "TRIM_MARGIN_S", "AudioError", "AudioLimits", "GateConfig", "GateResult",
           "SpeechSegment", "at_typical_level", "check_audio", "inspect_file", "load_audio", "speech_segments",
           "trim_to_speech"]
