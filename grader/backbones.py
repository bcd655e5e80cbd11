"""Backbones: audio (+ prompt text) in, one pooled vector per response out.

Each backbone works in two stages so that a frozen audio encoder is run once and cached:
    features(audios) -> encode(features) -> AudioStates -> represent(states, prompts) -> (B, hidden)
Heads, losses, training and the UI only see `hidden_size` and these three calls, so a new
backbone is one more class here and one more entry in BACKBONES.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .audio import SAMPLE_RATE


@dataclass
class BackboneConfig:
    name: str = "whisper"  # "whisper" | "qwen2-audio"
    model: str = "base"  # hub id, local folder, or an offline alias (see grader.weights)
    pad_to_30s: bool = False  # Whisper only: the original fixed 30-s window (slower, for comparison)
    pooling: str = "last"  # "last": the final prompt position; "last+mean": also the mean of the audio states
    prompt: str = "Rate the English speaking proficiency of this response."  # Qwen2-Audio instruction
    dtype: str = "float32"  # "float32" | "bfloat16" | "float16"


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

        from .weights import resolve_whisper

        self.config = config
        source = resolve_whisper(config.model)
        self.processor = WhisperProcessor.from_pretrained(source)
        self.model = WhisperForConditionalGeneration.from_pretrained(source, dtype=self.dtype, attn_implementation="sdpa")
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

    def features(self, audios: list[np.ndarray]) -> dict[str, torch.Tensor]:
        extractor = self.processor.feature_extractor
        if self.config.pad_to_30s:
            out = extractor(audios, sampling_rate=SAMPLE_RATE, return_tensors="pt", device=self.device.type)
            frames = torch.full((len(audios),), out.input_features.shape[-1])
        else:
            out = extractor(audios, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding="longest",
                            return_attention_mask=True, device=self.device.type)
            frames = out.attention_mask.sum(-1)
        features = out.input_features
        if features.shape[-1] % 2:  # the second convolution halves the frames
            features = nn.functional.pad(features, (0, 1))
        return {"input_features": features.to(self.dtype), "frames": frames}

    def encode(self, features: dict[str, torch.Tensor]) -> AudioStates:
        encoder = self.audio_encoder
        x = features["input_features"].to(self.device, self.dtype)
        x = nn.functional.gelu(encoder.conv1(x))
        x = nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
        x = x + encoder.embed_positions.weight[: x.shape[1]]
        lengths = ((features["frames"].to(self.device) + 1) // 2).clamp(max=x.shape[1])
        if self.config.pad_to_30s:
            mask = None  # the stock model attends to the padding; keep that for a faithful comparison
        else:
            keep = length_mask(lengths, x.shape[1])
            mask = additive_mask(keep[:, None, :].expand(-1, x.shape[1], -1), x.dtype)
        for layer in encoder.layers:
            x = layer(x, mask)
        return AudioStates(encoder.layer_norm(x), lengths)

    def prompt_ids(self, text: str | None) -> list[int]:
        words = self.processor.tokenizer.encode(" " + text.strip(), add_special_tokens=False) if text else []
        return self.prefix_ids + words[:200] + [self.end_id]

    def represent(self, audio: AudioStates, prompts: list[str | None]) -> torch.Tensor:
        decoder = self.model.model.decoder
        ids = [self.prompt_ids(p) for p in prompts]
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
        x = decoder.layer_norm(x)
        last = x[torch.arange(len(ids), device=self.device), lengths - 1]
        return self.pool(last, audio)


class Qwen2AudioBackbone(Backbone):
    """Qwen2-Audio (the paper's speech LLM): its audio tower encodes the response, the projected audio
    frames are spliced into a chat prompt, and the LLM's last hidden state at the final prompt position
    is pooled."""

    lora_patterns = {
        "text": r".*language_model.*\.(q_proj|v_proj)",
        "all": r".*(language_model.*|audio_tower\.layers\.\d+\.self_attn)\.(q_proj|v_proj)",
    }

    def __init__(self, config: BackboneConfig):
        super().__init__()
        from transformers import AutoTokenizer, Qwen2AudioForConditionalGeneration, WhisperFeatureExtractor

        self.config = config
        self.model = Qwen2AudioForConditionalGeneration.from_pretrained(config.model, dtype=self.dtype,
                                                                        attn_implementation="sdpa")
        self.model.requires_grad_(False)
        self.audio_encoder = self.model.model.audio_tower
        self.tokenizer = AutoTokenizer.from_pretrained(config.model)
        self.extractor = WhisperFeatureExtractor(feature_size=self.model.config.audio_config.num_mel_bins)
        text_size = self.model.config.text_config.hidden_size
        self.hidden_size = self.pooled_size(text_size, text_size)

    def features(self, audios: list[np.ndarray]) -> dict[str, torch.Tensor]:
        # The log-mel STFT runs on the model's device: on a GPU, numpy/CPU features capped throughput (bench_gpu).
        out = self.extractor(audios, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True,
                             device=self.device.type)
        return {"input_features": out.input_features.to(self.dtype), "frames": out.attention_mask.sum(-1)}

    def encode(self, features: dict[str, torch.Tensor]) -> AudioStates:
        tower = self.audio_encoder
        conv_lengths, lengths = tower._get_feat_extract_output_lengths(features["frames"].to(self.device))
        x = features["input_features"].to(self.device, self.dtype)
        keep = length_mask(conv_lengths, x.shape[-1] // 2)
        mask = additive_mask(keep[:, None, :].expand(-1, keep.shape[1], -1), self.dtype)
        states = tower(x, attention_mask=mask).last_hidden_state
        return AudioStates(self.model.model.multi_modal_projector(states), lengths)

    def chat(self, text: str | None) -> tuple[list[int], list[int]]:
        """Token ids before and after the audio in the Qwen2-Audio chat template."""
        before = "<|im_start|>user\nAudio 1: <|audio_bos|>"
        task = self.config.prompt + (f' The candidate was asked to read: "{text.strip()}"' if text else "")
        after = f"<|audio_eos|>\n{task}<|im_end|>\n<|im_start|>assistant\n"
        encode = self.tokenizer.encode
        return encode(before, add_special_tokens=False), encode(after, add_special_tokens=False)

    def represent(self, audio: AudioStates, prompts: list[str | None]) -> torch.Tensor:
        embed = self.model.get_input_embeddings()
        rows = []
        for states, text in zip(audio.unbatch(), prompts):
            before, after = (torch.tensor(ids, device=self.device) for ids in self.chat(text))
            rows.append(torch.cat([embed(before), states.to(embed.weight.dtype), embed(after)]))
        sequence = AudioStates.batch(rows)
        keep = length_mask(sequence.lengths, sequence.states.shape[1]).long()
        out = self.model.model.language_model(inputs_embeds=sequence.states, attention_mask=keep, use_cache=False)
        last = out.last_hidden_state[torch.arange(len(rows), device=self.device), sequence.lengths - 1]
        return self.pool(last, audio)


BACKBONES: dict[str, type[Backbone]] = {"whisper": WhisperBackbone, "qwen2-audio": Qwen2AudioBackbone}


def build_backbone(config: BackboneConfig) -> Backbone:
    try:
        return BACKBONES[config.name](config)
    except KeyError:
        raise ValueError(f"unknown backbone {config.name!r}; known: {', '.join(BACKBONES)}") from None
