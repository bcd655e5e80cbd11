"""Why an examiner should listen to a graded answer: the grader's own doubts about a score, as codes for machines
and sentences for people. The card, the batch table, the API and `grader.predict` all show these.

The thresholds were chosen on the default recipe's out-of-fold predictions (5 folds by speaker over the 125
speechocean762 train speakers): the most misgrades (|error| > 2) caught with at most a fifth of the answers sent to
an examiner, each threshold chosen on four folds and scored on the fifth (`python -m grader.report RUN --review`).
"""

from dataclasses import asdict, dataclass, field

from .channel import ChannelReading
from .reference import ReferenceMatch

# The score under which the grader is least reliable, by scale; a scale not listed has no such reason until
# measured. speechocean762: 52 % of the misgraded answers are scored under 6.25 (out of fold).
LOW_SCORE = {"speechocean762": 6.25}
# Speech over background (the gate's `snr_db`) under which a recording counts as noisy: noise moves the score (pink
# noise at 10 dB: a fifth to a third of held-out answers move by more than 0.5). The highest whole dB flagging at most
# 2 % of 600 clean clips of 100 speakers; on 500 clips of 25 others it flags 0.8 % of them clean and all of them under
# pink noise at 10 dB (benchmarks/bench_channel.py).
MIN_SNR_DB = 26.0
# The upper band's level (the gate's `high_band_db`) under which a recording counts as narrowband: a telephone line,
# which moves 5 % of held-out totals by more than 0.5 (benchmarks/README.md, "Robustness"). The highest whole dB
# flagging none of 600 clean clips of 100 speakers; on 500 clips of 25 others it flags 0.6 % of them clean and 99.8 %
# through a telephone band; after codecs, noise, a room or gain 0-1 % (benchmarks/bench_channel.py).
MIN_HIGH_BAND_DB = -31.0


@dataclass(frozen=True)
class ReviewRule:
    """When to recommend review (see the module's docstring for how the defaults were chosen)."""

    low_score: dict[str, float] = field(default_factory=lambda: dict(LOW_SCORE))  # headline score under this
    heads_gap: float = 0.75  # in class steps: regression and soft of any aspect further apart than this
    min_snr_db: float = MIN_SNR_DB  # the gate's speech-over-background estimate under this: a noisy recording
    min_high_band_db: float = MIN_HIGH_BAND_DB  # the gate's upper-band level under this: a telephone line

    def __post_init__(self):
        if self.heads_gap <= 0:
            raise ValueError(f"heads_gap must be positive (class steps), not {self.heads_gap}")


@dataclass(frozen=True)
class Review:
    # low_score, heads_disagree, reference_mismatch, noisy_recording, narrowband_recording, reverberant_recording
    code: str
    text: str

    def to_dict(self) -> dict:
        return asdict(self)


def review_reasons(prediction, reference: ReferenceMatch | None = None, measures: dict[str, float] | None = None,
                   channel: ChannelReading | None = None, rule: ReviewRule = ReviewRule()) -> list[Review]:
    """The reasons to review a `Prediction`, in an examiner's words: a low headline score (where the grader errs
    most: it scores weak answers too high), the grader's two estimates of some aspect disagreeing, the answer not
    reading its reference text (`reference`: None for an open answer, where nothing is checked), or a noisy or
    narrowband recording (`measures`: the gate's; a measure it lacks, or None, checks nothing), or a reverberant
    one (`channel`: the checkpoint's channel probe, grader.channel, with its own threshold; None checks nothing)."""
    measures = measures or {}
    scale, headline = prediction.scale, prediction.scores[prediction.headline]
    reasons = []
    low = rule.low_score.get(scale.name)
    if low is not None and headline.soft < low:
        reasons.append(Review("low_score", f"a low score ({headline.soft:.1f}, under {low:g}): the grader is least "
                                           "reliable for weak answers, which it tends to score too high"))
    gaps = {a: abs(s.regression - s.soft) for a, s in prediction.scores.items()}
    aspect = max(gaps, key=gaps.get)
    if gaps[aspect] > rule.heads_gap * scale.step:
        s = prediction.scores[aspect]
        reasons.append(Review("heads_disagree", f"the grader's two estimates of {aspect} disagree ({s.soft:.1f} and "
                                                f"{s.regression:.1f}): it is unsure of this answer"))
    if reference is not None and reference.mismatch:
        reasons.append(Review("reference_mismatch", f"the answer does not match the reference text "
                                                    f"({reference.found} of {reference.words} words)"))
    snr_db, high_band_db = measures.get("snr_db"), measures.get("high_band_db")
    if snr_db is not None and snr_db < rule.min_snr_db:
        reasons.append(Review("noisy_recording", f"a noisy recording (the speech stands {snr_db:.0f} dB above the "
                                                 "background): noise can move the score; re-record somewhere quieter "
                                                 "if you can"))
    if high_band_db is not None and high_band_db < rule.min_high_band_db:
        reasons.append(Review("narrowband_recording", "a narrowband recording, as through a telephone line (little "
                                                      "above 4 kHz): the band can move the score; record through a "
                                                      "microphone, not a call, if you can"))
    if channel is not None and channel.reverberant:
        reasons.append(Review("reverberant_recording", "a reverberant recording, as in an echoing room (the grader "
                                                       f"hears a room at {channel.probabilities['room']:.0%}): the "
                                                       "room can move the score; record closer to the microphone "
                                                       "or in a smaller, furnished room if you can"))
    return reasons
