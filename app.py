"""Start the grader web app: `python app.py` (defaults), `python app.py --help` (options).

Uploads go to a private temp folder, removed at exit (and at the next start, after a crash); the data folder
(database, kept audio) is never served.
"""

import atexit
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path


def cap_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own malloc arena (up to 8 per core) and keeps what is freed there
    for that arena: with Gradio's worker threads taking turns at the model, the app's memory grew by hundreds of MB
    over minutes of load and kept rising (benchmarks/bench_soak.py). Two arenas keep it flat. Must run before any
    thread starts; a no-op off glibc, or where MALLOC_ARENA_MAX is set."""
    if "MALLOC_ARENA_MAX" not in os.environ:
        try:
            ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
        except (OSError, AttributeError):
            pass


cap_malloc_arenas()  # before the imports below (torch, gradio) can start a thread

from grader.options import parse_options  # noqa: E402
from ui.config import AppConfig, check_login, read_users, roles  # noqa: E402

log = logging.getLogger("grader.app")


def gpu(fn):
    """On a ZeroGPU Space, `spaces.GPU` lends the function a GPU per call; elsewhere the function as is."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(fn)


@gpu
def assess(grader, paths, texts, options):
    return grader.assess_batch(paths, texts, options)


@gpu
def run_evidence(grader, audio, reference_text, speech):
    from grader.evidence import build_evidence

    return build_evidence(grader, audio, reference_text, speech)


def upload_folder() -> Path:
    """A private temp folder (mode 0700) for this run's uploads, locked while the app lives. Folders of earlier
    runs whose app died without removing them (SIGKILL, a crash, a power cut) are unlocked: they are removed here.
    The lock is an flock, released by the kernel when its process dies, so a reused pid cannot keep it."""
    for stale in Path(tempfile.gettempdir()).glob("grader-uploads-*"):
        try:
            with open(stale / ".lock") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(stale, ignore_errors=True)
                log.info("removed %s, left by an app that did not stop cleanly", stale)
        except OSError:  # locked by a running app, not ours to open, or without a lock (not made by this code)
            continue
    folder = Path(tempfile.mkdtemp(prefix="grader-uploads-"))
    lock = open(folder / ".lock-new", "w")  # held open (and locked) until the process ends
    fcntl.flock(lock, fcntl.LOCK_EX)
    os.rename(folder / ".lock-new", folder / ".lock")  # named .lock only once locked: no other start can take it
    atexit.register(lock.close)
    return folder


def port_taken(host: str | None, port: int | None) -> str | None:
    """Why the app cannot listen on the port asked for (None: it can, or none was asked for and Gradio looks for a
    free one): said in one line naming --port, before minutes go into loading the model."""
    port = port or int(os.environ.get("GRADIO_SERVER_PORT") or 0)
    if not port:
        return None
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a closing socket is no user
        try:
            probe.bind((host, port))
        except OSError as error:
            return (f"the app did not start: port {port} on {host} is not free ({error.strerror}); stop what uses "
                    "it, or choose another with --port N.")
    return None


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for chatty in ("alembic", "httpx"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    config = parse_options(AppConfig, argv)
    users = read_users(config)
    if busy := port_taken(config.host, config.port):
        log.error("%s", busy)
        return 2
    workdir = upload_folder()
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C: Gradio closes, atexit cleans up
    os.environ["GRADIO_TEMP_DIR"] = str(workdir)  # before gradio is imported: uploads land here

    from starlette.middleware import Middleware

    from grader.inference import Grader
    from storage import Database, StorageError
    from ui.app import CSS, build_app
    from ui.callbacks import Services
    from ui.login import LoginGuard

    grader, load_error = None, None
    try:
        if config.zero_shot:  # logs that its grades are uncalibrated; each grade and card says so too
            grader = Grader.zero_shot(config.zero_shot, config.zero_shot_scale, device=config.device,
                                      threads=config.threads, precision=config.precision)
        else:
            grader = Grader.load(config.checkpoint, config.device, config.threads, config.precision)
        log.info("checkpoint %s loaded (scale %s)", grader.checkpoint_id, grader.scale.name)
    except FileNotFoundError as error:
        load_error = f"{error} Nothing can be graded until one is available."
        log.error("no checkpoint: %s", load_error)
    try:
        db = Database.open(config.database_url, outbox=config.outbox_file)
    except StorageError as error:  # damaged, missing with overrides waiting for it, unreachable: say so, touch nothing
        log.error("the app did not start: %s.", error)
        return 2
    services = Services(config, grader, db, workdir=workdir, load_error=load_error, assess=assess,
                        run_evidence=run_evidence, roles=roles(config))
    demo = build_app(services, auth=bool(users))
    demo.queue(default_concurrency_limit=config.concurrency, max_size=64)
    guard = [Middleware(LoginGuard, session_s=config.session_hours * 3600)] if users else []
    try:
        demo.launch(server_name=config.host, server_port=config.port, share=config.share,
                    auth=check_login(users) if users else None, auth_message="Examiner login",
                    allowed_paths=[], blocked_paths=[str(p) for p in config.private_paths],
                    max_file_size=f"{config.max_upload_mb:g}mb", css=CSS, footer_links=["api", "gradio"],
                    app_kwargs={"middleware": guard}, state_session_capacity=config.max_sessions)
    except OSError as error:  # taken since the check; Gradio's own words would suggest launch(server_port=...)
        if "port" not in str(error):
            raise
        log.error("the app did not start: no free port (%s); choose one with --port N.", config.port or "7860-7959")
        return 2


if __name__ == "__main__":
    sys.exit(main())
