"""The running app under load and under a crash: parallel gradings through the Gradio queue while 8 other
processes write 1,000 overrides each into the same database, and SIGKILL in the middle of API override writes."""

import multiprocessing
import signal
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor

from conftest import launch_app
from gradio_client import Client, handle_file
from test_storage import write_overrides

# The test's own 8 writer processes load the machine; gradio_client's 5-s upload timeout is for a quiet server.
PATIENT = {"timeout": 120}


def rows(db, query: str) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(query).fetchall()


def test_parallel_grades_and_overrides_lose_nothing(tiny_checkpoint, speech_clip, tmp_path):
    """12 gradings and 8 × 25 API overrides through the queue (2 gradings at a time), concurrently with 8 writer
    processes × 1,000 overrides on the same SQLite file: every row is there once, none is duplicated."""
    with launch_app(tiny_checkpoint, tmp_path, "--concurrency", "2") as app:
        client = Client(app.url, verbose=False, httpx_kwargs=PATIENT)
        first = client.predict(handle_file(str(speech_clip)), "seed", "", "", api_name="/grade")[3]

        def grade(i: int) -> int:
            own = Client(app.url, verbose=False, httpx_kwargs=PATIENT)  # a client per caller, as browsers are
            result = own.predict(handle_file(str(speech_clip)), f"cand-{i}", "", "", api_name="/grade")[2]
            assert result["scorable"], result
            return result["grade_id"]

        def override(writer: int) -> list[str]:
            own = Client(app.url, verbose=False, httpx_kwargs=PATIENT)
            return [own.predict(first, 5.0, "agree", "", f"{writer}-{i}", f"api-{writer}", api_name="/override")
                    for i in range(25)]

        with multiprocessing.get_context("spawn").Pool(8) as pool, ThreadPoolExecutor(20) as threads:
            direct = pool.starmap_async(write_overrides, [(str(app.db), 1000)] * 8)
            grades = [threads.submit(grade, i) for i in range(12)]
            messages = [threads.submit(override, w) for w in range(8)]
            grade_ids = [g.result(timeout=600) for g in grades]
            acknowledged = [m for f in messages for m in f.result(timeout=600)]
            written = [r for worker in direct.get(timeout=600) for r in worker]

    assert len(set(grade_ids)) == 12
    assert all(m.startswith("✓") for m in acknowledged) and len(acknowledged) == 200
    assert rows(app.db, "SELECT COUNT(*) FROM grades WHERE scorable") == [(13 + 8,)]  # + one per direct writer
    api = rows(app.db, "SELECT examiner, comment FROM overrides WHERE examiner LIKE 'api-%'")
    assert len(api) == len(set(api)) == 200
    direct_uuids = {uuid for uuid, *_ in written}
    stored = {u for (u,) in rows(app.db, "SELECT override_uuid FROM overrides WHERE examiner LIKE 'examiner-%'")}
    assert len(written) == len(direct_uuids) == 8000 and stored == direct_uuids
    assert rows(app.db, "SELECT COUNT(*) FROM overrides") == [(8200,)]
    assert "Traceback" not in app.log()


def test_sigkill_during_api_overrides_keeps_every_acknowledged_one(tiny_checkpoint, speech_clip, tmp_path):
    with launch_app(tiny_checkpoint, tmp_path) as app:
        client = Client(app.url, verbose=False, httpx_kwargs=PATIENT)
        grade_id = client.predict(handle_file(str(speech_clip)), "cand", "", "", api_name="/grade")[3]
        acknowledged: list[str] = []
        enough = threading.Event()

        def keep_writing() -> None:
            for i in range(100_000):
                try:
                    message = client.predict(grade_id, 6.0, "partly", "", f"note-{i}", "ann", api_name="/override")
                except Exception:  # the server died under us: that write was never acknowledged
                    return
                if message.startswith("✓"):
                    acknowledged.append(f"note-{i}")
                if len(acknowledged) >= 40:
                    enough.set()

        writer = threading.Thread(target=keep_writing)
        writer.start()
        assert enough.wait(timeout=300), app.log()
        app.process.send_signal(signal.SIGKILL)  # while the writer thread keeps sending
        app.process.wait()
        writer.join(timeout=120)

    assert app.process.returncode == -signal.SIGKILL
    assert rows(app.db, "PRAGMA integrity_check") == [("ok",)]
    stored = [c for (c,) in rows(app.db, "SELECT comment FROM overrides")]
    assert len(stored) == len(set(stored)) >= len(acknowledged) >= 40
    assert set(acknowledged) <= set(stored)

