"""Audio in: decode any common format to 16 kHz mono (`decode`), find the speech in it (`vad`), and refuse what
cannot be graded (`gate`)."""

from .decode import MAX_SECONDS, SAMPLE_RATE, AudioError, AudioLimits, load_audio
from .gate import GateConfig, GateResult, check_audio, inspect_file
from .vad import SpeechSegment, at_typical_level, speech_segments

__all__ = ["MAX_SECONDS", "SAMPLE_RATE", "AudioError", "AudioLimits", "GateConfig", "GateResult", "SpeechSegment",
           "at_typical_level", "check_audio", "inspect_file", "load_audio", "speech_segments"]
