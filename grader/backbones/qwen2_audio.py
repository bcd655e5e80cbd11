"""Qwen2-Audio (the paper's speech LLM) as a grading backbone."""

import numpy as np
import torch

from ..audio import SAMPLE_RATE
from .base import (AnswerPrompt, Answers, AudioStates, Backbone, BackboneConfig, additive_mask, answer_layout,
                   length_mask)

# Qwen2-Audio-7B-Instruct's default system turn (its chat template adds it when a conversation has none)
SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"


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

    def answer(self, audio: AudioStates, prompts: list[str | None], prompt: AnswerPrompt,
               option_ids: list[int]) -> Answers:
        """Score tokens from the LLM: a chat whose user turn holds the audio, the instruction naming the options
        and the reference text; then per aspect its question, the end of the turn and the start of the
        assistant's, where the LM head is read over the option tokens: the letter an instruction-tuned model
        would answer with. The aspects' questions share the audio (see answer_layout)."""
        embed = self.model.get_input_embeddings()

        def embedded(text: str) -> torch.Tensor:
            return embed(torch.tensor(self.tokenizer.encode(text, add_special_tokens=False), device=self.device))

        before = embedded(f"{SYSTEM}<|im_start|>user\nAudio 1: <|audio_bos|>")
        blocks = [embedded(f"\n{q}<|im_end|>\n<|im_start|>assistant\n") for q in prompt.questions]
        rows = []
        for states, text in zip(audio.unbatch(), prompts):
            task = prompt.instruction + (f'\nThe candidate was asked to read: "{text.strip()}"' if text else "")
            rows.append(torch.cat([before, states.to(before.dtype), embedded(f"<|audio_eos|>\n{task}")]))
        keep, positions, answers = answer_layout(torch.tensor([len(r) for r in rows], device=self.device),
                                                 [len(b) for b in blocks])
        sequence = AudioStates.batch([torch.cat([r, *blocks]) for r in rows])
        out = self.model.model.language_model(inputs_embeds=sequence.states, position_ids=positions, use_cache=False,
                                              attention_mask=additive_mask(keep, sequence.states.dtype))
        x = out.last_hidden_state[torch.arange(len(rows), device=self.device)[:, None], answers]
        return Answers(x, self.model.lm_head(x)[..., option_ids])
