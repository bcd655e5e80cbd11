"""Temporal fluency measures from voice activity and the transcript, after de Jong & Wempe (2009).

Time is measured by Silero VAD (grader.audio.vad), words by the transcript. Every rate is over the speaking span: from
the first to the last speech the VAD hears, so silence before the candidate starts and after they stop does not
count. Within the span, a silent pause is a gap between stretches of speech of at least `min_pause_s` (250 ms, the
usual threshold: shorter gaps are stop closures and breaths within fluent speech), and phonation time is the span
less its silent pauses. So span = phonation time + pauses, and:

    speech rate        words per minute and syllables per second over the span
    articulation rate  syllables per second over phonation time (how fast the speech itself is)
    phonation ratio    phonation time / span

Syllables are counted in the CMU Pronouncing Dictionary (grader.evidence.lexicon).
"""

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from .lexicon import count_syllables
from ..audio.vad import SpeechSegment

MIN_PAUSE_S = 0.25


@dataclass
class Pause:
    start: float
    end: float
    after: str | None  # the transcript word before the pause, if any
    before: str | None  # the word after it

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Measures:
    """Word and syllable counts, and the rates built on them, are None without a transcript."""

    duration_s: float  # the whole recording
    span_s: float  # first to last speech
    phonation_s: float  # span less silent pauses
    words: int | None
    syllables: int | None
    speech_rate_wpm: float | None
    speech_rate_sps: float | None
    articulation_rate_sps: float | None
    pauses: int
    mean_pause_s: float | None  # None without pauses
    longest_pause_s: float | None
    phonation_ratio: float

    def to_dict(self) -> dict[str, float | int | None]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def silent_pauses(speech: list[SpeechSegment], words: Iterable = (), min_pause_s: float = MIN_PAUSE_S) -> list[Pause]:
    """Gaps of at least `min_pause_s` between stretches of speech, each with the transcript words on either side
    (a word whose middle is before the pause's middle is before it)."""
    words = list(words)
    pauses = []
    for a, b in zip(speech, speech[1:]):
        if b.start - a.end >= min_pause_s:
            middle = (a.end + b.start) / 2
            before = [w.text for w in words if (w.start + w.end) / 2 < middle]
            after = [w.text for w in words if (w.start + w.end) / 2 >= middle]
            pauses.append(Pause(a.end, b.start, before[-1] if before else None, after[0] if after else None))
    return pauses


def measure(speech: list[SpeechSegment], words: list | None, duration_s: float,
            min_pause_s: float = MIN_PAUSE_S) -> tuple[Measures, list[Pause]]:
    """The measures and the silent pauses of a recording; `words` (None: no transcript) have `text`, `start`
    and `end`."""
    pauses = silent_pauses(speech, words or [], min_pause_s)
    span = speech[-1].end - speech[0].start if speech else 0.0
    phonation = span - sum(p.duration for p in pauses)
    durations = [p.duration for p in pauses]
    n = len(words) if words is not None else None
    syllables = sum(count_syllables(w.text) for w in words) if words is not None else None

    def rate(count: int | None, seconds: float, scale: float = 1.0) -> float | None:
        return None if count is None else scale * count / seconds if seconds > 0 else 0.0

    measures = Measures(
        duration_s=duration_s, span_s=span, phonation_s=phonation, words=n, syllables=syllables,
        speech_rate_wpm=rate(n, span, 60), speech_rate_sps=rate(syllables, span),
        articulation_rate_sps=rate(syllables, phonation), pauses=len(pauses),
        mean_pause_s=sum(durations) / len(durations) if durations else None,
        longest_pause_s=max(durations, default=None), phonation_ratio=phonation / span if span else 0.0)
    return measures, pauses
