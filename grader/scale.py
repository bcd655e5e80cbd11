"""Score scales: the grid of classes a grader predicts over.

A scale turns a continuous human score into classes (for cross-entropy and the
fair-average target) and turns a class distribution back into scores (hard and soft).
"""

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class ScoreScale:
    name: str
    min: float
    max: float
    step: float
    # Optional CEFR labels: (lowest score of the band, label), ascending.
    cefr: tuple[tuple[float, str], ...] = field(default=())

    @property
    def values(self) -> torch.Tensor:
        """Class values, ascending: min, min+step, ..., max."""
        n = round((self.max - self.min) / self.step) + 1
        return torch.tensor([self.min + i * self.step for i in range(n)], dtype=torch.float32)

    @property
    def num_classes(self) -> int:
        return len(self.values)

    def clamp(self, score: torch.Tensor) -> torch.Tensor:
        return score.clamp(self.min, self.max)

    def nearest_class(self, score: torch.Tensor) -> torch.Tensor:
        """Index of the class closest to each score (the CE target)."""
        index = torch.round((self.clamp(score) - self.min) / self.step)
        return index.long().clamp(0, self.num_classes - 1)

    def fair_average_target(self, score: torch.Tensor) -> torch.Tensor:
        """Soft target over classes whose expectation equals the (clamped) score.

        The mass is split between the two classes that bracket the score, linearly by
        distance: 4.3 on a 0.5 grid gives 0.4 on 4.0 and 0.6 on 4.5.
        """
        position = (self.clamp(score) - self.min) / self.step
        lower = position.floor().long().clamp(0, self.num_classes - 1)
        upper = (lower + 1).clamp(max=self.num_classes - 1)
        upper_weight = position - lower.float()
        target = torch.zeros(*score.shape, self.num_classes, dtype=torch.float32)
        target.scatter_add_(-1, lower.unsqueeze(-1), (1 - upper_weight).unsqueeze(-1))
        target.scatter_add_(-1, upper.unsqueeze(-1), upper_weight.unsqueeze(-1))
        return target

    def hard_score(self, probs: torch.Tensor) -> torch.Tensor:
        """The value of the most probable class."""
        return self.values[probs.argmax(-1)]

    def soft_score(self, probs: torch.Tensor) -> torch.Tensor:
        """The expectation of the class value under the distribution."""
        return (probs * self.values).sum(-1)

    def cefr_band(self, score: float) -> str | None:
        band = None
        for lowest, label in self.cefr:
            if score >= lowest - 1e-6:
                band = label
        return band

    def to_dict(self) -> dict:
        return {"name": self.name, "min": self.min, "max": self.max, "step": self.step,
                "cefr": [list(b) for b in self.cefr]}

    @classmethod
    def from_dict(cls, d: dict) -> "ScoreScale":
        cefr = tuple((float(s), str(label)) for s, label in d.get("cefr", []))
        return cls(d["name"], d["min"], d["max"], d["step"], cefr)


SCALES: dict[str, ScoreScale] = {
    "speechocean762": ScoreScale("speechocean762", 0.0, 10.0, 1.0),
    # Speak & Improve 2025 / Linguaskill style holistic scores, CEFR-aligned.
    "sandi": ScoreScale("sandi", 2.0, 6.0, 0.5,
                        cefr=((2.0, "A2"), (3.0, "B1"), (4.0, "B2"), (5.0, "C1"), (6.0, "C2"))),
}


def get_scale(name: str) -> ScoreScale:
    try:
        return SCALES[name]
    except KeyError:
        raise ValueError(f"unknown score scale {name!r}; known: {', '.join(SCALES)}") from None
