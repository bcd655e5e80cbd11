"""Compare training runs on their dev set: `python -m grader.compare runs/base-* --epoch 3`.

Reads each run's history.json (dev metrics after every epoch, written by grader.train) and prints one Markdown
table: a row per run and decoding, the headline aspect's PCC, SRC, RMSE and % within 0.5 / 1.0, then every
aspect's PCC. Comparing at a fixed epoch, rather than each run's best, keeps the dev set out of model selection.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from .options import parse_options


@dataclass
class CompareOptions:
    """Print a Markdown table of dev metrics for training runs."""

    runs: list[str] = field(default_factory=list, metadata={"help": "training output folders"})
    epoch: int = field(default=0, metadata={"help": "the epoch to report; 0: each run's last"})


def run_rows(folder: Path, epoch: int = 0) -> tuple[list[list[str]], list[dict[str, str]], list[str]]:
    """For one run at `epoch` (0: the last one recorded): the headline cells of each decoding's row, each row's
    PCC by aspect, and the aspects in the run's order. An epoch short of the run's planned last one says so."""
    if not (folder / "history.json").is_file():
        raise SystemExit(f"{folder} has no history.json: not a grader.train output, or no epoch has finished yet")
    history = json.loads((folder / "history.json").read_text())
    record = history[-1] if epoch == 0 else next((h for h in history if h["epoch"] == epoch), None)
    if record is None:
        raise SystemExit(f"{folder} has no epoch {epoch} (it recorded {len(history)})")
    info = json.loads((folder / "grader.json").read_text())
    training, model = info["training"], info["model"]
    unfinished = epoch == 0 and record["epoch"] < training["epochs"]
    shown_epoch = f"{record['epoch']} of {training['epochs']} (unfinished)" if unfinished else str(record["epoch"])
    means_on = f" ({', '.join(training['rater_aspects'])})" if training.get("rater_aspects") else ""
    objective = model["objective"] + (f", rater means{means_on}" if training.get("rater_scores") else "")
    metrics = record["metrics"]
    sentence = [k for k in (key.split("/") for key in metrics) if k[0] in model["aspects"]]  # not word/…
    aspects = list(dict.fromkeys(aspect for aspect, _ in sentence))
    decodings = list(dict.fromkeys(decoding for _, decoding in sentence))
    rows, pccs = [], []
    for decoding in decodings:
        head = metrics[f"{aspects[0]}/{decoding}"]
        rows.append([folder.name, model["backbone"]["model"], objective, shown_epoch, decoding,
                     *(f"{head[k]:.3f}" for k in ("pcc", "src", "rmse")),
                     *(f"{head[k]:.1f}" for k in ("within_0_5", "within_1_0"))])
        pccs.append({a: f"{metrics[f'{a}/{decoding}']['pcc']:.3f}" for a in aspects})
    return rows, pccs, aspects


def main(argv: list[str] | None = None) -> None:
    options = parse_options(CompareOptions, argv, positional="runs")
    table, headline, others = [], None, {}
    for run in options.runs:
        rows, pccs, aspects = run_rows(Path(run), options.epoch)
        headline = headline or aspects[0]
        others |= dict.fromkeys(aspects[1:])
        table += [row + [pcc.get(a, "-") for a in others] for row, pcc in zip(rows, pccs)]
    header = ["run", "model", "objective", "epoch", "decoding", f"{headline} PCC", "SRC", "RMSE", "≤0.5 %",
              "≤1.0 %", *(f"{a} PCC" for a in others)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in table:
        print("| " + " | ".join(row + ["-"] * (len(header) - len(row))) + " |")


if __name__ == "__main__":
    main()
