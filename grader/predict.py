"""Grade audio files with a checkpoint; one JSON line per file, the result the app's `grade` API returns
(`Assessment.to_dict`): a recording the gate refuses gets its code and reason and no score, as in the app.

    python -m grader.predict recording.wav other.flac [--text "reference text"] [--checkpoint DIR] [--evidence]
"""

import json
from dataclasses import dataclass, field

from .evidence import build_evidence
from .inference import Grader
from .options import parse_options


@dataclass
class PredictOptions:
    """Grade spoken-English recordings."""

    audio: list[str] = field(default_factory=list, metadata={"help": "audio files"})
    checkpoint: str | None = field(default=None, metadata={"help": "checkpoint folder; default: the shipped grader"})
    text: str | None = field(default=None, metadata={"help": "the prompt or reference text, if any"})
    precision: str = field(default="fp32", metadata={"help": "fp32 or bf16 (autocast)"})
    evidence: bool = field(default=False, metadata={"help": "add the evidence: transcript, fluency measures, and "
                                                            "the comparison with --text (grader.evidence)"})
    threads: int = 0


def main(argv: list[str] | None = None) -> None:
    options = parse_options(PredictOptions, argv, positional="audio")
    grader = Grader.load(options.checkpoint, threads=options.threads, precision=options.precision)
    for path in options.audio:
        assessment = grader.assess(path, options.text)
        out = {"file": path, **assessment.to_dict()}
        if options.evidence and assessment.scorable:
            out["evidence"] = build_evidence(grader, assessment.audio, assessment.reference_text, assessment.speech)
        print(json.dumps(out, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
