"""Soak: N clients grading and marking against a real `python app.py` for M minutes, the app's memory sampled.

Each client is its own gradio_client session, as a browser tab is: it grades a real clip (cycling over the repo's
clips), asks for its evidence (as the page does after every grade), then logs an override of that grade, and again,
until the time is up; `--rounds` repeats that with new sessions (new tabs) in the same app. The app's resident
memory (VmRSS of its process) is sampled every few seconds. At the end the database is checked against what the
clients were told: every grade id returned and every override answered "✓ saved" must be there. Loopback only
(127.0.0.1), bounded (at most 64 clients and 30 minutes). Run: .venv/bin/python benchmarks/bench_soak.py (20 clients
x 2 minutes).
"""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, load1, resolve, write_results  # noqa: E402
from grader.options import parse_options  # noqa: E402

CLIPS = sorted((REPO / "ui" / "examples").glob("*.flac")) + sorted(
    (REPO / "tests" / "data" / "speechocean762" / "audio").glob("*.flac"))


@dataclass
class SoakBench:
    """Grades and overrides from many clients against the real app, with its memory over time."""

    clients: int = field(default=20, metadata={"help": "concurrent client sessions (at most 64)"})
    minutes: float = field(default=2.0, metadata={"help": "how long they keep going, per round (at most 30 in all)"})
    rounds: int = field(default=1, metadata={"help": "rounds, each with new client sessions, in the same app"})
    evidence: bool = field(default=True, metadata={"help": "ask for each grade's evidence, as the page does"})
    sample_s: float = field(default=5.0, metadata={"help": "seconds between memory samples"})
    checkpoint: str = field(default="checkpoints/default", metadata={"help": "grader checkpoint folder"})
    app_args: str = field(default="", metadata={"help": "more app.py flags, space-separated"})
    out: str = field(default="benchmarks/results/soak.json", metadata={"help": "results file ('': none)"})

    def __post_init__(self):
        if not 1 <= self.clients <= 64 or not 0 < self.minutes * self.rounds <= 30:
            raise ValueError("--clients must be 1-64 and --minutes x --rounds at most 30: this is a bounded benchmark")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def start_app(opts: SoakBench, folder: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (folder / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "GRADER_AUTH"} | {
        "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "TMPDIR": str(folder / "tmp")}
    log = open(folder / "app.log", "w")
    process = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--checkpoint", str(resolve(opts.checkpoint)),
                                "--db", str(folder / "grades.db"), "--data-dir", str(folder / "data"), "--host",
                                "127.0.0.1", "--port", str(port), *opts.app_args.split()],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the app exited ({process.returncode}):\n{(folder / 'app.log').read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit("the app did not start in 5 minutes")


def client_loop(url: str, index: int, stop: float, evidence: bool, tally: dict, lock: threading.Lock) -> None:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    i = 0
    while time.monotonic() < stop:
        clip = CLIPS[(index + i) % len(CLIPS)]
        i += 1
        try:
            result = client.predict(handle_file(str(clip)), f"soak-{index}", "", "", api_name="/grade")[2]
            with lock:
                tally["grades"].append(result["grade_id"])
            if evidence and result["scorable"]:
                client.predict(api_name="/evidence")  # of the session's last grade, as the page chains it
                with lock:
                    tally["evidence"] += 1
            message = client.predict(result["grade_id"], 5.0, "partly", "fluency", f"soak {index}-{i}", f"c{index}",
                                     api_name="/override")
            with lock:
                tally["saved" if message.startswith("✓") else "queued"].append(f"soak {index}-{i}")
        except Exception as error:  # counted, not fatal: a soak reports what failed
            with lock:
                tally["errors"].append(f"{type(error).__name__}: {str(error)[:200]}")


def main(argv: list[str] | None = None) -> dict:
    opts = parse_options(SoakBench, argv)
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        folder = Path(tmp)
        process, url = start_app(opts, folder)
        try:
            started = time.monotonic()
            samples = [(0.0, rss_mb(process.pid))]
            print(f"app up at {url}, {samples[0][1]:.0f} MB; {opts.clients} clients x {opts.minutes:g} min")
            tally = {"grades": [], "evidence": 0, "saved": [], "queued": [], "errors": []}
            lock = threading.Lock()
            round_ends = []
            for _ in range(opts.rounds):
                stop = time.monotonic() + opts.minutes * 60
                threads = [threading.Thread(target=client_loop, args=(url, i, stop, opts.evidence, tally, lock),
                                            daemon=True) for i in range(opts.clients)]
                for t in threads:
                    t.start()
                while any(t.is_alive() for t in threads):
                    time.sleep(opts.sample_s)
                    samples.append((round(time.monotonic() - started, 1), round(rss_mb(process.pid), 1)))
                    print(f"{samples[-1][0]:7.1f} s  {samples[-1][1]:7.1f} MB  {len(tally['grades'])} grades")
                for t in threads:
                    t.join(timeout=120)
                time.sleep(opts.sample_s)
                samples.append((round(time.monotonic() - started, 1), round(rss_mb(process.pid), 1)))  # idle again
                round_ends.append({"t_s": samples[-1][0], "rss_mb": samples[-1][1], "grades": len(tally["grades"])})
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        with sqlite3.connect(folder / "grades.db") as db:
            stored_grades = {g for (g,) in db.execute("SELECT id FROM grades")}
            stored_marks = {c for (c,) in db.execute("SELECT comment FROM overrides")}
        log = (folder / "app.log").read_text(errors="replace")
    second_half = [rss for t, rss in samples if t >= samples[-1][0] / 2]
    results = {
        "clients": opts.clients, "minutes": opts.minutes, "checkpoint": opts.checkpoint, "app_args": opts.app_args,
        "load1_end": load1(), "cpus": os.cpu_count(),
        "rounds": opts.rounds, "grades": len(tally["grades"]), "evidence": tally["evidence"],
        "overrides_saved": len(tally["saved"]),
        "overrides_queued": len(tally["queued"]), "errors": len(tally["errors"]), "error_examples": tally["errors"][:5],
        "grades_lost": len(set(tally["grades"]) - stored_grades),
        "overrides_lost": len(set(tally["saved"]) - stored_marks),
        "tracebacks_in_log": log.count("Traceback"),
        "rss_mb": {"start": samples[0][1], "end": samples[-1][1], "max": max(r for _, r in samples),
                   "second_half_min": min(second_half), "second_half_max": max(second_half)},
        "rss_after_each_round": round_ends,
        "rss_samples": [{"t_s": t, "rss_mb": r} for t, r in samples],
        "options": asdict(opts),
    }
    print(f"{results['grades']} grades, {results['overrides_saved']} overrides saved, {results['errors']} errors, "
          f"{results['grades_lost']} grades and {results['overrides_lost']} overrides lost; RSS {samples[0][1]:.0f} -> "
          f"{samples[-1][1]:.0f} MB (max {results['rss_mb']['max']:.0f})")
    if opts.out:
        write_results(results, resolve(opts.out))
    return results


if __name__ == "__main__":
    main()
