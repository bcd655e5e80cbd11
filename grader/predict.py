"""Grade audio files with a checkpoint; one JSON line per file.

    python -m grader.predict recording.wav other.flac [--text "reference text"] [--checkpoint DIR]
"""

import json
from dataclasses import dataclass, field

from .audio import AudioError, load_audio
from .inference import Grader
from .options import parse_options


@dataclass
class PredictOptions:
    """Grade spoken-English recordings."""

    audio: list[str] = field(default_factory=list, metadata={"help": "audio files"})
    checkpoint: str | None = field(default=None, metadata={"help": "checkpoint folder; default: the shipped grader"})
    text: str | None = field(default=None, metadata={"help": "the prompt or reference text, if any"})
    precision: str = field(default="fp32", metadata={"help": "fp32 or bf16 (autocast)"})
    threads: int = 0


def main(argv: list[str] | None = None) -> None:
    options = parse_options(PredictOptions, argv, positional="audio")
    grader = Grader.load(options.checkpoint, threads=options.threads, precision=options.precision)
    for path in options.audio:
        try:
            prediction = grader.grade(load_audio(path), options.text)
            print(json.dumps({"file": path, **prediction.to_dict()}), flush=True)
        except AudioError as error:
            print(json.dumps({"file": path, "error": str(error)}), flush=True)


if __name__ == "__main__":
    main()
