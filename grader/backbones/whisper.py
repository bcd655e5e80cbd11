"""Whisper as a grading backbone: the encoder hears the audio, the decoder reads the prompt."""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property

import numpy as np
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ..audio import SAMPLE_RATE
from .base import (AnswerPrompt, Answers, AudioStates, Backbone, BackboneConfig, additive_mask, answer_layout,
                   length_mask, mean_and_spread)
from .weights import resolve_whisper


class WhisperBackbone(Backbone):
    """Whisper: the encoder hears the audio; the decoder reads a short prompt (the task prefix and,
    when given, the reference text) while attending to the audio, and its last state is pooled.

    Unlike stock Whisper, the encoder runs on the real length of the audio (masked in batches)
    instead of a 30-s window: a 4-s clip costs ~1/7 of the compute.
    """

    lora_patterns = {
        "text": r".*decoder\.layers\.\d+\.(self_attn|encoder_attn)\.(q_proj|v_proj)",
        "all": r".*(encoder|decoder)\.layers\.\d+\.(self_attn|encoder_attn)\.(q_proj|v_proj)",
    }

    def __init__(self, config: BackboneConfig):
        super().__init__()
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        self.config = config
        source = resolve_whisper(config.model)
        self.processor = WhisperProcessor.from_pretrained(source)
        self.model = WhisperForConditionalGeneration.from_pretrained(source, dtype=self.dtype,
                                                                     attn_implementation="sdpa")
        self.model.requires_grad_(False)
        self.audio_encoder = self.model.model.encoder
        d_model = self.model.config.d_model
        self.hidden_size = self.pooled_size(d_model, d_model)
        tokenizer = self.processor.tokenizer
        if getattr(self.model.generation_config, "is_multilingual", tokenizer.vocab_size > 51864):
            tokenizer.set_prefix_tokens(language="en", task="transcribe", predict_timestamps=False)
        else:
            tokenizer.set_prefix_tokens(predict_timestamps=False)
        self.prefix_ids = tokenizer.prefix_tokens
        self.end_id = tokenizer.eos_token_id
        self.tokenizer = tokenizer

    def features(self, audios: list[np.ndarray]) -> dict[str, torch.Tensor]:
        extractor = self.processor.feature_extractor
        if self.config.pad_to_30s:
            out = extractor(audios, sampling_rate=SAMPLE_RATE, return_tensors="pt", device=self.device.type)
            frames = torch.full((len(audios),), out.input_features.shape[-1])
            features = out.input_features
        else:  # each clip's log-mel alone, then zeros: a clip is encoded as it is alone, whatever its batch
            clips = [extractor(a, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding="longest",
                               device=self.device.type).input_features[0] for a in audios]
            frames = torch.tensor([c.shape[-1] for c in clips])
            features = clips[0].new_zeros(len(clips), clips[0].shape[0], int(frames.max()))
            for row, clip in zip(features, clips):
                row[:, : clip.shape[-1]] = clip
        if features.shape[-1] % 2:  # the second convolution halves the frames
            features = nn.functional.pad(features, (0, 1))
        return {"input_features": features.to(self.dtype), "frames": frames}

    def encode(self, features: dict[str, torch.Tensor]) -> AudioStates:
        encoder = self.audio_encoder
        x = features["input_features"].to(self.device, self.dtype)
        x = nn.functional.gelu(encoder.conv1(x))
        if not self.config.pad_to_30s:  # zero past each clip's (even) end, as conv2's own padding is for a clip alone
            frames = features["frames"].to(self.device)
            x = x * length_mask(frames + frames % 2, x.shape[-1])[:, None, :].to(x.dtype)
        x = nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
        x = x + encoder.embed_positions.weight[: x.shape[1]]
        lengths = ((features["frames"].to(self.device) + 1) // 2).clamp(max=x.shape[1])
        if self.config.pad_to_30s:
            mask = None  # the stock model attends to the padding; keep that for a faithful comparison
        else:
            keep = length_mask(lengths, x.shape[1])
            mask = additive_mask(keep[:, None, :].expand(-1, x.shape[1], -1), x.dtype)
        layers = [x]
        for layer in encoder.layers:
            x = layer(x, mask)
            layers.append(x)
        layers[-1] = encoder.layer_norm(x)
        return AudioStates(layers[-1], lengths, mean_and_spread(layers, lengths))

    MAX_TEXT_TOKENS = 200

    def prompt_ids(self, text: str | None) -> list[int]:
        words = self.processor.tokenizer.encode(" " + text.strip(), add_special_tokens=False) if text else []
        return self.prefix_ids + words[: self.MAX_TEXT_TOKENS] + [self.end_id]

    def word_spans(self, text: str) -> list[tuple[int, int]]:
        """Each whitespace-separated word's token positions [start, end) in prompt_ids(text). Whisper's BPE never
        joins two words (each word's tokens begin with its space), so word by word gives the same tokens."""
        tokenizer, start, spans = self.processor.tokenizer, len(self.prefix_ids), []
        cap = len(self.prefix_ids) + self.MAX_TEXT_TOKENS
        for word in text.split():
            end = start + len(tokenizer.encode(" " + word, add_special_tokens=False))
            spans.append((min(start, cap - 1), max(min(end, cap), min(start, cap - 1) + 1)))
            start = end
        return spans

    def represent(self, audio: AudioStates, prompts: list[str | None]) -> torch.Tensor:
        return self.represent_words(audio, prompts)[0]

    def represent_words(self, audio: AudioStates, prompts: list[str | None]) -> tuple[torch.Tensor, list]:
        """The pooled representation and, per response with a text, each word's mean decoder state over its
        tokens, (words, d_model) (None without a text): the word heads read the states the sentence heads pool."""
        ids = [self.prompt_ids(p) for p in prompts]
        x = self.decoder_states(audio, ids)
        ends = torch.tensor([len(i) - 1 for i in ids], device=self.device)
        last = x[torch.arange(len(ids), device=self.device), ends]
        words = [torch.stack([row[a:b].mean(0) for a, b in self.word_spans(p)]) if p and p.split() else None
                 for row, p in zip(x, prompts)]
        return self.pool(last, audio), words

    def decoder_states(self, audio: AudioStates, ids: list[list[int]]) -> torch.Tensor:
        """The decoder's final states (batch, longest, d_model) over token sequences of any lengths (padded on
        the right, causal), each attending to its own response's audio."""
        decoder = self.model.model.decoder
        lengths = torch.tensor([len(i) for i in ids], device=self.device)
        width = int(lengths.max())
        tokens = torch.tensor([i + [self.end_id] * (width - len(i)) for i in ids], device=self.device)
        x = decoder.embed_tokens(tokens) + decoder.embed_positions.weight[:width]
        keep = length_mask(lengths, width)
        causal = torch.tril(torch.ones(width, width, dtype=torch.bool, device=self.device))
        self_mask = additive_mask(causal[None] & keep[:, None, :], x.dtype)
        states = audio.states.to(x.dtype)
        cross_keep = length_mask(audio.lengths, states.shape[1])[:, None, :].expand(-1, width, -1)
        cross_mask = additive_mask(cross_keep, x.dtype)
        for layer in decoder.layers:
            x = layer(x, self_mask, states, encoder_attention_mask=cross_mask, use_cache=False)
        return decoder.layer_norm(x)

    @cached_property
    def token_texts(self) -> list[str]:
        """The text of each token of the model's vocabulary (computed once: about a second)."""
        tokenizer = self.tokenizer
        return [tokenizer.convert_tokens_to_string([t]) if t is not None else ""
                for t in tokenizer.convert_ids_to_tokens(range(self.model.config.vocab_size))]

    @cached_property
    def token_forms(self) -> torch.Tensor:
        """(vocabulary,) int: tokens with the same text up to case and spacing share a form, so that a word's
        probability does not depend on its capital or its leading space ("three", " Three")."""
        forms: dict[str, int] = {}
        return torch.tensor([forms.setdefault(t.strip().lower(), len(forms)) for t in self.token_texts])

    answer_lead = " "

    def answer(self, audio: AudioStates, prompts: list[str | None], prompt: AnswerPrompt,
               option_ids: list[int]) -> Answers:
        """Score tokens from the decoder: the task prefix and the reference text, then per aspect its name and a
        colon (" total:"), where the LM head (proj_out, tied to the token embeddings) is read over the option
        tokens. Whisper follows no instructions, so the instruction and the questions are not spent on it."""
        decoder = self.model.model.decoder
        blocks = [self.tokenizer.encode(f" {aspect}:", add_special_tokens=False) for aspect in prompt.aspects]
        prefixes = [self.prompt_ids(p)[:-1] for p in prompts]  # the text runs on into the blocks: no end token
        keep, positions, answers = answer_layout(torch.tensor([len(i) for i in prefixes], device=self.device),
                                                 [len(b) for b in blocks])
        suffix, width = sum(blocks, []), keep.shape[1]
        tokens = torch.tensor([i + suffix + [self.end_id] * (width - len(i) - len(suffix)) for i in prefixes],
                              device=self.device)
        x = decoder.embed_tokens(tokens) + decoder.embed_positions.weight[positions]
        self_mask = additive_mask(keep, x.dtype)
        states = audio.states.to(x.dtype)
        cross_mask = additive_mask(length_mask(audio.lengths, states.shape[1])[:, None, :].expand(-1, width, -1),
                                   x.dtype)
        for layer in decoder.layers:
            x = layer(x, self_mask, states, encoder_attention_mask=cross_mask, use_cache=False)
        x = decoder.layer_norm(x)[torch.arange(len(prompts), device=self.device)[:, None], answers]
        return Answers(x, self.model.proj_out(x)[..., option_ids])


@contextmanager
def adapters_off(model: nn.Module) -> Iterator[None]:
    """Stock Whisper for the duration: every LoRA layer disabled, and on leaving restored as it was (including
    which adapter weights train), along with the attention implementation that word timestamps switch to eager."""
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    disabled = [m.disable_adapters for m in layers]
    trainable = [(p, p.requires_grad) for m in layers for p in m.parameters()]
    attention = model.config._attn_implementation
    for m in layers:
        m.enable_adapters(False)
    try:
        yield
    finally:
        model.config._attn_implementation = attention
        for m, off in zip(layers, disabled):
            m.enable_adapters(not off)
        for p, flag in trainable:
            p.requires_grad_(flag)
