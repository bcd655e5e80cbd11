"""Why an examiner should listen to a graded answer: the grader's own doubts about a score, as codes for machines
and sentences for people. The card, the batch table, the API and `grader.predict` all show these."""

import math
from dataclasses import asdict, dataclass

import numpy as np

from .reference import ReferenceMatch

FLAT_ENTROPY = 0.85  # normalised entropy above which the distribution says "could be anything"


@dataclass(frozen=True)
class Review:
    code: str  # heads_disagree, flat_distribution, reference_mismatch
    text: str

    def to_dict(self) -> dict:
        return asdict(self)


def review_reasons(prediction, reference: ReferenceMatch | None = None) -> list[Review]:
    """The reasons to review a `Prediction`: the two heads disagree by more than half a class step (0.5 on
    speechocean762's 1-point classes, 0.25 on a half-band scale), the distribution is flat, or the answer does not
    read its reference text (`reference`: None for an open answer, where nothing is checked)."""
    score, scale = prediction.scores[prediction.headline], prediction.scale
    reasons = []
    gap = abs(score.regression - score.soft)
    if gap > 0.5 * scale.step:
        reasons.append(Review("heads_disagree", f"the regression ({score.regression:.2f}) and soft ({score.soft:.2f}) "
                                                f"scores differ by {gap:.2f}, more than half a class step "
                                                f"({0.5 * scale.step:g})"))
    entropy = normalised_entropy(score.probs)
    if entropy > FLAT_ENTROPY:
        reasons.append(Review("flat_distribution", f"the class distribution is nearly flat (normalised entropy "
                                                   f"{entropy:.2f} > {FLAT_ENTROPY}): the model is unsure"))
    if reference is not None and reference.mismatch:
        reasons.append(Review("reference_mismatch", f"the answer does not match the reference text "
                                                    f"({reference.found} of {reference.words} words)"))
    return reasons


def normalised_entropy(probs: list[float]) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1)
    return float(-(p * np.log(p)).sum() / math.log(len(p))) if len(p) > 1 else 0.0
