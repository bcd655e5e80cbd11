"""The recording review reasons (grader/review.py: `noisy_recording`, `narrowband_recording`,
`reverberant_recording`) on real speech. The first two: each threshold on its gate measure (grader/audio/gate.py:
`snr_db`, how far the speech stands above the background; `high_band_db`, how much of it reaches above a telephone
line's band) chosen on some speakers, its hit and false-alarm rates measured on others.

Threshold: on `--choose-clips` clips of the speakers outside the measured ones, the highest whole dB that flags at
most the flag's share of the clean clips (a false flag costs an examiner a listen; a missed one is what the grade's
other reasons are for): 2 % for noise, whose milder forms (pink noise at 20 dB) are worth catching too; none for
the narrowband flag, whose clean and telephone measures lie some 25 dB apart, with no milder form known to move the
score. Rates: every clip of the measured speakers (`--folds 5 --fold 0`: those of
`grader.train --folds 5`'s fold 0; otherwise grader.train's dev split), clean (a flag is a false alarm), through the
channel the flag is for (pink noise at 10 dB below the recording's level; a telephone band: a flag is a hit; both
move the score: benchmarks/README.md, "Robustness") and through the other perturbations of bench_robustness, which
should not read as that channel. A flag is the gate's measure against grader.review's threshold, exactly as
`Grader.assess` judges it.

The third, with `--probe`: the channel probe (grader.channel) fitted without the measured speakers, its threshold
chosen there out of fold, read by `Grader.assess` on every measured clip, clean and perturbed as above, and through
rooms unlike training's (`other_room`: early reflections, a tail decaying faster at high frequencies, two
direct-to-reverberant ratios), which tell whether it learned rooms or training's one simulator:

    .venv/bin/python -m grader.channel checkpoints/default --manifest ../shared/data/speechocean762-train/labels.tsv \
        --exclude-fold 0 --out runs/channel-fold0
    .venv/bin/python benchmarks/bench_channel.py --folds 5 --fold 0 --probe runs/channel-fold0
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
ROOM_FLAG = "reverberant_recording"  # the channel probe's: its threshold is chosen when it is fitted (grader.channel)


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
    probe: str = field(default="", metadata={
        "help": "a folder with a channel.json fitted without the measured speakers (python -m grader.channel "
                "--exclude-fold): measure the room flag too, grading every measured clip; empty: gate flags only"})
    checkpoint: str = field(default="checkpoints/default", metadata={"help": "with --probe: the grader it reads"})
    out: str = field(default="benchmarks/results/channel.json", metadata={"help": "results file ('' : none)"})


def other_room(audio: np.ndarray, rng: np.random.Generator, rt60_s: float = 0.5, drr_db: float = 0.0) -> np.ndarray:
    """A room unlike training's (grader.augment.reverb: one broadband tail straight after the direct sound): a
    dozen discrete reflections in the first 50 ms, then a diffuse tail from 20 ms decaying twice as fast at high
    frequencies as at low, all of it `drr_db` below the direct sound; at the dry recording's level."""
    from scipy.signal import butter, fftconvolve, sosfilt

    from grader.audio import SAMPLE_RATE

    t = np.arange(int(1.5 * rt60_s * SAMPLE_RATE)) / SAMPLE_RATE
    late = np.zeros(len(t))
    for band, scale in (((60, 500), 1.2), ((500, 2000), 1.0), ((2000, 7900), 0.6)):
        noise = sosfilt(butter(2, band, "bandpass", fs=SAMPLE_RATE, output="sos"), rng.standard_normal(len(t)))
        late += noise * np.exp(-6.9 * t / (rt60_s * scale))
    late *= (t > 0.02) * 0.3
    for delay in rng.uniform(0.002, 0.05, 12):
        late[int(delay * SAMPLE_RATE)] += rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 0.7)
    late *= 10 ** (-drr_db / 20) / np.sqrt(np.sum(late ** 2))
    wet = fftconvolve(audio, np.r_[1.0, late[1:]])[: len(audio)]
    return (wet * np.sqrt(np.mean(audio ** 2) / max(np.mean(wet ** 2), 1e-12))).astype(np.float32)


OTHER_ROOMS = {"other room, RT60 0.5 s, DRR 0 dB": (0.5, 0.0), "other room, RT60 0.8 s, DRR 5 dB": (0.8, 5.0)}


def measures_of(recordings: list) -> dict[str, np.ndarray]:
    """The gate's measures of each recording (audio, or a file the gate decodes), by measure."""
    from grader.audio import check_audio, inspect_file

    gated = [(check_audio(r) if isinstance(r, np.ndarray) else inspect_file(r)[1]).measures for r in recordings]
    return {measure: np.array([g[measure] for g in gated]) for measure, *_ in FLAGS.values()}


def perturbed(audios: list[np.ndarray], name: str, seed: int, folder: Path) -> list:
    rng = np.random.default_rng([seed, list(PERTURBATIONS).index(name)])
    out = [PERTURBATIONS[name](a, rng, folder) for a in audios]
    return [p if isinstance(p, Path) else p.astype(np.float32) for p in out]


def room_flags(grader, recordings: list) -> dict:
    """The share of `recordings` that `Grader.assess` flags reverberant (of those the gate lets through), and the
    probe's probability of a room, 5th / 50th / 95th percentile."""
    assessed = [a for a in grader.assess_batch(recordings) if a.scorable]
    room = np.array([a.channel.probabilities["room"] for a in assessed])
    return {"flagged": round(float(np.mean([a.channel.reverberant for a in assessed])), 4),
            "room_p5_p50_p95": [round(float(np.percentile(room, q)), 3) for q in (5, 50, 95)],
            "graded": len(assessed)}


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
    from grader.channel import PROBE_FILE, ChannelProbe
    from grader.inference import Grader
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
        recordings = {"clean": audios}
        for name in PERTURBATIONS:
            if not name.startswith("tone 0.5") and not name.startswith("tone 1"):  # the lead-ins: one is enough
                recordings[name] = perturbed(audios, name, opts.seed, Path(tmp))
        grader = None
        if opts.probe:
            grader = Grader.load(resolve(opts.checkpoint))
            grader.channel = ChannelProbe.load(resolve(opts.probe))
            if grader.channel is None:
                raise SystemExit(f"no {PROBE_FILE} in {opts.probe}: fit one with python -m grader.channel")
            for k, (name, (rt60_s, drr_db)) in enumerate(OTHER_ROOMS.items()):
                rng = np.random.default_rng([opts.seed, len(PERTURBATIONS) + k])
                recordings[name] = [other_room(a, rng, rt60_s, drr_db) for a in audios]
        table = {}
        for name, recs in recordings.items():
            v = measures_of(recs)
            table[name] = {flag: {"flagged": round(float(np.mean(v[measure] < getattr(rule, attribute))), 4),
                                  f"{measure}_p5_p50_p95": [round(float(np.percentile(v[measure], q)), 1)
                                                            for q in (5, 50, 95)]}
                           for flag, (measure, _, attribute, _) in FLAGS.items()}
            if grader:
                table[name][ROOM_FLAG] = room_flags(grader, recs)
            print(f"{name:34s} " + "   ".join(f"{flag} {r['flagged']:6.1%}" for flag, r in table[name].items()),
                  flush=True)
    met = {flag: table["clean"][flag]["flagged"] <= TARGETS["false_alarm_max"]
           and table[channel][flag]["flagged"] >= TARGETS["hit_rate_min"] for flag, (_, channel, *_) in FLAGS.items()}
    if grader:
        met[ROOM_FLAG] = (table["clean"][ROOM_FLAG]["flagged"] <= TARGETS["false_alarm_max"]
                          and table["small-room reverb"][ROOM_FLAG]["flagged"] >= TARGETS["hit_rate_min"])
    results = {
        "benchmark": "channel", "options": asdict(opts),
        "thresholds_db": {flag: getattr(rule, flags[2]) for flag, flags in FLAGS.items()},
        "probe": grader and {"path": opts.probe, "room_threshold": grader.channel.room_threshold,
                             "fitted": grader.channel.report},
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
