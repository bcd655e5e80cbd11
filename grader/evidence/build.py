"""The evidence shown beside a score, so that an examiner can agree or disagree quickly: the transcript with word
times, fluency measures and pauses, and (given the reference text of a read-aloud task) which words were left out,
added, or likely mispronounced.

Evidence is computed after the grade, from the same audio, and is only ever shown and stored: nothing here feeds
back into a score. The result is plain JSON (stored with the grade, exported with the history); "version" says
how to read it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

import numpy as np

from . import phones
from ..audio import SAMPLE_RATE, SpeechSegment, speech_segments
from ..backbones import WhisperBackbone
from .alignment import align, counts, spoken_words
from .fluency import MIN_PAUSE_S, measure
from .transcribe import TranscribeOptions, Transcript, transcribe

if TYPE_CHECKING:
    from ..inference import Grader

VERSION = 1


@dataclass(frozen=True)
class EvidenceOptions:
    transcribe: TranscribeOptions = field(default_factory=TranscribeOptions)
    min_pause_s: float = MIN_PAUSE_S
    phone_accuracy: float = 0.5  # a word with fewer of its phones heard right is marked as likely mispronounced
    phones: bool = True  # phone-level detail, where hama is installed


def build_evidence(grader: Grader, audio: np.ndarray, reference_text: str | None = None,
                   speech: list[SpeechSegment] | None = None, options: EvidenceOptions = EvidenceOptions()) -> dict:
    """The evidence for one 16 kHz recording, as JSON-ready values (times in seconds from its start). `speech`:
    its speech segments where the grade already found them (`Assessment.speech`), so the VAD does not run twice."""
    start = time.perf_counter()
    speech = speech_segments(audio) if speech is None else list(speech)
    transcript = transcribe(grader, audio, options.transcribe, speech)
    words = transcript.words if transcript.available else None
    measures, pauses = measure(speech, words, len(audio) / SAMPLE_RATE, options.min_pause_s)
    backbone = grader.model.backbone
    evidence = {
        "version": VERSION,
        "sources": {"transcript": f"Whisper {backbone.config.model}, scoring adapters off"
                    if isinstance(backbone, WhisperBackbone) else None,
                    "speech": f"silero-vad {_version('silero-vad')}",
                    "phones": f"hama {_version('hama')}" if options.phones and phones.available() else None},
        "transcript": {"text": transcript.text, "note": transcript.note,
                       "low_confidence_below": options.transcribe.low_confidence,
                       "words": [{"text": w.text, "start": _t(w.start), "end": _t(w.end),
                                  "probability": round(w.probability, 3), "low_confidence": w.low_confidence}
                                 for w in transcript.words]},
        "speech": [[_t(s.start), _t(s.end)] for s in speech],
        "measures": measures.to_dict(),
        "pauses": [{"start": _t(p.start), "end": _t(p.end), "duration": _t(p.duration), "after": p.after,
                    "before": p.before} for p in pauses],
        "reference": None,
    }
    if reference_text and reference_text.strip() and transcript.available:
        evidence["reference"] = compare_reference(reference_text.strip(), transcript, audio, options)
    evidence["latency_s"] = round(time.perf_counter() - start, 3)
    return evidence


def compare_reference(reference: str, transcript: Transcript, audio: np.ndarray, options: EvidenceOptions) -> dict:
    """Each reference word as read: correct, substituted (heard as another word), omitted; extra words as
    inserted. A word read is likely mispronounced when Whisper heard another word, was unsure of it, or (with hama)
    fewer than `options.phone_accuracy` of its phones were heard right."""
    ops = align(reference, [w.text for w in transcript.words])
    use_phones = options.phones and phones.available()
    detail = phones.compare(spoken_words(reference), phones.recognise(audio)) if use_phones else []
    rows, r = [], 0
    for op in ops:
        heard = transcript.words[op.heard] if op.heard is not None else None
        row = {"op": op.op, "reference": op.reference, "heard": heard.text if heard else None,
               "start": _t(heard.start) if heard else None, "end": _t(heard.end) if heard else None,
               "probability": round(heard.probability, 3) if heard else None, "phones": None, "why": []}
        if op.reference is not None:
            word_phones = detail[r] if detail else None
            r += 1
            row["phones"] = word_phones.to_dict() if word_phones else None
            if op.op == "substituted":
                row["why"].append(f"heard as “{heard.text}”")
            if heard and heard.low_confidence and op.op != "omitted":
                row["why"].append(f"Whisper unsure ({heard.probability:.0%})")
            if op.op != "omitted" and word_phones and word_phones.accuracy < options.phone_accuracy:
                row["why"].append(f"phones [{' '.join(word_phones.heard)}] for [{' '.join(word_phones.expected)}]")
        row["likely_mispronounced"] = bool(row["why"])
        rows.append(row)
    return {"text": reference, "counts": counts(ops), "words": rows,
            "phones_note": None if use_phones or not options.phones else phones.UNAVAILABLE}


def _t(seconds: float) -> float:
    return round(float(seconds), 3)


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "?"
