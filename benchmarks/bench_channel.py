"""The recording review reasons (grader/review.py: `noisy_recording`, `narrowband_recording`) on real speech: each
threshold on its gate measure (grader/audio/gate.py: `snr_db`, how far the speech stands above the background;
`high_band_db`, how much of it reaches above a telephone line's band) chosen on some speakers, its hit and
false-alarm rates measured on others.

Threshold: on `--choose-clips` clips of the speakers outside the measured ones, the highest whole dB that flags at
most the flag's share of the clean clips (a false flag costs an examiner a listen; a missed one is what the grade's
other reasons are for): 2 % for noise, whose milder forms (pink noise at 20 dB) are worth catching too; none for
the narrowband flag, whose clean and telephone measures lie some 25 dB apart, with no milder form known to move the
score. Rates: every clip of the measured speakers (`--folds 5 --fold 0`: those of
`grader.train --folds 5`'s fold 0; otherwise grader.train's dev split), clean (a flag is a false alarm), through the
channel the flag is for (pink noise at 10 dB below the recording's level; a telephone band: a flag is a hit; both
move the score: benchmarks/README.md, "Robustness") and through the other perturbations of bench_robustness, which
should not read as that channel. A flag is the gate's measure against grader.review's threshold, exactly as
`Grader.assess` judges it; no model is run.

    .venv/bin/python benchmarks/bench_channel.py --folds 5 --fold 0
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

TARGETS = {"false_alarm_max": 0.05, "hit_rate_min": 0.90}
# flag: (the gate measure, the perturbation it must catch, the attribute of grader.review.ReviewRule it is held to,
# the share of clean choosing clips its threshold may flag)
FLAGS = {"noisy_recording": ("snr_db", "pink noise 10 dB SNR", "min_snr_db", 0.02),
         "narrowband_recording": ("high_band_db", "telephone 300-3400 Hz", "min_high_band_db", 0.0)}


@dataclass
class ChannelBench:
    """Choose and measure the recording review reasons' thresholds on real clips."""

    data: str = field(default="../shared/data/speechocean762-train", metadata={
        "help": "speechocean762 folder (labels.tsv, audio/), relative to the repo or absolute"})
    dev_speakers: int = field(default=25, metadata={"help": "the measured speakers: grader.train's dev split"})
    folds: int = field(default=0, metadata={"help": "with K: measure fold --fold of `grader.train --folds K`"})
    fold: int = 0
    seed: int = 0
    choose_clips: int = field(default=600, metadata={"help": "clips of the other speakers to choose on"})
    clips: int = field(default=0, metadata={"help": "measured clips (0: every clip of the measured speakers)"})
    out: str = field(default="benchmarks/results/channel.json", metadata={"help": "results file ('' : none)"})


def measures_of(recordings: list) -> dict[str, np.ndarray]:
    """The gate's measures of each recording (audio, or a file the gate decodes), by measure."""
    from grader.audio import check_audio, inspect_file

    gated = [(check_audio(r) if isinstance(r, np.ndarray) else inspect_file(r)[1]).measures for r in recordings]
    return {measure: np.array([g[measure] for g in gated]) for measure, *_ in FLAGS.values()}


def perturbed(audios: list[np.ndarray], name: str, seed: int, folder: Path) -> list:
    rng = np.random.default_rng([seed, list(PERTURBATIONS).index(name)])
    out = [PERTURBATIONS[name](a, rng, folder) for a in audios]
    return [p if isinstance(p, Path) else p.astype(np.float32) for p in out]


def choose(clean: np.ndarray, hit: np.ndarray, max_false_alarm: float) -> dict:
    """The highest whole dB flagging at most `max_false_alarm` of `clean`, and its rates there."""
    allowed = [t for t in np.arange(-80.0, 80.5, 1.0) if np.mean(clean < t) <= max_false_alarm]
    if not allowed:
        return {"threshold_db": None}
    chosen = float(max(allowed))
    return {"threshold_db": chosen, "false_alarm_rate": round(float(np.mean(clean < chosen)), 4),
            "hit_rate": round(float(np.mean(hit < chosen)), 4)}


def main(argv: list[str] | None = None) -> dict:
    opts = parse_options(ChannelBench, argv)
    from grader.audio import load_audio
    from grader.data import read_manifest, speaker_folds, split_by_speaker
    from grader.review import ReviewRule

    rule = ReviewRule()
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
    choosing = {}
    with tempfile.TemporaryDirectory(prefix="bench-channel-") as tmp:
        audios = [load_audio(r.audio) for r in pick]
        clean = measures_of(audios)
        for flag, (measure, channel, attribute, max_false_alarm) in FLAGS.items():
            hit = measures_of(perturbed(audios, channel, opts.seed, Path(tmp)))[measure]
            choosing[flag] = {"clips": len(pick), "speakers": len({r.speaker for r in pick}),
                              "max_false_alarm": max_false_alarm, **choose(clean[measure], hit, max_false_alarm),
                              "grader_review_holds": getattr(rule, attribute)}
            print(f"{flag}: chosen on {len(pick)} clips of other speakers: {choosing[flag]}")

        audios = [load_audio(r.audio) for r in measured]
        rows = {"clean": measures_of(audios)}
        for name in PERTURBATIONS:
            if not name.startswith("tone 0.5") and not name.startswith("tone 1"):  # the lead-ins: one is enough
                rows[name] = measures_of(perturbed(audios, name, opts.seed, Path(tmp)))
    table = {name: {flag: {"flagged": round(float(np.mean(v[measure] < getattr(rule, attribute))), 4),
                           f"{measure}_p5_p50_p95": [round(float(np.percentile(v[measure], q)), 1) for q in (5, 50, 95)]}
                    for flag, (measure, _, attribute, _) in FLAGS.items()}
             for name, v in rows.items()}
    for name, row in table.items():
        print(f"{name:24s} " + "   ".join(f"{flag} {r['flagged']:6.1%}" for flag, r in row.items()))
    met = {flag: table["clean"][flag]["flagged"] <= TARGETS["false_alarm_max"]
           and table[channel][flag]["flagged"] >= TARGETS["hit_rate_min"] for flag, (_, channel, *_) in FLAGS.items()}
    results = {
        "benchmark": "channel", "options": asdict(opts),
        "thresholds_db": {flag: getattr(rule, flags[2]) for flag, flags in FLAGS.items()},
        "choosing": choosing,
        "measured": {"clips": len(measured), "speakers": len({r.speaker for r in measured}), "rows": table},
        "targets": TARGETS, "met": met,
        "seconds": round(time.perf_counter() - t0),
        "machine": {"usable_cores": len(os.sched_getaffinity(0)), "load1_before": started, "load1_after": load1()},
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    if opts.out:
        write_results(results, resolve(opts.out))
    return results


if __name__ == "__main__":
    main()
