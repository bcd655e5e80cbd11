"""Backbones: audio (+ prompt text) in, one pooled vector per response out.

Each backbone works in two stages so that a frozen audio encoder is run once and cached:
    features(audios) -> encode(features) -> AudioStates -> represent(states, prompts) -> (B, hidden)
Heads, losses, training and the UI only see `hidden_size` and these three calls, so a new
backbone is one more class here and one more entry in BACKBONES.
"""

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn



POOLINGS = ("last", "last+mean")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class BackboneConfig:
    name: str = field(default="whisper", metadata={"flag": "backbone", "help": "whisper | qwen2-audio"})
    model: str = field(default="tiny.en", metadata={
        "help": "hub id, local folder, or an offline Whisper alias: tiny.en, base (see grader.backbones.weights)"})
    pad_to_30s: bool = field(default=False, metadata={
        "help": "Whisper only: the original fixed 30-s window (slower, for comparison)"})
    pooling: str = field(default="last", metadata={
        "help": "last: the final prompt position; last+mean: also the mean of the audio states"})
    prompt: str = field(default="Rate the English speaking proficiency of this response.",
                        metadata={"help": "Qwen2-Audio instruction"})
    dtype: str = field(default="float32", metadata={"help": " | ".join(DTYPES)})

    def __post_init__(self):
        from . import BACKBONES  # the registry imports this module

        if self.name not in BACKBONES:
            raise ValueError(f"unknown backbone {self.name!r}; known: {', '.join(BACKBONES)}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {self.pooling!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        if not self.model:
            raise ValueError("the backbone needs a model: a hub id, a local folder or an offline alias")


@dataclass
class AudioStates:
    """Padded encoder outputs with the real length of each response."""

    states: torch.Tensor  # (batch, frames, dim)
    lengths: torch.Tensor  # (batch,)

    def unbatch(self) -> list[torch.Tensor]:
        return [s[:n] for s, n in zip(self.states, self.lengths.tolist())]

    @staticmethod
    def batch(items: list[torch.Tensor]) -> "AudioStates":
        lengths = torch.tensor([len(x) for x in items])
        states = items[0].new_zeros(len(items), int(lengths.max()), items[0].shape[-1])
        for i, x in enumerate(items):
            states[i, : len(x)] = x
        return AudioStates(states, lengths)

    def to(self, device, dtype=None) -> "AudioStates":
        return AudioStates(self.states.to(device, dtype), self.lengths.to(device))


def additive_mask(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, queries, keys) bool -> the (batch, 1, queries, keys) additive mask HF attention layers take."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)[:, None]


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    mask = length_mask(lengths, states.shape[1]).unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1)


class Backbone(nn.Module):
    hidden_size: int
    config: BackboneConfig

    def features(self, audios: list[np.ndarray]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def encode(self, features: dict[str, torch.Tensor]) -> AudioStates:
        raise NotImplementedError

    def represent(self, audio: AudioStates, prompts: list[str | None]) -> torch.Tensor:
        raise NotImplementedError

    # Module name patterns for LoRA, by scope: "text" (the part after the audio encoder) or "all".
    lora_patterns: dict[str, str]
    # The module that encodes audio: frozen unless LoRA reaches it, and then its outputs can be cached.
    audio_encoder: nn.Module

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.config.dtype)

    def pool(self, last_positions: torch.Tensor, audio: AudioStates) -> torch.Tensor:
        if self.config.pooling == "last":
            return last_positions
        return torch.cat([last_positions, masked_mean(audio.states, audio.lengths).to(last_positions.dtype)], -1)

    def pooled_size(self, text_size: int, audio_size: int) -> int:
        return text_size + (audio_size if self.config.pooling == "last+mean" else 0)
