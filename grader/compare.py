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


def run_rows(folder: Path, epoch: int = 0) -> tuple[list[list[str]], list[str]]:
    """Table rows (one per decoding) for one run at `epoch` (0: the last one recorded), and its aspects."""
    if not (folder / "history.json").is_file():
        raise SystemExit(f"{folder} has no history.json: not a grader.train output, or no epoch has finished yet")
    history = json.loads((folder / "history.json").read_text())
    record = history[-1] if epoch == 0 else next((h for h in history if h["epoch"] == epoch), None)
    if record is None:
        raise SystemExit(f"{folder} has no epoch {epoch} (it recorded {len(history)})")
    training = json.loads((folder / "grader.json").read_text())["training"]
    metrics = record["metrics"]
    aspects = list(dict.fromkeys(key.split("/")[0] for key in metrics))
    decodings = list(dict.fromkeys(key.split("/")[1] for key in metrics))
    rows = []
    for decoding in decodings:
        head = metrics[f"{aspects[0]}/{decoding}"]
        rows.append([folder.name, training["model"], training["objective"], str(record["epoch"]), decoding,
                     *(f"{head[k]:.3f}" for k in ("pcc", "src", "rmse")),
                     *(f"{head[k]:.1f}" for k in ("within_0_5", "within_1_0")),
                     *(f"{metrics[f'{a}/{decoding}']['pcc']:.3f}" for a in aspects[1:])])
    return rows, aspects


def main(argv: list[str] | None = None) -> None:
    options = parse_options(CompareOptions, argv, positional="runs")
    table, aspects = [], []
    for run in options.runs:
        rows, aspects = run_rows(Path(run), options.epoch)
        table += rows
    header = ["run", "model", "objective", "epoch", "decoding", f"{aspects[0]} PCC", "SRC", "RMSE", "≤0.5 %",
              "≤1.0 %", *(f"{a} PCC" for a in aspects[1:])]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in table:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
