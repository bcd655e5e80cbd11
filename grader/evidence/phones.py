"""Phone-level detail for read-aloud speech: the phones each reference word should have against those heard.

The phones heard come from hama's phoneme recogniser (CTC, weights inside its PyPI wheel, ~0.05 s per second of
audio on one CPU core); the phones expected from the CMU Pronouncing Dictionary, or hama's grapheme-to-phoneme
model for a word it lacks. The heard phones are shared out among the reference words by an edit-distance
alignment of the whole sentence, then each word is scored against its closest dictionary pronunciation.

Differences an examiner would not mark are not counted: stressed and unstressed schwa (ʌ/ə, ɝ/ɚ), the
cot-caught merger (ɑ/ɔ), and length or aspiration marks. hama is optional: without it there is no phone detail.
"""

import importlib.util
from dataclasses import dataclass
from functools import lru_cache

import jiwer
import numpy as np
from rapidfuzz.distance import Levenshtein

from ..audio import SAMPLE_RATE
from .lexicon import pronunciations

UNAVAILABLE = "phone-level detail unavailable: the hama package is not installed (pip install hama)"
ARPABET = {
    "AA": "ɑ", "AE": "æ", "AH": "ʌ", "AO": "ɔ", "AW": "aʊ", "AY": "aɪ", "B": "b", "CH": "t͡ʃ", "D": "d", "DH": "ð",
    "EH": "ɛ", "ER": "ɝ", "EY": "eɪ", "F": "f", "G": "g", "HH": "h", "IH": "ɪ", "IY": "i", "JH": "d͡ʒ", "K": "k",
    "L": "l", "M": "m", "N": "n", "NG": "ŋ", "OW": "oʊ", "OY": "ɔɪ", "P": "p", "R": "ɹ", "S": "s", "SH": "ʃ",
    "T": "t", "TH": "θ", "UH": "ʊ", "UW": "u", "V": "v", "W": "w", "Y": "j", "Z": "z", "ZH": "ʒ",
}
UNSTRESSED = {"AH0": "ə", "ER0": "ɚ"}
SAME = {"ə": "ʌ", "ɚ": "ɝ", "ɔ": "ɑ", "ɡ": "g", "r": "ɹ", "ɫ": "l"}
MARKS = {"ː", "ˑ", "ʰ", "ʲ", "ʷ"}


@dataclass
class WordPhones:
    expected: list[str]  # the closest dictionary pronunciation
    heard: list[str]
    errors: int  # phones substituted, left out or added

    @property
    def accuracy(self) -> float:
        return max(0.0, 1 - self.errors / len(self.expected)) if self.expected else 0.0

    def to_dict(self) -> dict:
        return {"expected": " ".join(self.expected), "heard": " ".join(self.heard), "errors": self.errors,
                "accuracy": round(self.accuracy, 3)}


def available() -> bool:
    return importlib.util.find_spec("hama") is not None


def recognise(audio: np.ndarray) -> list[str]:
    """The phones heard in 16 kHz audio, as IPA."""
    return [p for p in _recogniser().transcribe_waveform(audio, SAMPLE_RATE).phonemes if p not in MARKS]


def expected(word: str) -> list[list[str]]:
    """The word's pronunciations as IPA: the dictionary's, else hama's guess from the spelling."""
    known = [[UNSTRESSED.get(p) or ARPABET[p.rstrip("012")] for p in phones] for phones in pronunciations(word)]
    if known:
        return known
    guess = _g2p().predict(word.lower()).alignments
    return [[a.phoneme for a in guess if a.phoneme not in MARKS]] if guess else []


def compare(reference: list[str], heard: list[str]) -> list[WordPhones | None]:
    """Per reference word, its phones against those heard (None for a word with no known pronunciation)."""
    variants = [expected(word) for word in reference]
    flat, owner = [], []
    for i, options in enumerate(variants):
        if options:
            flat += options[0]
            owner += [i] * len(options[0])
    shared: list[list[str]] = [[] for _ in reference]
    if flat and heard:
        out = jiwer.process_words(" ".join(map(_key, flat)), " ".join(map(_key, heard)))
        for chunk in out.alignments[0]:
            hyps = heard[chunk.hyp_start_idx:chunk.hyp_end_idx]
            if chunk.type == "insert":  # phones between words belong to the word before (the first, at the start)
                shared[owner[max(chunk.ref_start_idx - 1, 0)]] += hyps
            elif chunk.type != "delete":
                for r, phone in zip(range(chunk.ref_start_idx, chunk.ref_end_idx), hyps):
                    shared[owner[r]].append(phone)
    result: list[WordPhones | None] = []
    for options, got in zip(variants, shared):
        if not options:
            result.append(None)
            continue
        keys = [_key(p) for p in got]
        best = min(options, key=lambda o: Levenshtein.distance([_key(p) for p in o], keys))
        result.append(WordPhones(best, got, Levenshtein.distance([_key(p) for p in best], keys)))
    return result


def _key(phone: str) -> str:
    return SAME.get(phone, phone)


@lru_cache(maxsize=1)
def _recogniser():
    import hama

    return hama.ASRModel()


@lru_cache(maxsize=1)
def _g2p():
    import hama

    return hama.G2PModel()
