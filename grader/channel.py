"""Which channel a recording came through, read off the frozen audio encoder's states: a linear probe (logistic
regression on the states' mean and spread over time) telling clean recordings from noisy, reverberant and
telephone ones. It exists for the room: reverberation moves the score (a small room moves a tenth of held-out
totals by more than 0.5) and no signal measure of the gate tells it from clean speech, while the encoder the grade
is made from already hears it. Noise and the telephone band have the gate's own measures (grader/audio/gate.py).

The probe learns from the recordings training already caches (grader.train `--augment-views 3`: each clip through
noise, a room and a telephone band, grader.augment), so fitting it costs seconds once the cache exists; its room
threshold is chosen out of fold by speaker (the lowest flagging at most `--max-false-alarm` of clean clips) and
stored with it, in the checkpoint's `channel.json`:

    python -m grader.channel checkpoints/default --manifest ../shared/data/speechocean762-train/labels.tsv
"""

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from .augment import CHANNELS
from .options import parse_options

CLASSES = ("clean", *CHANNELS[:3])  # clean, then training's views 0-2: noise, room, telephone
PROBE_FILE = "channel.json"


def pooled(states: torch.Tensor) -> np.ndarray:
    """One (frames, dim) encoder output as the probe reads it: each dimension's mean and spread over time."""
    s = states.float()
    return torch.cat([s.mean(0), s.std(0, correction=0)]).numpy()


@dataclass(frozen=True)
class ChannelReading:
    """The probe's view of one recording."""

    probabilities: dict[str, float]  # by class of CLASSES
    room_threshold: float  # flag a room at this probability or above

    @property
    def reverberant(self) -> bool:
        return self.probabilities["room"] >= self.room_threshold

    def to_dict(self) -> dict:
        return {"probabilities": {k: round(v, 4) for k, v in self.probabilities.items()},
                "room_threshold": self.room_threshold, "reverberant": self.reverberant}


@dataclass(frozen=True)
class ChannelProbe:
    """Standardised pooled states -> softmax over CLASSES, with its room threshold and how it was chosen."""

    classes: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[list[float]]  # (classes, features)
    intercept: list[float]
    room_threshold: float
    report: dict = field(default_factory=dict)  # out-of-fold rates, data, and the command's options

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, ...]:
        """The fields as arrays, made once (the file holds lists; every grade reads them)."""
        return tuple(np.asarray(x) for x in (self.mean, self.scale, self.coef, self.intercept))

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(rows, features) of `pooled` states -> (rows, classes)."""
        mean, scale, coef, intercept = self._arrays
        logits = ((features - mean) / scale) @ coef.T + intercept
        p = np.exp(logits - logits.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True)

    def read(self, states: torch.Tensor) -> ChannelReading:
        p = self.probabilities(pooled(states)[None])[0]
        return ChannelReading(dict(zip(self.classes, p.tolist())), self.room_threshold)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / PROBE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self)) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "ChannelProbe | None":
        """The checkpoint's probe; None where it has none (then no recording is flagged reverberant)."""
        path = Path(folder) / PROBE_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None


def fit(features: np.ndarray, labels: np.ndarray, room_threshold: float = 0.5, strength: float = 1.0,
        report: dict | None = None) -> ChannelProbe:
    from sklearn.linear_model import LogisticRegression

    mean, scale = features.mean(0), features.std(0) + 1e-6
    lr = LogisticRegression(C=strength, max_iter=3000).fit((features - mean) / scale, labels)
    return ChannelProbe([CLASSES[k] for k in lr.classes_], mean.tolist(), scale.tolist(), lr.coef_.tolist(),
                        lr.intercept_.tolist(), room_threshold, report or {})


def out_of_fold(features: np.ndarray, labels: np.ndarray, folds: np.ndarray, strength: float) -> np.ndarray:
    """Each row's probability of a room from a probe fitted without its fold's speakers."""
    room = np.zeros(len(labels))
    for k in np.unique(folds):
        probe = fit(features[folds != k], labels[folds != k], strength=strength)
        room[folds == k] = probe.probabilities(features[folds == k])[:, probe.classes.index("room")]
    return room


def choose_threshold(room: np.ndarray, labels: np.ndarray, max_false_alarm: float) -> dict:
    """The lowest threshold (of 0.50, 0.51, ... 0.99) flagging at most `max_false_alarm` of clean rows, and the
    share of each class it flags."""
    grid = [t for t in np.round(np.arange(0.50, 1.0, 0.01), 2) if np.mean(room[labels == 0] >= t) <= max_false_alarm]
    threshold = float(min(grid)) if grid else 0.99
    return {"room_threshold": threshold,
            "flagged": {c: round(float(np.mean(room[labels == k] >= threshold)), 4) for k, c in enumerate(CLASSES)}}


@dataclass
class ChannelConfig:
    """Fit a checkpoint's channel probe on training's cached augmented views and choose its room threshold."""

    checkpoint: list[str] = field(default_factory=list, metadata={"help": "the checkpoint folder"})
    manifest: str = field(default="", metadata={"help": "the manifest the checkpoint was trained on (labels.tsv)"})
    folds: int = field(default=5, metadata={"help": "speaker folds the threshold is chosen out of"})
    exclude_fold: int = field(default=-1, metadata={
        "help": "fit without fold K of `grader.train --folds FOLDS`'s split, for measuring on those speakers "
                "(benchmarks/bench_channel.py); -1: fit on every speaker"})
    max_false_alarm: float = field(default=0.01, metadata={"help": "share of clean clips the threshold may flag"})
    strength: float = field(default=1.0, metadata={"help": "inverse L2 penalty of the logistic regression"})
    seed: int = field(default=0, metadata={"help": "grader.train's --seed: which views (and folds) the cache holds"})
    cache_dir: str = "runs/cache"
    out: str = field(default="", metadata={"help": "write the probe here (a folder); default: the checkpoint"})

    def __post_init__(self):
        if len(self.checkpoint) != 1 or not self.manifest:
            raise ValueError("name one checkpoint folder, and its training manifest with --manifest")
        if self.folds < 2 or not 0 < self.max_false_alarm < 1:
            raise ValueError("--folds must be at least 2 and --max-false-alarm lie in (0, 1)")


def views_features(checkpoint: Path, config: ChannelConfig):
    """Pooled encoder states of every clip and its three training views, with each row's class and speaker fold."""
    from .data import read_manifest, speaker_folds
    from .model import GraderModel, read_checkpoint_info
    from .train import TrainConfig, prepare

    info = read_checkpoint_info(checkpoint)
    model = GraderModel.load(checkpoint / info["members"][0] if info.get("members") else checkpoint, "cpu")
    if model.audio_encoder_trainable:
        raise SystemExit("the probe reads the frozen encoder's states: this checkpoint trains its encoder (LoRA)")
    responses = read_manifest(config.manifest, ["total"])
    fold_of = speaker_folds(responses, config.folds, config.seed, target="total")
    examples = prepare(TrainConfig(manifest=config.manifest, augment_views=len(CLASSES) - 1, seed=config.seed,
                                   cache_dir=config.cache_dir), model, responses)
    rows = [(pooled(s), k, f) for clean, views, f in zip(examples.states, examples.views, fold_of)
            for k, s in enumerate([clean, *views])]
    features, labels, folds = (np.array(x) for x in zip(*rows))
    return features, labels, folds


def main(argv: list[str] | None = None) -> ChannelProbe:
    config = parse_options(ChannelConfig, argv, positional="checkpoint")
    checkpoint = Path(config.checkpoint[0])
    features, labels, folds = views_features(checkpoint, config)
    if config.exclude_fold >= 0:
        keep = folds != config.exclude_fold
        features, labels, folds = features[keep], labels[keep], folds[keep]
    chosen = choose_threshold(out_of_fold(features, labels, folds, config.strength), labels, config.max_false_alarm)
    report = {"clips": int((labels == 0).sum()), "rows": len(labels), "out_of_fold": chosen, "options": asdict(config)}
    probe = fit(features, labels, chosen["room_threshold"], config.strength, report)
    path = probe.save(config.out or checkpoint)
    print(f"room threshold {probe.room_threshold:.2f}, out of fold over {report['clips']} clips by speaker: flags "
          + ", ".join(f"{c} {r:.1%}" for c, r in chosen["flagged"].items()) + f"; wrote {path}")
    return probe


if __name__ == "__main__":
    main()
