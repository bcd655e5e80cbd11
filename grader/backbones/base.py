"""Backbones: audio (+ prompt text) in, one pooled vector per response out.

Each backbone works in two stages so that a frozen audio encoder is run once and cached:
    features(audios) -> encode(features) -> AudioStates -> represent(states, prompts) -> (B, hidden)
Heads, losses, training and the UI only see `hidden_size` and these three calls, so a new
backbone is one more class here and one more entry in BACKBONES. Score-token heads call
    answer(states, prompts, AnswerPrompt, option ids) -> Answers (answer-position states, option-token logits)
instead of represent: the LM head's own logits of the option tokens are the class logits (Ma et al. 2025).
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

    @property
    def encoder_settings(self) -> dict:
        """What the audio encoder's outputs depend on (the pooling and the prompt act after it): the key of the
        cached encoder outputs training reads, so a new pooling or prompt reuses them."""
        return {"name": self.name, "model": self.model, "pad_to_30s": self.pad_to_30s, "dtype": self.dtype}


@dataclass
class AudioStates:
    """Padded encoder outputs with the real length of each response."""

    states: torch.Tensor  # (batch, frames, dim)
    lengths: torch.Tensor  # (batch,)
    # (batch, features): each encoder layer's mean and spread over the response's frames (grader.probe reads them);
    # None from a backbone that does not give them, or from cached states
    summary: torch.Tensor | None = None

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
        return AudioStates(self.states.to(device, dtype), self.lengths.to(device),
                           None if self.summary is None else self.summary.to(device))


def additive_mask(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, queries, keys) bool -> the (batch, 1, queries, keys) additive mask HF attention layers take."""
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)[:, None]


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    mask = length_mask(lengths, states.shape[1]).unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1)


def mean_and_spread(layers: list[torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
    """(batch, 2 * dim * layers): each layer's mean and standard deviation over each response's own frames."""
    parts = []
    for x in layers:
        x = x.float()
        mean = masked_mean(x, lengths)
        parts += [mean, masked_mean((x - mean[:, None]) ** 2, lengths).sqrt()]
    return torch.cat(parts, -1)


@dataclass(frozen=True)
class AnswerPrompt:
    """What score-token heads ask: an instruction that names each class as an option, one question per aspect,
    and the options' labels (each must be a single token). `aspects` names them for backbones that follow no
    instructions (Whisper), which read the aspect's name where a chat model reads its question."""

    instruction: str
    questions: tuple[str, ...]
    aspects: tuple[str, ...]
    options: tuple[str, ...]


@dataclass
class Answers:
    states: torch.Tensor  # (batch, aspects, hidden): the final hidden state at each aspect's answer position
    logits: torch.Tensor  # (batch, aspects, options): the LM head's logits of the option tokens there


def answer_layout(prefix_lengths: torch.Tensor, block_lengths: list[int]):
    """Attention and positions for rows laid out as [prefix, block 1, ..., block A, padding].

    Each block (an aspect's question) attends to its own row's prefix and causally to itself, not to the other
    blocks, and its positions continue the prefix's: each block reads as if it alone followed the prefix. That
    is one prompt per aspect at the cost of one prompt, the prefix (the audio, most of the sequence) read once.
    Returns keep (batch, T, T) bool, position ids (batch, T), and answer positions (batch, A): each block's last
    token, whose next-token logits are the answer."""
    device = prefix_lengths.device
    ends = torch.tensor(block_lengths, device=device).cumsum(0)
    starts = ends - torch.tensor(block_lengths, device=device)
    width = int(prefix_lengths.max()) + int(ends[-1])
    t = torch.arange(width, device=device)[None, :]
    offset = t - prefix_lengths[:, None]  # position within the blocks; negative in the prefix
    block = (offset[..., None] >= ends).sum(-1)  # 0..A-1 in the blocks, A in the padding
    segment = torch.where(offset < 0, 0, block + 1)  # 0: prefix, a + 1: block a, A + 1: padding
    keep = (t[:, None, :] <= t[:, :, None]) & (
        (segment[:, None, :] == 0) | (segment[:, None, :] == segment[:, :, None]))
    positions = torch.where(offset < 0, t, t - starts[block.clamp(max=len(block_lengths) - 1)])
    return keep, positions, prefix_lengths[:, None] + ends[None, :] - 1


class Backbone(nn.Module):
    hidden_size: int
    config: BackboneConfig

    def features(self, audios: list[np.ndarray]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def encode(self, features: dict[str, torch.Tensor]) -> AudioStates:
        raise NotImplementedError

    def represent(self, audio: AudioStates, prompts: list[str | None]) -> torch.Tensor:
        raise NotImplementedError

    def represent_words(self, audio: AudioStates, prompts: list[str | None]) -> tuple[torch.Tensor, list]:
        """represent() plus one state per reference word, for word heads; only backbones that read the text
        word by word (Whisper's decoder) have them."""
        raise NotImplementedError(f"{type(self).__name__} has no word states: word heads need the Whisper backbone")

    def answer(self, audio: AudioStates, prompts: list[str | None], prompt: AnswerPrompt,
               option_ids: list[int]) -> Answers:
        """The states and the LM head's logits over `option_ids` at each aspect's answer position."""
        raise NotImplementedError

    # What precedes an option label where the answer starts: " " when it continues a line of text (Whisper).
    answer_lead = ""

    def option_ids(self, labels: tuple[str, ...]) -> list[int]:
        """The token id of each option label as it follows the answer position; each must be one distinct token,
        or the LM head could not score it in one step."""
        ids = [self.tokenizer.encode(self.answer_lead + label, add_special_tokens=False) for label in labels]
        if any(len(i) != 1 for i in ids) or len({i[0] for i in ids}) < len(ids):
            pieces = {label: self.tokenizer.convert_ids_to_tokens(i) for label, i in zip(labels, ids)}
            raise ValueError(f"score options must be distinct single tokens of the tokenizer: {pieces}")
        return [i[0] for i in ids]

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
