"""A transcript with word timestamps from the Whisper the grader already holds, with its LoRA adapters off.

The grader's own model is used, so there is no second download or load. Its LoRA adapters were trained to score,
not to transcribe: switched off, the decoder is stock Whisper. Word times come from cross-attention dynamic time
warping on Whisper's alignment heads (transformers' `return_token_timestamps`), then are kept inside the speech
that the voice-activity detector found. A word's probability is the mean over its tokens of the probability
Whisper gave the token's text in any case or spacing (so that "three" is not doubted for not being "Three").
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.modeling_outputs import BaseModelOutput

from ..audio import SAMPLE_RATE
from ..audio.vad import SpeechSegment, audible, speech_segments
from ..backbones import WhisperBackbone

if TYPE_CHECKING:
    from ..inference import Grader

MIN_WORD_S = 0.1  # the least speech a word is given: shorter, DTW has not timed it
UNAVAILABLE = "transcript unavailable for this backbone (it has no Whisper decoder)"
NO_ALIGNMENT = "transcript unavailable: this Whisper model names no alignment heads, which word times need"


@dataclass
class Word:
    text: str
    start: float  # seconds from the start of the recording
    end: float
    probability: float  # mean probability of the word's tokens, ignoring case and spacing
    low_confidence: bool = False


@dataclass
class Transcript:
    text: str
    words: list[Word] = field(default_factory=list)
    note: str | None = None  # why there is no transcript, when there is none

    @property
    def available(self) -> bool:
        return self.note is None


@dataclass(frozen=True)
class TranscribeOptions:
    low_confidence: float = 0.5  # words whose probability is below this are marked for the examiner
    window_s: float = 30.0  # Whisper hears 30 s at a time: longer recordings are cut in pauses
    spell_numbers: bool = True  # suppress digit tokens, so "zero three" is two words as spoken, not "03"
    tokens_per_second: float = 8.0  # bound on tokens per second of audio: stops a hallucination loop early
    compression_ratio: float = 2.4  # a transcript compressing better than this (zlib), or repeating a sequence of
    no_repeat_ngram: int = 3  # this many tokens, is a loop: decoded again with no such sequence allowed twice


def transcribe(grader: Grader, audio: np.ndarray, options: TranscribeOptions = TranscribeOptions(),
               speech: list[SpeechSegment] | None = None) -> Transcript:
    """English transcript of 16 kHz audio by the grader's own Whisper, asked for through `Grader.stock_whisper`
    (adapters off; no grade runs meanwhile). `speech`: the recording's speech segments, if already found."""
    speech = speech_segments(audio) if speech is None else speech
    words: list[Word] = []
    with grader.stock_whisper() as whisper:
        if whisper is None:
            return Transcript("", note=UNAVAILABLE)
        if not getattr(whisper.model.generation_config, "alignment_heads", None):
            return Transcript("", note=NO_ALIGNMENT)
        for start, end in windows(len(audio), speech, options.window_s):
            words += _window_words(whisper, audio[start:end], start / SAMPLE_RATE, options)
    words = place_in_speech(words, audible(audio, speech))
    for w in words:
        w.low_confidence = w.probability < options.low_confidence
    return Transcript(join_words(w.text for w in words), words)


def windows(samples: int, speech: list[SpeechSegment], window_s: float) -> list[tuple[int, int]]:
    """Sample ranges of at most `window_s`, cut in the middle of the latest pause that fits (hard cuts only
    where a stretch of speech runs longer than a window)."""
    size = int(window_s * SAMPLE_RATE)
    pauses = [int((a.end + b.start) / 2 * SAMPLE_RATE) for a, b in zip(speech, speech[1:])]
    out, start = [], 0
    while samples - start > size:
        fits = [p for p in pauses if start + SAMPLE_RATE < p <= start + size]
        cut = fits[-1] if fits else start + size
        out.append((start, cut))
        start = cut
    return out + [(start, samples)]


class _Suppress(LogitsProcessor):
    """Whisper's suppressed tokens as one precomputed mask. transformers' own processors rebuild it with
    torch.isin at every step, which takes 0.1-0.4 s a call on a busy multi-threaded CPU."""

    def __init__(self, always: torch.Tensor, at_begin: torch.Tensor):
        self.always, self.at_begin, self.begin_index = always, at_begin, 0

    def set_begin_index(self, begin_index: int) -> None:
        self.begin_index = begin_index

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        mask = self.always | self.at_begin if input_ids.shape[-1] == self.begin_index else self.always
        return scores.masked_fill(mask.to(scores.device), -float("inf"))


@lru_cache(maxsize=4)
def _digit_tokens(whisper: WhisperBackbone) -> torch.Tensor:
    """(vocabulary,) bool: the text tokens holding a digit."""
    end = whisper.tokenizer.eos_token_id
    return torch.tensor([i < end and any(c.isdigit() for c in t) for i, t in enumerate(whisper.token_texts)])


def _window_words(backbone: WhisperBackbone, audio: np.ndarray, offset: float,
                  options: TranscribeOptions) -> list[Word]:
    """Greedy decoding of one window (≤ 30 s), with token timestamps and probabilities, grouped into words. A
    transcript that compresses too well (openai/whisper's test) or repeats itself is Whisper looping: it is decoded
    again with no word sequence allowed twice."""
    model, processor, forms = backbone.model, backbone.processor, backbone.token_forms
    features = processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt",
                                           return_attention_mask=True)
    config = copy.deepcopy(model.generation_config)
    # max_length counts new tokens here (Whisper adds the prompt's); empty lists, not None (which generate() would
    # fill in from the model's config), keep transformers' slow suppression processors out.
    config.update(max_length=int(options.tokens_per_second * len(audio) / SAMPLE_RATE) + 8, max_new_tokens=None,
                  suppress_tokens=[], begin_suppress_tokens=[], do_sample=False, num_beams=1)
    if getattr(config, "is_multilingual", False):
        config.update(language="en", task="transcribe")
    masks = _masks(model.generation_config, model.config.vocab_size)
    suppress = _Suppress(masks[0] | (_digit_tokens(backbone) if options.spell_numbers else False), masks[1])
    with torch.inference_mode():
        # The encoder runs here, not in generate(): there it would also return every attention map (slow).
        encoded = model.model.encoder(features.input_features.to(backbone.device, model.dtype))
        for retry in (False, True):
            config.no_repeat_ngram_size = options.no_repeat_ngram if retry else 0
            out = model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=encoded.last_hidden_state),
                                 attention_mask=features.attention_mask, generation_config=config,
                                 logits_processor=LogitsProcessorList([suppress]), return_token_timestamps=True,
                                 return_dict_in_generate=True)
            sequence, times, scores = out["sequences"][0].tolist(), out["token_timestamps"][0].tolist(), out["scores"]
            first = len(sequence) - len(scores)  # the prompt: start of transcript, language, task, no timestamps
            text = processor.tokenizer.decode(sequence[first:], skip_special_tokens=True).encode()
            if (len(text) <= options.compression_ratio * len(zlib.compress(text))
                    and not repeats(sequence[first:], options.no_repeat_ngram)):
                break
    tokens = []
    for i, (token, step) in enumerate(zip(sequence[first:], scores)):
        probs = torch.softmax(step[0].float(), -1)
        heard = probs[forms == forms[token]].sum().item()
        tokens.append((token, times[first + i], times[min(first + i + 1, len(times) - 1)], heard))
    return group_words(processor.tokenizer, tokens, offset)


def repeats(tokens: list[int], n: int) -> bool:
    """Whether some `n` tokens in a row occur twice: how a loop looks in a short window, where zlib finds too
    little to compress ("What's your name? What's your name?" for a weak reading of "HE WOULD NEVER DO THIS")."""
    grams = [tuple(tokens[i: i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) > len(set(grams))


def _masks(config, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Whisper's always-suppressed tokens and those suppressed at the first step, as masks over the vocabulary."""
    def mask(ids) -> torch.Tensor:
        m = torch.zeros(size, dtype=torch.bool)
        m[list(ids or [])] = True
        return m

    return mask(config.suppress_tokens), mask(config.begin_suppress_tokens)


def group_words(tokenizer, tokens: list[tuple[int, float, float, float]], offset: float = 0.0) -> list[Word]:
    """(token id, start, end, probability) to words: a token starting with a space starts a word, and so does
    one after a hyphen (Whisper writes unclear speech as "b-hive-w-clap", one "word" of many). Punctuation
    joins the word before it without stretching its end or counting in its probability."""
    groups: list[list[tuple[str, float, float, float]]] = []
    for token, start, end, prob in tokens:
        if token >= tokenizer.eos_token_id:  # end of text, and special tokens
            continue
        text = tokenizer.decode([token])
        if text.startswith(" ") or not groups or groups[-1][-1][0].endswith("-"):
            groups.append([])
        groups[-1].append((text, start, end, prob))
    words = []
    for group in groups:
        spoken = [t for t in group if any(c.isalnum() for c in t[0])]
        if spoken:
            words.append(Word("".join(t[0] for t in group).strip(), offset + spoken[0][1], offset + spoken[-1][2],
                              float(np.mean([t[3] for t in spoken]))))
        elif words:  # a group of punctuation only ("-", "..."): it belongs to the word before
            words[-1].text += "".join(t[0] for t in group).strip()
    return words


def place_in_speech(words: list[Word], speech: list[SpeechSegment]) -> list[Word]:
    """Word times on the speech the VAD heard, so that "play word" plays the word. DTW's times are read on a clock
    that runs only during speech (a word DTW put in a pause lands at the pause's edge: DTW starts the first word at
    0 s and often leaves the last one without length), each word gets at least MIN_WORD_S of speech, in order and
    without overlap, and the times are read back on the recording's clock."""
    if not words or not speech:
        return words
    starts, ends = np.array([s.start for s in speech]), np.array([s.end for s in speech])
    before = np.r_[0.0, np.cumsum(ends - starts)]  # speech heard before each segment starts, and in all

    def speech_time(t: float) -> float:
        i = max(int(np.searchsorted(starts, t, side="right")) - 1, 0)
        return before[i] + float(np.clip(t - starts[i], 0.0, ends[i] - starts[i]))

    def clock_time(u: float, end: bool) -> float:  # a word's end is read at a segment's end, its start at the next
        i = min(int(np.searchsorted(before[1:], u, side="left" if end else "right")), len(speech) - 1)
        return float(starts[i] + u - before[i])

    least = min(MIN_WORD_S, before[-1] / len(words))
    spans, last = [], 0.0
    for w in words:
        start = max(speech_time(w.start), last)
        last = max(speech_time(w.end), start + least)
        spans.append([start, last])
    last = before[-1]
    for span in reversed(spans):  # back inside the speech at the end, keeping order and lengths
        span[1] = min(span[1], last)
        span[0] = last = min(span[0], span[1] - least)
    for w, (start, end) in zip(words, spans):
        w.start, w.end = clock_time(start, end=False), clock_time(end, end=True)
    return words


def join_words(texts: Iterable[str]) -> str:
    """Words back into running text: pieces of a hyphenated word join without a space."""
    out = ""
    for text in texts:
        out += text if not out or out.endswith("-") else " " + text
    return out
