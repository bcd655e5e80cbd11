"""Grade audio files with a checkpoint; one JSON line per file.

    python -m grader.predict recording.wav other.flac [--text "reference text"] [--checkpoint DIR] [--evidence]
"""

import json
from dataclasses import dataclass, field

from .audio import AudioError, load_audio
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
        try:
            audio = load_audio(path)
            out = {"file": path, **grader.grade(audio, options.text).to_dict()}
            if options.evidence:
                out["evidence"] = build_evidence(grader, audio, options.text)
            print(json.dumps(out, ensure_ascii=False), flush=True)
        except AudioError as error:
            print(json.dumps({"file": path, "error": str(error)}), flush=True)


if __name__ == "__main__":
    main()
