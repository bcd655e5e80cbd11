"""The reference-mismatch check (grader.reference) on real speech: its thresholds chosen on some speakers, its hit
and false-alarm rates measured on others, and its cost beside a transcript's.

Every clip is graded twice through the front door (`Grader.assess_batch`): with its own reference text (a flag
is a false alarm) and with another clip's, a different sentence (a flag is a hit). The thresholds (FOUND_GAIN,
MIN_FOUND) are chosen on `--choose-clips` clips of speakers outside grader.train's dev split (`--dev-speakers
--seed`), as the pair with the fewest false alarms there among those with at least `--min-hits` hits (a margin
over the 90 % asked for: hits come easily, false alarms are the weak readers); the rates are then measured on every
clip of the dev speakers, with the thresholds grader/reference.py holds.

    .venv/bin/python benchmarks/bench_reference.py                       # checkpoints/default
    .venv/bin/python benchmarks/bench_reference.py --checkpoint DIR --choose-clips 300
"""

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.common import load1, other_texts, resolve, write_results  # noqa: E402
from grader.options import parse_options  # noqa: E402

TARGETS = {"hit_rate_min": 0.90, "false_alarm_max": 0.05}


@dataclass
class ReferenceBench:
    """Choose and measure the reference-mismatch thresholds on real clips."""

    checkpoint: str = field(default="checkpoints/default", metadata={"help": "grader checkpoint folder"})
    data: str = field(default="../shared/data/speechocean762-train", metadata={
        "help": "speechocean762 folder (labels.tsv, audio/), relative to the repo or absolute"})
    dev_speakers: int = field(default=25, metadata={"help": "the measured speakers: grader.train's dev split"})
    seed: int = 0
    choose_clips: int = field(default=800, metadata={"help": "clips of the other speakers to choose thresholds on"})
    min_hits: float = field(default=0.95, metadata={"help": "hit rate the chosen thresholds must reach there"})
    transcribe_clips: int = field(default=30, metadata={"help": "clips to time a full transcript on (0: skip)"})
    batch_size: int = 16
    threads: int = field(default=0, metadata={"help": "torch threads; 0: usable cores"})
    out: str = field(default="benchmarks/results/reference.json", metadata={"help": "results file ('' : none)"})


def gains_of(grader, responses, texts, batch_size) -> list[np.ndarray]:
    """Each reference word's gain (grader.reference.word_gains) on the audio as assess_batch hears it."""
    from grader.audio import check_audio, load_audio, trim_to_speech
    from grader.inference import encode_audios
    from grader.reference import word_gains

    gains = []
    for start in range(0, len(responses), 64):
        heard = []
        for r in responses[start: start + 64]:
            audio = load_audio(r.audio)
            heard.append(trim_to_speech(audio, list(check_audio(audio).speech)))
        with grader.stock_whisper() as whisper:
            states = encode_audios(grader.model, heard, batch_size, grader.precision)
            gains += word_gains(whisper, states, texts[start: start + 64])
    return gains


def choose(own: list[np.ndarray], other: list[np.ndarray], min_hits: float) -> dict:
    """The (gain, share) pair with the fewest false alarms among those with at least `min_hits` hits; on a tie the
    one with more hits (then the first in grid order)."""
    best, grid = None, []
    for gain in (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0):
        found_own = np.array([np.mean(g >= gain) for g in own])
        found_other = np.array([np.mean(g >= gain) for g in other])
        for share in np.round(np.arange(0.1, 0.95, 0.05), 2):
            hit, false = float(np.mean(found_other < share)), float(np.mean(found_own < share))
            grid.append({"found_gain": gain, "min_found": float(share), "hit_rate": hit, "false_alarm_rate": false})
            if hit >= min_hits and (best is None or (-false, hit) > (-best["false_alarm_rate"], best["hit_rate"])):
                best = grid[-1]
    return {"chosen": best, "grid": grid}


def rates(grader, responses, texts, others, batch_size) -> dict:
    """Hit and false-alarm rates of the front door's flag, and what the check cost per response."""
    flagged, timings, words = {"own": [], "other": []}, [], {"own": [], "other": []}
    for name, refs in (("own", texts), ("other", others)):
        for start in range(0, len(responses), 64):
            chunk = [r.audio for r in responses[start: start + 64]]
            for a in grader.assess_batch(chunk, refs[start: start + 64], batch_size=batch_size):
                if not a.scorable:  # no clip of the corpus is refused; a grade nobody checks is no figure
                    continue
                flagged[name].append(any(r.code == "reference_mismatch" for r in a.review))
                words[name].append(a.reference.share)
                timings.append(a.timings)
    return {"clips": len(responses), "hit_rate": round(float(np.mean(flagged["other"])), 4),
            "false_alarm_rate": round(float(np.mean(flagged["own"])), 4),
            "share_found_own_p5_p50": [round(float(np.percentile(words["own"], q)), 3) for q in (5, 50)],
            "share_found_other_p50_p95": [round(float(np.percentile(words["other"], q)), 3) for q in (50, 95)],
            "median_s_per_response": {k: round(float(np.median([t[k] for t in timings])), 4)
                                      for k in ("decode_gate", "model", "reference")}}


def transcript_cost(grader, responses) -> dict:
    """Seconds for the evidence's full transcript (greedy decoding with word times) of each clip, for comparison."""
    from grader.audio import check_audio, load_audio
    from grader.evidence.transcribe import transcribe

    wall, cpu = [], []
    for r in responses:
        audio = load_audio(r.audio)
        speech = list(check_audio(audio).speech)
        t, c = time.perf_counter(), time.process_time()
        transcribe(grader, audio, speech=speech)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"clips": len(responses), "median_s": round(float(np.median(wall)), 4),
            "median_cpu_s": round(float(np.median(cpu)), 4)}


def main(argv: list[str] | None = None) -> dict:
    opts = parse_options(ReferenceBench, argv)
    import torch

    from grader import reference
    from grader.data import read_manifest, split_by_speaker
    from grader.inference import Grader

    torch.set_num_threads(opts.threads or len(os.sched_getaffinity(0)))
    grader = Grader.load(resolve(opts.checkpoint), device="cpu")
    responses = read_manifest(resolve(opts.data) / "labels.tsv", targets=None)
    others_speakers, dev = split_by_speaker(responses, opts.dev_speakers, opts.seed)
    rng = np.random.default_rng(opts.seed)
    pick = [others_speakers[i] for i in sorted(rng.permutation(len(others_speakers))[: opts.choose_clips])]
    started = load1()
    t0 = time.perf_counter()
    pick_texts = [r.text for r in pick]
    pick_others = other_texts(pick_texts, rng)
    chosen = choose(gains_of(grader, pick, pick_texts, opts.batch_size),
                    gains_of(grader, pick, pick_others, opts.batch_size), opts.min_hits)
    print(f"chosen on {len(pick)} clips of {len({r.speaker for r in pick})} other speakers: {chosen['chosen']}")
    print(f"grader/reference.py holds FOUND_GAIN {reference.FOUND_GAIN}, MIN_FOUND {reference.MIN_FOUND}")
    dev_texts = [r.text for r in dev]
    measured = rates(grader, dev, dev_texts, other_texts(dev_texts, rng), opts.batch_size)
    print(f"dev speakers ({len(dev)} clips): hit rate {measured['hit_rate']:.1%}, false alarms "
          f"{measured['false_alarm_rate']:.1%}; median seconds per response {measured['median_s_per_response']}")
    cost = transcript_cost(grader, dev[: opts.transcribe_clips]) if opts.transcribe_clips else None
    if cost:
        print(f"a full transcript instead: median {cost['median_s']:.3f} s per clip ({cost['median_cpu_s']:.3f} s CPU)")
    results = {
        "benchmark": "reference", "options": asdict(opts), "checkpoint": grader.checkpoint_id,
        "thresholds": {"found_gain": reference.FOUND_GAIN, "min_found": reference.MIN_FOUND},
        "choosing": {"clips": len(pick), "speakers": len({r.speaker for r in pick}), **chosen},
        "measured": measured, "targets": TARGETS,
        "met": (measured["hit_rate"] >= TARGETS["hit_rate_min"]
                and measured["false_alarm_rate"] <= TARGETS["false_alarm_max"]),
        "transcript_cost": cost, "seconds": round(time.perf_counter() - t0),
        "machine": {"usable_cores": len(os.sched_getaffinity(0)), "threads": torch.get_num_threads(),
                    "load1_before": started, "load1_after": load1()},
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    if opts.out:
        write_results(results, resolve(opts.out))
    return results


if __name__ == "__main__":
    main()
