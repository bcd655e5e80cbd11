"""The reference text (what a read-aloud task asked for) against the transcript (what Whisper heard), word by word.

Both sides are compared as spoken words: lower case, punctuation dropped, hyphenated words split, so that
speechocean762's "WE CALL IT BEAR" matches "We call it bear." The edit-distance alignment is jiwer's.
"""

from dataclasses import asdict, dataclass

import jiwer

from .lexicon import spelling

OPS = ("correct", "substituted", "omitted", "inserted")
_JIWER_OPS = {"equal": "correct", "substitute": "substituted", "delete": "omitted", "insert": "inserted"}


@dataclass
class WordOp:
    op: str  # one of OPS
    reference: str | None  # the reference word (None: inserted)
    heard: int | None  # index of the transcript word (None: omitted)

    def to_dict(self) -> dict:
        return asdict(self)


def spoken_words(text: str) -> list[str]:
    """Words as compared: "Well-known, isn't it?" -> ["well", "known", "isn't", "it"]."""
    return [w for w in map(spelling, text.replace("-", " ").split()) if w]


def align(reference: str, transcript: list[str]) -> list[WordOp]:
    """One op per reference word (correct, substituted, omitted) and per extra transcript word (inserted), in
    spoken order. `transcript` is the transcript's words; `heard` indexes it (a word of punctuation only, or
    one that is half of a hyphenated word, is skipped or counted as its own word)."""
    ref = spoken_words(reference)
    hyp, index = [], []
    for i, word in enumerate(transcript):
        for piece in spoken_words(word):
            hyp.append(piece)
            index.append(i)
    if not ref:
        return [WordOp("inserted", None, i) for i in dict.fromkeys(index)]
    if not hyp:
        return [WordOp("omitted", w, None) for w in ref]
    ops = []
    for chunk in jiwer.process_words(" ".join(ref), " ".join(hyp)).alignments[0]:
        op = _JIWER_OPS[chunk.type]
        refs = range(chunk.ref_start_idx, chunk.ref_end_idx)
        hyps = range(chunk.hyp_start_idx, chunk.hyp_end_idx)
        if op == "omitted":
            ops += [WordOp(op, ref[r], None) for r in refs]
        elif op == "inserted":
            ops += [WordOp(op, None, index[h]) for h in hyps]
        else:  # correct and substituted chunks pair words one to one
            ops += [WordOp(op, ref[r], index[h]) for r, h in zip(refs, hyps)]
    return ops


def counts(ops: list[WordOp]) -> dict[str, int]:
    return {op: sum(o.op == op for o in ops) for op in OPS}
