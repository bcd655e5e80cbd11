"""Ensembles: several trained graders scored on one pass of their shared frozen audio encoder, their predictions
averaged (the class distributions, the regression heads, each word's scores over the members with word heads).
Out of fold, the mean of two recipes' predictions agrees with the experts better than either recipe alone
(`python -m grader.report RUN RUN --ensemble`; the model card has the figures).

    python -m grader.ensemble OUT MEMBER [MEMBER ...]

OUT is a grader checkpoint like any other to `Grader.load`: its `grader.json` names the members, each a copy of a
checkpoint folder under OUT. The members must share the backbone and its frozen encoder (LoRA on the decoder only,
`--lora-scope text`), the scale and the aspects; each holds its own copy of the base weights in memory.
"""

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .model import CHECKPOINT_FORMAT, Decoded, GraderModel, read_checkpoint_info
from .options import parse_options


def check_members(members: list[GraderModel]) -> None:
    """Refuse members that cannot share one encoder pass or do not grade the same things."""
    first = members[0].config
    for member in members[1:]:
        if member.config.backbone != first.backbone:
            raise ValueError(f"ensemble members must share the backbone: {first.backbone} vs {member.config.backbone}")
        if member.config.aspects != first.aspects or member.scale != members[0].scale:
            raise ValueError("ensemble members must grade the same aspects on the same scale")
    if any(m.audio_encoder_trainable for m in members):
        raise ValueError("ensemble members must leave the audio encoder frozen (--lora-scope text): they share "
                         "one pass of it")


def mean_decoded(parts: list[Decoded], values: torch.Tensor) -> Decoded:
    """The members' mean: the mean class distribution (its expectation is the soft score, its most probable class
    the hard one), the mean regression, and each response's word scores over the members that gave them."""
    if len(parts) == 1:
        return parts[0]
    probs = torch.stack([p.probs for p in parts]).mean(0)
    regression = torch.stack([p.regression for p in parts]).mean(0)
    worded = [p.words for p in parts if p.words is not None]
    words = None
    if worded:
        words = [None if any(w[i] is None for w in worded) else torch.stack([w[i] for w in worded]).mean(0)
                 for i in range(len(worded[0]))]
    values = values.to(probs.device)
    return Decoded(regression, probs, values[probs.argmax(-1)], (probs * values).sum(-1), words)


def write_ensemble(out: str | Path, members: list[str | Path]) -> Path:
    """An ensemble checkpoint at `out`: each member's grader.json and weights copied into a subfolder, and a
    grader.json naming them. Refuses members that could not be graded together."""
    out = Path(out)
    check_members([GraderModel.load(m) for m in members])
    names = [f"member{k}" for k in range(len(members))]
    out.mkdir(parents=True, exist_ok=True)
    (out / "weights.safetensors").unlink(missing_ok=True)  # a single grader's weights there would be stale
    for name, member in zip(names, members):
        (out / name).mkdir(exist_ok=True)
        for file in ("grader.json", "weights.safetensors"):
            shutil.copyfile(Path(member) / file, out / name / file)
    ids = [read_checkpoint_info(m).get("checkpoint_id", Path(m).name) for m in members]
    info = {"format": CHECKPOINT_FORMAT, "checkpoint_id": f"{out.name}[{'+'.join(ids)}]", "members": names}
    (out / "grader.json").write_text(json.dumps(info, indent=2))
    return out


@dataclass
class EnsembleOptions:
    """Write an ensemble checkpoint: graders scored on one pass of their shared frozen encoder, averaged."""

    paths: list[str] = field(default_factory=list, metadata={"help": "OUT MEMBER MEMBER [MEMBER ...]: the new "
                                                                      "checkpoint, then grader checkpoints"})

    def __post_init__(self):
        if len(self.paths) < 3:
            raise ValueError("give the output folder and at least two member checkpoints")


def main(argv: list[str] | None = None) -> None:
    out, *members = parse_options(EnsembleOptions, argv, positional="paths").paths
    try:
        out = write_ensemble(out, members)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"cannot ensemble these checkpoints: {e}")
    print(f"ensemble of {len(members)} graders written to {out}")


if __name__ == "__main__":
    main()
