"""Scoring heads and objectives: a regression head and a classification head per aspect.

Objectives (Ma et al. 2025): "reg" (MSE on the score), "ce" (cross-entropy on the nearest class),
"fa" (cross-entropy against the fair-average soft target), and sums of them such as "fa+reg".
"""

from dataclasses import dataclass

import torch
from torch import nn

from .scale import ScoreScale

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


def score_loss(output: HeadOutput, targets: torch.Tensor, scale: ScoreScale, objective: str) -> torch.Tensor:
    """Sum of the objective's losses, averaged over responses and aspects.

    The regression error is measured in class steps so that it weighs about as much as a cross-entropy.
    """
    loss = output.regression.new_zeros(())
    log_probs = output.logits.log_softmax(-1)
    for part in parse_objective(objective):
        if part == "reg":
            loss = loss + (((output.regression - targets) / scale.step) ** 2).mean()
        elif part == "ce":
            nearest = scale.nearest_class(targets.cpu()).to(targets.device)
            loss = loss - log_probs.gather(-1, nearest.unsqueeze(-1)).mean()
        else:
            soft_target = scale.fair_average_target(targets.cpu()).to(targets.device)
            loss = loss - (soft_target * log_probs).sum(-1).mean()
    return loss


@dataclass
class Decoded:
    regression: torch.Tensor  # (batch, aspects), clamped to the scale
    probs: torch.Tensor  # (batch, aspects, classes)
    hard: torch.Tensor  # value of the most probable class
    soft: torch.Tensor  # expected value under the distribution


def decode(output: HeadOutput, scale: ScoreScale) -> Decoded:
    probs = output.logits.float().softmax(-1)
    values = scale.values.to(probs.device)
    return Decoded(scale.clamp(output.regression.float()), probs, values[probs.argmax(-1)], (probs * values).sum(-1))
