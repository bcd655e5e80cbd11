"""The noisy-recording review reason (grader/review.py, `noisy_recording`) on real speech: its threshold on the
gate's speech-over-background measure (`snr_db`, grader/audio/gate.py) chosen on some speakers, its hit and
false-alarm rates measured on others.

Threshold: on `--choose-clips` clips of the speakers outside the measured ones, the highest whole dB that flags at
most `--max-false-alarm` of the clean clips (a false flag costs an examiner a listen; a missed one is what the
grade's other reasons are for). Rates: every clip of the measured speakers (`--folds 5 --fold 0`: those of
`grader.train --folds 5`'s fold 0; otherwise grader.train's dev split), clean (a flag is a false alarm), after pink
noise at 10 and 20 dB below the recording's level (a flag is a hit; these move the score: benchmarks/README.md,
"Robustness") and after the other perturbations of bench_robustness, which should not read as noise. The flag is
the gate's measure against `grader.review.MIN_SNR_DB`, exactly as `Grader.assess` judges it; no model is run.

    .venv/bin/python benchmarks/bench_noise.py --folds 5 --fold 0
"""

import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.bench_robustness import PERTURBATIONS  # noqa: E402
from benchmarks.common import load1, resolve, write_results  # noqa: E402
from grader.options import parse_options  # noqa: E402

TARGETS = {"false_alarm_max": 0.05, "hit_rate_min_noise_10_db": 0.90}
NOISE = "pink noise 10 dB SNR"


@dataclass
class NoiseBench:
    """Choose and measure the noisy-recording threshold on real clips."""

    data: str = field(default="../shared/data/speechocean762-train", metadata={
        "help": "speechocean762 folder (labels.tsv, audio/), relative to the repo or absolute"})
    dev_speakers: int = field(default=25, metadata={"help": "the measured speakers: grader.train's dev split"})
    folds: int = field(default=0, metadata={"help": "with K: measure fold --fold of `grader.train --folds K`"})
    fold: int = 0
    seed: int = 0
    choose_clips: int = field(default=600, metadata={"help": "clips of the other speakers to choose on"})
    max_false_alarm: float = field(default=0.02, metadata={"help": "share of clean clips the threshold may flag"})
    clips: int = field(default=0, metadata={"help": "measured clips (0: every clip of the measured speakers)"})
    out: str = field(default="benchmarks/results/noise.json", metadata={"help": "results file ('' : none)"})


def snr_of(recordings: list) -> np.ndarray:
    """The gate's speech-over-background measure of each recording (audio, or a file the gate decodes)."""
    from grader.audio import check_audio, inspect_file

    return np.array([(check_audio(r) if isinstance(r, np.ndarray) else inspect_file(r)[1]).measures["snr_db"]
                     for r in recordings])


def perturbed(audios: list[np.ndarray], name: str, seed: int, folder: Path) -> list:
    rng = np.random.default_rng([seed, list(PERTURBATIONS).index(name)])
    out = [PERTURBATIONS[name](a, rng, folder) for a in audios]
    return [p if isinstance(p, Path) else p.astype(np.float32) for p in out]


def main(argv: list[str] | None = None) -> dict:
    opts = parse_options(NoiseBench, argv)
    from grader.audio import load_audio
    from grader.data import read_manifest, speaker_folds, split_by_speaker
    from grader.review import MIN_SNR_DB

    responses = read_manifest(resolve(opts.data) / "labels.tsv", ["total"])
    if opts.folds:
        folds = speaker_folds(responses, opts.folds, opts.seed, target="total")
        measured = [r for r, k in zip(responses, folds) if k == opts.fold]
        others = [r for r, k in zip(responses, folds) if k != opts.fold]
    else:
        others, measured = split_by_speaker(responses, opts.dev_speakers, opts.seed)
    rng = np.random.default_rng(opts.seed)
    pick = [others[i] for i in sorted(rng.permutation(len(others))[: opts.choose_clips])]
    if opts.clips:
        measured = [measured[i] for i in sorted(rng.permutation(len(measured))[: opts.clips])]
    started, t0 = load1(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-noise-") as tmp:
        audios = [load_audio(r.audio) for r in pick]
        clean, noisy = snr_of(audios), snr_of(perturbed(audios, NOISE, opts.seed, Path(tmp)))
        grid = np.arange(10.0, 40.5, 1.0)
        allowed = [t for t in grid if np.mean(clean < t) <= opts.max_false_alarm]
        chosen = float(max(allowed)) if allowed else None
        choosing = {"clips": len(pick), "speakers": len({r.speaker for r in pick}), "threshold_db": chosen,
                    "false_alarm_rate": round(float(np.mean(clean < chosen)), 4) if allowed else None,
                    "hit_rate_noise_10_db": round(float(np.mean(noisy < chosen)), 4) if allowed else None}
        print(f"chosen on {len(pick)} clips of {choosing['speakers']} other speakers: {choosing}")
        print(f"grader/review.py holds MIN_SNR_DB {MIN_SNR_DB}")

        audios = [load_audio(r.audio) for r in measured]
        rows = {"clean": snr_of(audios)}
        for name in PERTURBATIONS:
            if not name.startswith("tone 0.5") and not name.startswith("tone 1"):  # the lead-ins: one is enough
                rows[name] = snr_of(perturbed(audios, name, opts.seed, Path(tmp)))
    table = {name: {"flagged": round(float(np.mean(v < MIN_SNR_DB)), 4),
                    "snr_db_p5_p50_p95": [round(float(np.percentile(v, q)), 1) for q in (5, 50, 95)]}
             for name, v in rows.items()}
    for name, row in table.items():
        print(f"{name:24s} flagged {row['flagged']:6.1%}   snr_db p5/p50/p95 {row['snr_db_p5_p50_p95']}")
    false_alarm, hit = table["clean"]["flagged"], table[NOISE]["flagged"]
    results = {
        "benchmark": "noise", "options": asdict(opts), "threshold_db": MIN_SNR_DB, "choosing": choosing,
        "measured": {"clips": len(measured), "speakers": len({r.speaker for r in measured}), "rows": table},
        "targets": TARGETS,
        "met": false_alarm <= TARGETS["false_alarm_max"] and hit >= TARGETS["hit_rate_min_noise_10_db"],
        "seconds": round(time.perf_counter() - t0),
        "machine": {"usable_cores": len(os.sched_getaffinity(0)), "load1_before": started, "load1_after": load1()},
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    if opts.out:
        write_results(results, resolve(opts.out))
    return results


if __name__ == "__main__":
    main()
