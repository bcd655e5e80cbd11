"""Evaluate a checkpoint on a scored manifest: RMSE, PCC, SRC, KRC, % within 0.5 / 1.0, for each
decoding (regression, soft, hard), each aspect, and each test part where the manifest has a `part` column.

    python -m grader.evaluate --manifest ../shared/data/speechocean762-train/labels.tsv --target total --json out.json
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .audio import load_audio
from .data import read_manifest, split_by_speaker
from .inference import ZERO_SHOT_NOTE, Grader
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
    dev_speakers: int = field(default=0, metadata={"help": "score only the speakers `grader.train --dev-speakers N "
                                                           "--seed S` held out (0: every response)"})
    seed: int = 0
    precision: str = field(default="fp32", metadata={"help": "fp32 or bf16 (autocast)"})
    pad_to_30s: bool = field(default=False, metadata={"help": "encode stock 30-s windows (the naive path)"})
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
    predictions = []
    for start in tqdm(range(0, len(responses), 256), desc="grading", unit="x256"):
        chunk = responses[start : start + 256]
        predictions += grader.grade_batch([load_audio(r.audio) for r in chunk], [r.text for r in chunk],
                                          options.batch_size)
    groups = {"all": list(range(len(responses)))}
    for part in sorted({r.part for r in responses if r.part}):
        groups[f"part {part}"] = [i for i, r in enumerate(responses) if r.part == part]
    results = {}
    for aspect in aspects:
        for decoding in ("regression", "soft", "hard"):
            for group, rows in groups.items():
                predicted = [getattr(predictions[i].scores[aspect], decoding) for i in rows]
                results[f"{aspect}/{decoding}/{group}"] = score_metrics(predicted, [responses[i].scores[aspect] for i in rows])
    return {**results[f"{aspects[0]}/{options.decoding}/all"], "checkpoint": grader.checkpoint_id,
            "manifest": str(options.manifest), "headline": f"{aspects[0]}/{options.decoding}", "all": results,
            **({"uncalibrated": True, "note": ZERO_SHOT_NOTE} if grader.uncalibrated else {})}


def main(argv: list[str] | None = None) -> None:
    options = parse_options(EvaluateOptions, argv)
    if not options.manifest:
        raise SystemExit("--manifest is required")
    report = evaluate(options)
    print(f"{'aspect/decoding/group':40s} {'n':>5s} {'rmse':>6s} {'pcc':>6s} {'src':>6s} {'krc':>6s} {'≤0.5%':>6s} {'≤1.0%':>6s}")
    for name, m in report["all"].items():
        print(f"{name:40s} {m['n']:5d} {m['rmse']:6.3f} {m['pcc']:6.3f} {m['src']:6.3f} {m['krc']:6.3f} "
              f"{m['within_0_5']:6.1f} {m['within_1_0']:6.1f}")
    if options.json:
        Path(options.json).write_text(json.dumps(report, indent=2))
        print(f"metrics written to {options.json}")
    if "note" in report:
        print(f"note: {report['note']}")


if __name__ == "__main__":
    main()
