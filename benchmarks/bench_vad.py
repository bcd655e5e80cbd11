"""Voice activity on real speech: does the VAD (grader.audio.vad.speech_segments) hear all of an answer, and does it
find the same speech when the recording starts earlier? Stock Silero beside it, on every speechocean762 clip.

    missed loud   share of a clip's loud frames (25 dB over its room tone, the 10th-percentile frame level) that
                  lie outside speech: speech the VAD did not hear
    words/min     the reference text's words over the speaking span (first to last speech): a VAD that misses the
                  start of a quiet voice makes it implausibly fast
    lead-in       how far the first and last speech move (in the clip's own time) when 2 s of room tone
                  (-60 dBFS pink noise) come before it and 0.5 s after, on every `--lead-every`th clip

    .venv/bin/python benchmarks/bench_vad.py
"""

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from grader.augment import room_tone  # noqa: E402
from benchmarks.common import load1, resolve, write_results  # noqa: E402
from grader.audio import SAMPLE_RATE  # noqa: E402
from grader.options import parse_options  # noqa: E402


@dataclass
class VadBench:
    """The VAD against stock Silero on speechocean762."""

    data: str = field(default="../shared/data/speechocean762-train", metadata={
        "help": "speechocean762 folder (labels.tsv, audio/), relative to the repo or absolute"})
    every: int = field(default=1, metadata={"help": "every n-th clip (1: all 2,500)"})
    lead_every: int = field(default=10, metadata={"help": "every n-th of those for the lead-in figures"})
    out: str = field(default="benchmarks/results/vad.json", metadata={"help": "results file ('' : none)"})


def stock(audio: np.ndarray) -> list[tuple[float, float]]:
    """Silero alone, as the grader used it before (its sequence export, the recording at a typical level)."""
    from silero_vad.sequence_vad import get_speech_timestamps_from_probs

    from grader.audio.vad import _silero, at_typical_level

    audio = at_typical_level(audio)
    stamps = get_speech_timestamps_from_probs(_silero().audio_forward(audio, sampling_rate=SAMPLE_RATE),
                                              speech_pad_ms=0, min_silence_duration_ms=100,
                                              audio_length_samples=len(audio))
    return [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]


def ours(audio: np.ndarray) -> list[tuple[float, float]]:
    from grader.audio import speech_segments

    return [(s.start, s.end) for s in speech_segments(audio)]


def missed_loud(audio: np.ndarray, segments: list[tuple[float, float]]) -> float:
    from grader.audio.vad import FRAME, at_typical_level, frame_levels

    level = frame_levels(at_typical_level(audio), -(-len(audio) // FRAME))
    loud = level >= np.percentile(level, 10) + 25
    heard = np.zeros(len(level), bool)
    for start, end in segments:
        heard[int(start * SAMPLE_RATE) // FRAME: -(-int(end * SAMPLE_RATE) // FRAME)] = True
    return float((loud & ~heard).sum() / max(loud.sum(), 1))


def summary(values: list[float], digits: int = 4) -> dict:
    return {"mean": round(float(np.mean(values)), digits), "p50": round(float(np.percentile(values, 50)), digits),
            "p95": round(float(np.percentile(values, 95)), digits), "max": round(float(np.max(values)), digits)}


def main(argv: list[str] | None = None) -> dict:
    opts = parse_options(VadBench, argv)
    from grader.audio import load_audio
    from grader.data import read_manifest

    responses = read_manifest(resolve(opts.data) / "labels.tsv", targets=None)[:: opts.every]
    rng = np.random.default_rng(0)
    started, t0 = load1(), time.perf_counter()
    rows = {name: {"missed": [], "wpm": [], "start_moved": [], "end_moved": []} for name in ("stock", "ours")}
    for k, r in enumerate(responses):
        audio = load_audio(r.audio)
        padded = room_tone(audio, rng, 2.0, 0.5).astype(np.float32) if k % opts.lead_every == 0 else None
        for name, find in (("stock", stock), ("ours", ours)):
            segments = find(audio)
            row = rows[name]
            row["missed"].append(missed_loud(audio, segments))
            row["wpm"].append(60 * len(r.text.split()) / (segments[-1][1] - segments[0][0]) if segments else np.inf)
            if padded is not None:
                moved = find(padded)
                row["start_moved"].append(abs(moved[0][0] - 2.0 - segments[0][0]))
                row["end_moved"].append(abs(moved[-1][1] - 2.0 - segments[-1][1]))
    results = {"benchmark": "vad", "options": asdict(opts), "clips": len(responses),
               "vad": {name: {"missed_loud_share": summary(row["missed"]),
                              "words_per_min": {**summary(row["wpm"], 1),
                                                "over_250": int(np.sum(np.array(row["wpm"]) > 250)),
                                                "over_300": int(np.sum(np.array(row["wpm"]) > 300))},
                              "lead_in_clips": len(row["start_moved"]),
                              "start_moved_s": summary(row["start_moved"], 3),
                              "end_moved_s": summary(row["end_moved"], 3)} for name, row in rows.items()},
               "seconds": round(time.perf_counter() - t0), "load1": [started, load1()],
               "when": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    print("| VAD | loud frames missed: mean / p95 | words/min: p50 / > 250 / > 300 | after a 2-s lead-in, first / "
          "last speech moves (p95, s) |\n|---|---|---|---|")
    for name, v in results["vad"].items():
        m, w = v["missed_loud_share"], v["words_per_min"]
        print(f"| {name} | {m['mean']:.2%} / {m['p95']:.2%} | {w['p50']:.0f} / {w['over_250']} / {w['over_300']} | "
              f"{v['start_moved_s']['p95']:.3f} / {v['end_moved_s']['p95']:.3f} |")
    if opts.out:
        write_results(results, resolve(opts.out))
    return results


if __name__ == "__main__":
    main()
