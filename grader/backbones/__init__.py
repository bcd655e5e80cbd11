"""Backbones, one file each; `BACKBONES` names them for configs and checkpoints."""

from .base import AnswerPrompt, Answers, AudioStates, Backbone, BackboneConfig
from .qwen2_audio import Qwen2AudioBackbone
from .whisper import WhisperBackbone

BACKBONES: dict[str, type[Backbone]] = {"whisper": WhisperBackbone, "qwen2-audio": Qwen2AudioBackbone}


def build_backbone(config: BackboneConfig) -> Backbone:
    return BACKBONES[config.name](config)  # the config checked the name


__all__ = ["BACKBONES", "AnswerPrompt", "Answers", "AudioStates", "Backbone", "BackboneConfig", "Qwen2AudioBackbone",
           "WhisperBackbone", "build_backbone"]
