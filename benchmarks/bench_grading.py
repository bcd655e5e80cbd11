"""Grading speed on CPU: end-to-end latency of one grade through the front door, `Grader.assess` (decode file ->
gate -> trim -> features -> model -> reference check -> review), model load time, peak memory and batch
throughput, for the naive path and the optimised one side by side.

Variants (each runs in its own process, so load time and peak RSS are its own):
    naive      the stock Whisper recipe: every clip padded to the 30-s window, graded one at a time,
               torch's default thread count
    optimised  the shipped path: real-length encoding (masked), length-bucketed batches via
               Grader.assess_batch, torch.inference_mode, torch.set_num_threads(--threads)
    bf16       the optimised path with Grader.load(precision="bf16") (autocast); scores are compared with fp32
    no-probe   the optimised path with the checkpoint's score probe (grader.probe) off: what the probe costs, and
               how far it moves the scores

Latency clips are built from real speech: speechocean762 read-aloud clips concatenated to 5, 15 and 30 s and
written as temporary FLACs, so each timed grade decodes a real file. Throughput uses --batch-clips original
speechocean762 clips (decode + gate + grade for all of them).

    .venv/bin/python benchmarks/bench_grading.py                      # checkpoints/default, 20 runs
    .venv/bin/python benchmarks/bench_grading.py --checkpoint runs/x --runs 10 --batch-clips 100

Timings on a shared machine move with its load: the 1-minute load average is recorded before and after
each variant, and each grade's process CPU time (all threads) is recorded beside its wall time, since CPU
time moves less with contention. Figures are reported, never asserted.
"""

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.common import load1, resolve, write_results  # noqa: E402
from grader.options import parse_options  # noqa: E402

TARGETS = {"p50_5s_s": 0.25, "p50_30s_s": 0.8, "rtf": 0.05}


@dataclass
class GradingBench:
    """Grading latency, load time, peak RSS and throughput on CPU: naive vs optimised (vs bf16)."""

    checkpoint: str = field(default="checkpoints/default", metadata={"help": "grader checkpoint folder"})
    data: str = field(default="../shared/data/speechocean762-train", metadata={
        "help": "speechocean762 folder (labels.tsv, audio/), relative to the repo or absolute"})
    durations: str = field(default="5,15,30", metadata={"help": "clip lengths in seconds, comma-separated"})
    runs: int = field(default=20, metadata={"help": "timed grades per clip length"})
    warmup: int = field(default=2, metadata={"help": "untimed grades per clip length first"})
    clips_per_duration: int = field(default=3, metadata={"help": "distinct clips per length, cycled over the runs"})
    batch_clips: int = field(default=200, metadata={"help": "clips for the throughput figure (0: skip)"})
    naive_batch_clips: int = field(default=0, metadata={"help": "clips for the naive throughput; 0: --batch-clips"})
    batch_size: int = 16
    threads: int = field(default=0, metadata={"help": "torch threads for the optimised variants; 0: usable cores"})
    variants: str = field(default="naive,optimised,bf16", metadata={"help": "any of naive, optimised, bf16, no-probe"})
    seed: int = 0
    out: str = field(default="benchmarks/results/grading.json", metadata={"help": "results file ('' : none)"})
    variant: str = field(default="", metadata={"help": "internal: run one variant in this process"})
    workdir: str = field(default="", metadata={"help": "internal: the folder holding the clip plan"})


# ---------------------------------------------------------------- the clips (parent process)

def build_plan(opts: GradingBench, workdir: Path) -> dict:
    """Concatenate real read-aloud clips into FLACs of each length; pick clips for throughput."""
    import soundfile as sf

    from grader.audio import SAMPLE_RATE, load_audio
    from grader.data import read_manifest

    responses = read_manifest(resolve(opts.data) / "labels.tsv", targets=None)
    rng = np.random.default_rng(opts.seed)
    order = rng.permutation(len(responses))
    cursor = 0
    latency = []
    for seconds in [float(s) for s in opts.durations.split(",")]:
        for k in range(opts.clips_per_duration):
            pieces, texts, total = [], [], 0
            while total < seconds * SAMPLE_RATE:
                r = responses[order[cursor % len(order)]]
                cursor += 1
                pieces.append(load_audio(r.audio))
                texts.append(r.text or "")
                total += len(pieces[-1])
            audio = np.concatenate(pieces)[: int(seconds * SAMPLE_RATE)]
            path = workdir / f"clip-{seconds:g}s-{k}.flac"
            sf.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
            latency.append({"path": str(path), "seconds": seconds, "prompt": " ".join(t for t in texts if t)})
    batch = [{"path": str(responses[i].audio), "prompt": responses[i].text}
             for i in rng.permutation(len(responses))[: opts.batch_clips]]
    plan = {"latency": latency, "batch": batch}
    (workdir / "plan.json").write_text(json.dumps(plan))
    return plan


# ---------------------------------------------------------------- one variant (child process)

def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 4)


def scores_of(prediction) -> dict:
    return {a: {"soft": s.soft, "regression": s.regression} for a, s in prediction.scores.items()}


def run_variant(opts: GradingBench) -> dict:
    started_load = load1()
    t0 = time.perf_counter()
    import torch

    from grader.inference import Grader

    import_s = time.perf_counter() - t0
    naive = opts.variant == "naive"
    if not naive:
        torch.set_num_threads(opts.threads or len(os.sched_getaffinity(0)))
    checkpoint = resolve(opts.checkpoint)
    t0 = time.perf_counter()
    grader = Grader.load(checkpoint, device="cpu", pad_to_30s=naive,
                         precision="bf16" if opts.variant == "bf16" else "fp32")
    load_s = time.perf_counter() - t0
    if opts.variant == "no-probe":
        grader.probe = None

    plan = json.loads((Path(opts.workdir) / "plan.json").read_text())

    def grade_file(item: dict) -> tuple[dict, dict]:
        cpu, start = time.process_time(), time.perf_counter()
        assessment = grader.assess(item["path"], item["prompt"])
        total = time.perf_counter() - start
        if not assessment.scorable:
            raise RuntimeError(f"{item['path']} failed the gate: {assessment.gate.reason}")
        return assessment.timings | {"total": total, "cpu": time.process_time() - cpu}, scores_of(assessment.prediction)

    latency, clip_scores = {}, {}
    for seconds in sorted({c["seconds"] for c in plan["latency"]}):
        clips = [c for c in plan["latency"] if c["seconds"] == seconds]
        for i in range(opts.warmup):
            grade_file(clips[i % len(clips)])
        times = []
        for i in range(opts.runs):
            clip = clips[i % len(clips)]
            timing, scores = grade_file(clip)
            times.append(timing)
            clip_scores.setdefault(clip["path"], scores)
        totals = [t["total"] for t in times]
        latency[f"{seconds:g}"] = {
            "seconds": seconds, "runs": len(times), "p50_s": percentile(totals, 50), "p95_s": percentile(totals, 95),
            "rtf_p50": round(percentile(totals, 50) / seconds, 4),
            "cpu_p50_s": percentile([t["cpu"] for t in times], 50),
            "median_parts_s": {k: percentile([t[k] for t in times], 50) for k in ("decode_gate", "model", "reference")}}

    throughput = None
    n = (opts.naive_batch_clips or opts.batch_clips) if naive else opts.batch_clips
    if n:
        items = plan["batch"][:n]
        paths, prompts = [i["path"] for i in items], [i["prompt"] for i in items]
        t0 = time.perf_counter()
        if naive:
            assessed = [grader.assess(a, p) for a, p in zip(paths, prompts)]
        else:
            assessed = grader.assess_batch(paths, prompts, batch_size=opts.batch_size)
        elapsed = time.perf_counter() - t0
        graded = [a for a in assessed if a.scorable]
        audio_s = sum(len(a.audio) for a in graded) / 16000
        throughput = {"clips": len(items), "graded": len(graded), "audio_s": round(audio_s, 1),
                      "batch_size": 1 if naive else opts.batch_size,
                      "decode_gate_s": round(sum(a.timings["decode_gate"] for a in graded), 2),
                      "model_s": round(sum(a.timings["model"] for a in graded), 2),
                      "reference_s": round(sum(a.timings["reference"] for a in graded), 2),
                      "responses_per_s": round(len(graded) / elapsed, 2),
                      "scores": [scores_of(a.prediction) for a in graded]}

    return {"variant": opts.variant, "threads": torch.get_num_threads(), "import_s": round(import_s, 2),
            "load_s": round(load_s, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "latency": latency, "throughput": throughput, "clip_scores": clip_scores,
            "checkpoint_id": grader.checkpoint_id, "load1_before": started_load, "load1_after": load1()}


# ---------------------------------------------------------------- comparison and report (parent)

def deviation(a: list[dict], b: list[dict]) -> dict:
    """Max and mean |a - b| over responses and aspects, for the soft and the regression score."""
    out = {}
    for kind in ("soft", "regression"):
        diffs = [abs(x[asp][kind] - y[asp][kind]) for x, y in zip(a, b) for asp in x]
        out[kind] = {"max_abs": round(max(diffs), 4), "mean_abs": round(float(np.mean(diffs)), 4)} if diffs else None
    return out


def compare(reference: dict, other: dict) -> dict:
    clips = [p for p in reference["clip_scores"] if p in other["clip_scores"]]
    result = {"latency_clips": deviation([reference["clip_scores"][p] for p in clips],
                                         [other["clip_scores"][p] for p in clips])}
    if reference["throughput"] and other["throughput"]:
        n = min(len(reference["throughput"]["scores"]), len(other["throughput"]["scores"]))
        result["batch_clips"] = deviation(reference["throughput"]["scores"][:n], other["throughput"]["scores"][:n])
    return result


def targets(variant: dict) -> dict:
    lat = variant["latency"]
    out = {}
    if "5" in lat:
        out["5s_p50_le_0.25s"] = {"value": lat["5"]["p50_s"], "met": lat["5"]["p50_s"] <= TARGETS["p50_5s_s"]}
    if "30" in lat:
        out["30s_p50_le_0.8s"] = {"value": lat["30"]["p50_s"], "met": lat["30"]["p50_s"] <= TARGETS["p50_30s_s"]}
    worst = max(v["rtf_p50"] for v in lat.values())
    out["rtf_le_0.05_all_lengths"] = {"value": worst, "met": worst <= TARGETS["rtf"]}
    return out


def table(results: dict) -> str:
    variants = results["variants"]
    names = list(variants)
    rows = [("load (s)", lambda v: f"{v['load_s']:.2f}"), ("peak RSS (MiB)", lambda v: f"{v['peak_rss_mib']}"),
            ("threads", lambda v: str(v["threads"]))]
    for key in next(iter(variants.values()))["latency"]:
        rows.append((f"{key}-s clip p50 / p95 (s)",
                     lambda v, k=key: f"{v['latency'][k]['p50_s']:.3f} / {v['latency'][k]['p95_s']:.3f}"))
        rows.append((f"{key}-s clip RTF (p50)", lambda v, k=key: f"{v['latency'][k]['rtf_p50']:.3f}"))
        rows.append((f"{key}-s clip CPU time p50 (s)", lambda v, k=key: f"{v['latency'][k]['cpu_p50_s']:.3f}"))
    rows.append(("throughput (responses/s)", lambda v: "-" if not v["throughput"] else
                 f"{v['throughput']['responses_per_s']:.2f} ({v['throughput']['graded']} clips, "
                 f"batch {v['throughput']['batch_size']})"))
    rows.append(("load avg 1 min (before/after)", lambda v: f"{v['load1_before']} / {v['load1_after']}"))
    lines = ["| figure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += ["| " + label + " | " + " | ".join(fn(variants[n]) for n in names) + " |" for label, fn in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict | None:
    opts = parse_options(GradingBench, argv)
    if opts.variant:
        result = run_variant(opts)
        (Path(opts.workdir) / f"{opts.variant}.json").write_text(json.dumps(result))
        return None
    checkpoint = resolve(opts.checkpoint)
    if not (checkpoint / "grader.json").is_file():
        raise SystemExit(f"no checkpoint at {checkpoint}; pass --checkpoint DIR "
                         "(train one with python -m grader.train)")
    if not (resolve(opts.data) / "labels.tsv").is_file():
        raise SystemExit(f"speechocean762 data not found at {resolve(opts.data)}; pass --data DIR")
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        workdir = Path(tmp)
        plan = build_plan(opts, workdir)
        print(f"{len(plan['latency'])} latency clips and {len(plan['batch'])} throughput clips in {workdir}")
        variants = {}
        for name in opts.variants.split(","):
            args = [a for a in (argv if argv is not None else sys.argv[1:])]
            command = [sys.executable, __file__, *args, "--variant", name, "--workdir", str(workdir)]
            started = time.perf_counter()
            subprocess.run(command, check=True, cwd=REPO)
            variants[name] = json.loads((workdir / f"{name}.json").read_text())
            print(f"{name}: done in {time.perf_counter() - started:.0f} s (load avg {load1()})")
    comparisons = {}
    if "optimised" in variants:
        for name in variants:
            if name != "optimised":
                comparisons[f"{name}_vs_optimised"] = compare(variants["optimised"], variants[name])
    import torch

    from grader.inference import native_bf16
    from grader.model import read_checkpoint_info

    info = read_checkpoint_info(checkpoint)
    results = {
        "benchmark": "grading", "options": {k: v for k, v in asdict(opts).items() if k not in ("variant", "workdir")},
        "checkpoint": {"path": str(opts.checkpoint), "id": info.get("checkpoint_id"), "model": info.get("model"),
                       "members": {m: read_checkpoint_info(Path(checkpoint) / m)["model"]
                                   for m in info.get("members", [])}},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "usable_cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "native_bf16": native_bf16(torch.device("cpu")), "load1_at_end": load1(),
                    "note": "shared machine: other jobs were running; load1 is os.getloadavg()[0]"},
        "targets": {"definition": "p50 of end-to-end grade (decode+gate+features+model); RTF = p50 / clip length",
                    **{name: targets(v) for name, v in variants.items()}},
        "score_deviation": comparisons,
        "variants": {name: {k: v for k, v in r.items() if k != "clip_scores" and k != "throughput"}
                     | {"throughput": r["throughput"] and {k: v for k, v in r["throughput"].items() if k != "scores"}}
                     for name, r in variants.items()},
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    print()
    print(table(results))
    print()
    for name, t in results["targets"].items():
        if name != "definition":
            print(f"targets ({name}): " + ", ".join(f"{k} {v['value']} {'met' if v['met'] else 'NOT met'}"
                                                     for k, v in t.items()))
    for name, c in comparisons.items():
        print(f"score deviation {name}: {json.dumps(c)}")
    if opts.out:
        write_results(results, resolve(opts.out))
    return results


if __name__ == "__main__":
    main()
