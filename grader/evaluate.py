"""Evaluate a checkpoint on a scored manifest: RMSE, PCC, SRC, KRC, % within 0.5 / 1.0, for each
decoding (regression, soft, hard), each aspect, and each test part where the manifest has a `part` column.
Every response goes through the grader's front door (`Grader.assess_batch`), as in the app: one the gate refuses
is counted (`refused`) and left out of the figures.

    python -m grader.evaluate --manifest ../shared/data/speechocean762-train/labels.tsv --target total --json out.json
"""

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .data import read_manifest, split_by_speaker
from .inference import ZERO_SHOT_NOTE, AssessOptions, Grader
from .metrics import score_metrics
from .options import parse_options


@dataclass
class EvaluateOptions:
    """Evaluate a grader checkpoint against human scores."""

    manifest: str = field(default="", metadata={"help": "TSV/CSV manifest with an audio column and score columns"})
    target: str = field(default="total", metadata={"help": "aspect(s) to evaluate, comma-separated"})
    checkpoint: str | None = field(default=None, metadata={"help": "checkpoint folder; default: the shipped grader"})
    zero_shot: str | None = field(default=None, metadata={
        "help": "no checkpoint: grade with this instruction-tuned speech LLM (e.g. Qwen/Qwen2-Audio-7B-Instruct) "
                "through its score-option tokens; uncalibrated"})
    scale: str = field(default="speechocean762", metadata={"help": "with --zero-shot: the scale to grade on"})
    decoding: str = field(default="soft", metadata={"help": "decoding whose figures go top-level in --json"})
    json: str | None = field(default=None, metadata={"help": "write the metrics here"})
    predictions: str | None = field(default=None, metadata={"help": "write each response's scores here (TSV)"})
    dev_speakers: int = field(default=0, metadata={"help": "score only the speakers `grader.train --dev-speakers N "
                                                           "--seed S` held out (0: every response)"})
    seed: int = 0
    precision: str = field(default="fp32", metadata={"help": "fp32 or bf16 (autocast)"})
    pad_to_30s: bool = field(default=False, metadata={"help": "encode stock 30-s windows (the naive path)"})
    trim: bool = field(default=True, metadata={"help": "grade the speech with its margin (as the app does); "
                                                       "--no-trim: the whole recording, as before trimming"})
    batch_size: int = 16
    threads: int = 0


def evaluate(options: EvaluateOptions) -> dict:
    if options.zero_shot:
        grader = Grader.zero_shot(options.zero_shot, options.scale, options.target.split(","), threads=options.threads,
                                  precision=options.precision)
    else:
        grader = Grader.load(options.checkpoint, threads=options.threads, precision=options.precision,
                             pad_to_30s=options.pad_to_30s)
    aspects = options.target.split(",")
    unknown = [a for a in aspects if a not in grader.aspects]
    if unknown:
        raise SystemExit(f"the checkpoint predicts {', '.join(grader.aspects)}, not {', '.join(unknown)}")
    responses = read_manifest(options.manifest, aspects)
    if options.dev_speakers:
        responses = split_by_speaker(responses, options.dev_speakers, options.seed)[1]
    assess = AssessOptions() if options.trim else AssessOptions(trim_margin_s=None)
    graded, predictions, refused = [], [], {}
    for start in tqdm(range(0, len(responses), 256), desc="grading", unit="x256"):
        chunk = responses[start : start + 256]
        for r, a in zip(chunk, grader.assess_batch([r.audio for r in chunk], [r.text for r in chunk], assess,
                                                   options.batch_size)):
            if a.scorable:
                graded.append(r)
                predictions.append(a.prediction)
            else:
                refused[r.utt_id] = a.gate.code
    responses = graded
    if options.predictions:
        write_predictions(options.predictions, responses, predictions)
    groups = {"all": list(range(len(responses)))}
    for part in sorted({r.part for r in responses if r.part}):
        groups[f"part {part}"] = [i for i, r in enumerate(responses) if r.part == part]
    results = {}
    for aspect in aspects:
        for decoding in ("regression", "soft", "hard"):
            for group, rows in groups.items():
                predicted = [getattr(predictions[i].scores[aspect], decoding) for i in rows]
                human = [responses[i].scores[aspect] for i in rows]
                results[f"{aspect}/{decoding}/{group}"] = score_metrics(predicted, human)
    return {**results[f"{aspects[0]}/{options.decoding}/all"], "checkpoint": grader.checkpoint_id,
            "manifest": str(options.manifest), "headline": f"{aspects[0]}/{options.decoding}", "all": results,
            "refused": refused,
            **({"uncalibrated": True, "note": ZERO_SHOT_NOTE} if grader.uncalibrated else {})}


def write_predictions(path: str, responses, predictions) -> None:
    """One row per graded response: its id, then each aspect's regression, soft and hard score."""
    columns = [(a, d) for a in (predictions[0].scores if predictions else []) for d in ("regression", "soft", "hard")]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["utt_id", *(f"{a}_{d}" for a, d in columns)])
        for r, p in zip(responses, predictions):
            writer.writerow([r.utt_id, *(getattr(p.scores[a], d) for a, d in columns)])


def main(argv: list[str] | None = None) -> None:
    options = parse_options(EvaluateOptions, argv)
    if not options.manifest:
        raise SystemExit("--manifest is required")
    report = evaluate(options)
    print(f"{'aspect/decoding/group':40s} {'n':>5s} {'rmse':>6s} {'pcc':>6s} {'src':>6s} {'krc':>6s} "
          f"{'≤0.5%':>6s} {'≤1.0%':>6s}")
    for name, m in report["all"].items():
        print(f"{name:40s} {m['n']:5d} {m['rmse']:6.3f} {m['pcc']:6.3f} {m['src']:6.3f} {m['krc']:6.3f} "
              f"{m['within_0_5']:6.1f} {m['within_1_0']:6.1f}")
    if options.json:
        Path(options.json).write_text(json.dumps(report, indent=2))
        print(f"metrics written to {options.json}")
    if report["refused"]:
        print(f"{len(report['refused'])} responses refused by the gate, left out: {report['refused']}")
    if "note" in report:
        print(f"note: {report['note']}")


if __name__ == "__main__":
    main()
