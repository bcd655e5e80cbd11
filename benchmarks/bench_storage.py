"""Storage speed on SQLite: override write latency with concurrent writer processes, and grading-record
throughput (one response row and one grade row per graded answer) with a single writer.

Override latency is measured with each writer paced (Poisson arrivals, 10 a second each: 80 a second in all, far
more than a room of examiners clicking "save") and flat out (saturation: on a small machine, 8 busy processes then
queue for the CPUs as much as for the database). FULL is the storage default (an fsync per commit, for power-loss
durability); NORMAL is shown for comparison. Run: .venv/bin/python benchmarks/bench_storage.py
"""

import argparse
import json
import multiprocessing
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from storage import Database  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "storage.json"
SCORES = {"total": {"regression": 7.2, "soft": 7.4, "hard": 8.0, "probs": [0.05] * 10 + [0.5]},
          "fluency": {"regression": 6.9, "soft": 7.0, "hard": 7.0, "probs": [0.05] * 10 + [0.5]}}


def add_record(db: Database) -> int:
    response_id = db.add_response(audio_sha256="ab" * 32, duration_s=42.0, part="2", candidate_id="c-001",
                                  prompt_text="Describe a journey you remember.")
    return db.add_grade(response_id, checkpoint_id="whisper-base@0123abcd", scale_name="ielts", scores=SCORES,
                        scorable=True, gate_measures={"speech_s": 38.2, "clipped_fraction": 0.0}, latency_s=1.3)


def writer(path: str, synchronous: str, grade_id: int, n: int, rate: float | None, barrier) -> list[float]:
    """Seconds from each override's due time (its call, when flat out) to its acknowledged commit. Paced writers
    are due at Poisson arrival times, so time spent behind schedule counts too."""
    rng = np.random.default_rng(os.getpid())
    with Database.open(path, synchronous=synchronous) as db:
        barrier.wait()
        due = time.perf_counter()
        latencies = []
        for i in range(n):
            if rate:
                due += rng.exponential(1 / rate)
                time.sleep(max(0.0, due - time.perf_counter()))
            else:
                due = time.perf_counter()
            receipt = db.add_override(grade_id, examiner=f"examiner-{os.getpid()}", final_score=i % 9,
                                      agreement="partly", reason_code="fluency", comment="Hesitant in part 2.")
            latencies.append(time.perf_counter() - due)
            assert not receipt.queued, receipt.error
    return latencies


def override_latency(folder: Path, synchronous: str, writers: int, n: int, rate: float | None) -> dict:
    path = folder / f"overrides-{synchronous}-{rate}.db"
    with Database.open(path, synchronous=synchronous) as db:
        grade_id = add_record(db)
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(writers)
    start = time.perf_counter()
    with context.Pool(writers) as pool:
        latencies = pool.starmap(writer, [(str(path), synchronous, grade_id, n, rate, barrier)] * writers)
    wall = time.perf_counter() - start
    ms = np.concatenate(latencies) * 1000
    return {"writers": writers, "per_writer_per_s": rate or "flat out", "overrides": len(ms),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "max_ms": round(float(ms.max()), 2), "overrides_per_s": round(len(ms) / wall)}


def record_throughput(folder: Path, synchronous: str, n: int) -> dict:
    with Database.open(folder / f"records-{synchronous}.db", synchronous=synchronous) as db:
        add_record(db)  # warm up the pool
        start = time.perf_counter()
        for _ in range(n):
            add_record(db)
        seconds = time.perf_counter() - start
    return {"records": n, "records_per_s": round(n / seconds), "ms_per_record": round(seconds / n * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--overrides", type=int, default=200, help="per writer and setting")
    parser.add_argument("--rate", type=float, default=10.0, help="overrides per second per paced writer")
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.out.parent) as folder:  # on the disk the results describe
        results = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
                        "platform": platform.platform(),
                        "load_average_1min_at_start": round(os.getloadavg()[0], 2)},
            "target": {"override_p99_ms": 20},
            "override_write_latency": {f"{s} {load}": override_latency(Path(folder), s, args.writers, args.overrides,
                                                                       rate)
                                       for s in ("FULL", "NORMAL")
                                       for load, rate in (("paced", args.rate), ("flat out", None))},
            "grading_record_throughput": {s: record_throughput(Path(folder), s, args.records)
                                          for s in ("FULL", "NORMAL")},
        }
    print(json.dumps(results, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
