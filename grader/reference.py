"""Does the answer read the reference text? The grader's own Whisper, adapters off, scores each word of the text
given the audio the grade has just encoded: one decoder pass over the text, no transcription (which would cost
a decoder pass per token).

A word is found when the audio makes its tokens more likely than the same text after silence does, by at least
FOUND_GAIN nats per token on average: the silence baseline takes out how likely the words are as English, so
that "the" is not found because it is common. An answer that does not read the text raises few of its words.
Thresholds chosen on real speechocean762 clips (benchmarks/bench_reference.py; figures in benchmarks/README.md).
"""

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .audio import SAMPLE_RATE
from .backbones import AudioStates, WhisperBackbone
from .data import length_batches
from .evidence.alignment import spoken_words

FOUND_GAIN = 2.5  # nats per token the audio must add to a word for it to count as found
MIN_FOUND = 0.4  # share of the reference's words that must be found; below it the grade asks for a review


@dataclass(frozen=True)
class ReferenceMatch:
    words: int  # the reference text's spoken words (grader.evidence.alignment.spoken_words)
    found: int  # of them, how many the audio supports
    gains: tuple[float, ...] = ()  # each word's gain (`word_gains`): how clearly the audio says it (grader.probe)

    @property
    def share(self) -> float:
        return self.found / self.words if self.words else 1.0

    @property
    def mismatch(self) -> bool:
        return self.share < MIN_FOUND

    def to_dict(self) -> dict:
        return {"words": self.words, "found": self.found}


def checkable(texts: list[str | None]) -> list[int]:
    """Which responses are checked: those whose text has spoken words (an open answer, with none, is not)."""
    return [k for k, text in enumerate(texts) if text and spoken_words(text)]


def check_texts(whisper: WhisperBackbone, states, texts: list[str | None],
                batch_size: int = 16) -> list[ReferenceMatch | None]:
    """Each response's `match_references` against its text, None where it is not `checkable`; `states[k]`: response
    k's encoder states (a list, or a dict holding the checkable ones)."""
    checked = checkable(texts)
    found = dict(zip(checked, match_references(whisper, [states[k] for k in checked], [texts[k] for k in checked],
                                               batch_size)))
    return [found.get(k) for k in range(len(texts))]


def match_references(whisper: WhisperBackbone, states: list[torch.Tensor], texts: list[str],
                     batch_size: int = 16) -> list[ReferenceMatch]:
    """How many words of each text its response's encoder states (as `encode_audios` returns them) support.
    Run with the adapters off (`Grader.stock_whisper`)."""
    gains = word_gains(whisper, states, texts, batch_size)
    return [ReferenceMatch(len(g), int((g >= FOUND_GAIN).sum()), tuple(g.tolist())) for g in gains]


def word_gains(whisper: WhisperBackbone, states: list[torch.Tensor], texts: list[str],
               batch_size: int = 16) -> list[np.ndarray]:
    """Per text, each word's mean log-probability gain per token (nats) from its audio over silence, computed in
    batches of similar length."""
    gains: list[np.ndarray] = [np.empty(0)] * len(texts)
    for batch in length_batches([len(s) for s in states], batch_size):
        for i, g in zip(batch, _word_gains(whisper, [states[i] for i in batch], [texts[i] for i in batch])):
            gains[i] = g
    return gains


@torch.inference_mode()
def _word_gains(whisper: WhisperBackbone, states: list[torch.Tensor], texts: list[str]) -> list[np.ndarray]:
    pieces = [[whisper.tokenizer.encode(" " + w, add_special_tokens=False) for w in spoken_words(t)] for t in texts]
    ids = [tuple(whisper.prefix_ids + sum(p, [])[: whisper.MAX_TEXT_TOKENS]) for p in pieces]  # as the grade reads
    heard = _token_log_probs(whisper, AudioStates.batch(states).to(whisper.device), ids)
    gains = []
    for p, i, with_audio in zip(pieces, ids, heard):
        gain = (with_audio - _after_silence(whisper, i)).numpy()
        owner = np.repeat(np.arange(len(p)), [len(w) for w in p])[: len(gain)]
        gains.append(np.array([gain[owner == w].mean() for w in np.unique(owner)]))
    return gains


@lru_cache(maxsize=256)
def _after_silence(whisper: WhisperBackbone, ids: tuple[int, ...]) -> torch.Tensor:
    """What the decoder expects of a text alone (after a second of digital silence): the same for every answer to
    the same task, so computed once per text."""
    silence = whisper.encode(whisper.features([np.zeros(SAMPLE_RATE, dtype=np.float32)]))
    return _token_log_probs(whisper, silence, [ids])[0]


def _token_log_probs(whisper: WhisperBackbone, audio: AudioStates, ids: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """Per sequence, the log-probability of each token after the prefix, in any case or spacing (of all the
    tokens of its form)."""
    start, groups = len(whisper.prefix_ids), _forms(whisper)
    logits = whisper.model.proj_out(whisper.decoder_states(audio, [list(i) for i in ids])[:, start - 1: -1]).float()
    texts = [i[start:] for i in ids]
    width = max((len(groups[t]) for text in texts for t in text), default=1)
    members = torch.full((*logits.shape[:2], width), logits.shape[-1], dtype=torch.long)  # padding: a -inf column
    for row, text in enumerate(texts):
        for col, token in enumerate(text):
            members[row, col, : len(groups[token])] = torch.tensor(groups[token])
    padded = torch.cat([logits, logits.new_full((*logits.shape[:2], 1), -torch.inf)], -1)
    log_probs = (padded.gather(-1, members.to(logits.device)).logsumexp(-1) - logits.logsumexp(-1)).cpu()
    return [row[: len(text)] for row, text in zip(log_probs, texts)]


@lru_cache(maxsize=2)
def _forms(whisper: WhisperBackbone) -> dict[int, list[int]]:
    """Each token's form-mates (grader.backbones.whisper.WhisperBackbone.token_forms), itself included."""
    forms = whisper.token_forms.tolist()
    mates: dict[int, list[int]] = {}
    for token, form in enumerate(forms):
        mates.setdefault(form, []).append(token)
    return {token: mates[form] for token, form in enumerate(forms)}
