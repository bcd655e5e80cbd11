"""The stretch: a linear map of the scores that undoes part of the grader's pull toward the middle of the scale.

A grader trained to minimise its error scores every answer partway to the mean: out of fold, the answers the
experts scored 0-3 get 4.6 on average. The stretch moves each score away from the grader's mean, by `strength`
of the way to the experts' spread: 0 leaves the scores alone, 1 gives them the experts' mean and standard deviation
(the full stretch, as automated essay scoring matches its scores to the human distribution). It leaves the
correlation with the experts as it is and trades a little error in the middle of the scale for much less at the
weak end; `python -m grader.report RUN --stretch S` measures any strength with each fold's map fitted on the other
folds, and the model card holds the frontier. The class distribution moves with the score: each class's
probability goes to where the map sends that class, split between the two nearest classes, so its expectation is
the stretched soft score (but for mass the map sends past the scale's end, which stays there) and its most probable
class the hard one.

    python -m grader.stretch CHECKPOINT RUN [RUN ...] [--strength 0.5]

fits the map of every aspect on the RUNs' mean out-of-fold predictions (runs of `grader.train --folds`, the
recipes of CHECKPOINT's members, so the map is fitted on speakers the models never heard; `A+B` joins runs of
disjoint folds, as `grader.report` does) and writes it into CHECKPOINT's grader.json, which `Grader.load` applies.
"""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .model import Decoded
from .options import parse_options
from .scale import ScoreScale

STRENGTH = 0.5  # the shipped strength: halfway to the experts' spread (model card, "Calibration across the scale")


@dataclass(frozen=True)
class Stretch:
    """score -> target + slope * (score - centre), clamped to the scale."""

    centre: float  # the grader's mean score, out of fold
    target: float  # where the map sends it
    slope: float

    def __post_init__(self):
        if not self.slope > 0:
            raise ValueError(f"a stretch must keep the order of the scores (slope > 0), not {self.slope}")

    def __call__(self, score):
        return self.target + self.slope * (score - self.centre)


def fit_stretch(predicted, human, strength: float = STRENGTH) -> Stretch:
    """`strength` of the way from the predictions' mean and sd to the experts'."""
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be in [0, 1], not {strength}")
    predicted, human = np.asarray(predicted, float), np.asarray(human, float)
    centre = float(predicted.mean())
    return Stretch(centre, centre + strength * float(human.mean() - centre),
                   1 + strength * float(human.std() / predicted.std() - 1))


def stretch_decoded(decoded: Decoded, stretches: list[Stretch], scale: ScoreScale) -> Decoded:
    """Each aspect's scores through its map (`stretches`, one per aspect): the regression clamped to the scale, and
    the distribution moved class by class (`ScoreScale.fair_average_target`), the soft score its expectation and the
    hard score its most probable class. Word scores are left as they are."""
    values = scale.values.to(decoded.probs.device)
    moves = torch.stack([scale.fair_average_target(torch.as_tensor(s(values.cpu()))) for s in stretches])
    probs = torch.einsum("...ac,acd->...ad", decoded.probs, moves.to(decoded.probs))
    regression = torch.stack([s(decoded.regression[..., a]) for a, s in enumerate(stretches)], -1)
    return Decoded(scale.clamp(regression), probs, values[probs.argmax(-1)], (probs * values).sum(-1), decoded.words)


def stretch_scores(scores, stretch: Stretch, scale: ScoreScale) -> np.ndarray:
    """Scores through a map, clamped to the scale, as `grader.report --stretch` maps out-of-fold scores (oof.tsv
    keeps no distributions). The grader's regression score is exactly this; its soft score too, but for the mass a
    distribution holds on classes the map sends past the scale's end, which stays at the end: they differ by at most
    twice the expected distance past the end (tests/test_stretch.py)."""
    return np.clip(stretch(np.asarray(scores, float)), scale.min, scale.max)


def read_stretches(info: dict, aspects: list[str]) -> list[Stretch] | None:
    """A checkpoint's maps (grader.json "stretch"), one per aspect in order; None for a checkpoint without them."""
    if "stretch" not in info:
        return None
    fitted = info["stretch"]["aspects"]
    missing = [a for a in aspects if a not in fitted]
    if missing:
        raise ValueError(f"the checkpoint's stretch has no map for {', '.join(missing)}")
    return [Stretch(**fitted[a]) for a in aspects]


def write_stretch(checkpoint: str | Path, runs: list[str | Path], strength: float = STRENGTH) -> dict:
    """Fit every aspect's map on the runs' mean out-of-fold predictions (soft) and write it into the checkpoint."""
    from .report import joined_folds, read_oof, run_parts

    path = Path(checkpoint) / "grader.json"
    info = json.loads(path.read_text())
    tables, fitted_on = [], []
    for run in runs:
        folders = run_parts(run)
        rows = [read_oof(folder) for folder in folders]
        joined_folds(rows, str(run))  # the parts of `A+B` must hold different folds
        tables.append({r["utt_id"]: r for part in rows for r in part})
        fitted_on.append("+".join(folder.name for folder in folders))
    if not tables[0] or any(t.keys() != tables[0].keys() for t in tables):
        raise ValueError("the runs must be finished `grader.train --folds` runs over the same responses")
    aspects = [c[: -len("_soft")] for c in next(iter(tables[0].values())) if c.endswith("_soft")]
    utts = list(tables[0])
    fitted = {}
    for a in aspects:
        predicted = np.mean([[float(t[u][f"{a}_soft"]) for u in utts] for t in tables], axis=0)
        fitted[a] = asdict(fit_stretch(predicted, [float(tables[0][u][a]) for u in utts], strength))
    unstretched = info.get("stretch", {}).get("of", info.get("checkpoint_id", Path(checkpoint).name))
    info["stretch"] = {"strength": strength, "fitted_on": fitted_on,
                       "responses": len(utts), "of": unstretched, "aspects": fitted}
    info["checkpoint_id"] = f"{unstretched}-stretch{strength:g}"  # stored with every grade: its scores differ
    path.write_text(json.dumps(info, indent=2))
    return info["stretch"]


@dataclass
class StretchOptions:
    """Fit the stretch on cross-validated runs of a checkpoint's recipes and write it into the checkpoint."""

    paths: list[str] = field(default_factory=list, metadata={
        "help": "CHECKPOINT RUN [RUN ...]: the grader, then `grader.train --folds` runs of its members' recipes"})
    strength: float = field(default=STRENGTH, metadata={"help": "0 leaves the scores alone, 1 gives them the "
                                                                 "experts' mean and spread"})

    def __post_init__(self):
        if len(self.paths) < 2:
            raise ValueError("give the checkpoint and at least one cross-validated run of its recipes")


def main(argv: list[str] | None = None) -> None:
    options = parse_options(StretchOptions, argv, positional="paths")
    checkpoint, runs = options.paths[0], options.paths[1:]
    try:
        fitted = write_stretch(checkpoint, runs, options.strength)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"cannot fit the stretch: {e}")
    for aspect, s in fitted["aspects"].items():
        print(f"{aspect}: {s['centre']:.2f} -> {s['target']:.2f}, slope {s['slope']:.3f}")
    print(f"stretch (strength {options.strength:g}, fitted on {fitted['responses']} out-of-fold responses) written "
          f"to {checkpoint}/grader.json")


if __name__ == "__main__":
    main()
