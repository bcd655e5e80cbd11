"""Start the grader web app: `python app.py` (defaults), `python app.py --help` (options).

Uploads go to a private temp folder, removed at exit; the data folder (database, kept audio) is never served.
"""

import atexit
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from grader.options import parse_options
from storage.outbox import outbox_path
from ui.config import AppConfig, check_login, read_users

log = logging.getLogger("grader.app")


def gpu(fn):
    """On a ZeroGPU Space, `spaces.GPU` lends the function a GPU per call; elsewhere the function as is."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(fn)


@gpu
def run_model(grader, audios, prompts):
    return grader.grade_batch(audios, prompts)


@gpu
def run_evidence(grader, audio, reference_text):
    from grader.evidence import build_evidence

    return build_evidence(grader, audio, reference_text)


def private_paths(config: AppConfig) -> list[str]:
    """Never served, whatever a URL asks for: the data folder and the database file (with its outbox) wherever
    it is. Only Gradio's own upload cache is served anyway (allowed_paths is empty); this is the second lock."""
    paths = [Path(config.data_dir)]
    if "://" not in config.database_url or config.database_url.startswith("sqlite:///"):
        db = Path(config.database_url.removeprefix("sqlite:///"))
        paths += [db, outbox_path(db)]
    return [str(p.resolve()) for p in paths]


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for chatty in ("alembic", "httpx"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    config = parse_options(AppConfig, argv)
    users = read_users(config)
    workdir = Path(tempfile.mkdtemp(prefix="grader-uploads-"))  # mode 0700: private to this user
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop like Ctrl-C: Gradio closes, atexit cleans up
    os.environ["GRADIO_TEMP_DIR"] = str(workdir)  # before gradio is imported: uploads land here

    from grader.inference import Grader
    from storage import Database
    from ui.app import CSS, build_app
    from ui.callbacks import Services

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
    db = Database.open(config.database_url)
    services = Services(config, grader, db, workdir=workdir, load_error=load_error, run_model=run_model,
                        run_evidence=run_evidence)
    demo = build_app(services, auth=bool(users))
    demo.queue(default_concurrency_limit=config.concurrency, max_size=64)
    demo.launch(server_name=config.host, server_port=config.port, share=config.share,
                auth=check_login(users) if users else None, auth_message="Examiner login",
                allowed_paths=[], blocked_paths=private_paths(config),
                max_file_size=f"{config.max_upload_mb:g}mb", css=CSS, footer_links=["api", "gradio"])


if __name__ == "__main__":
    sys.exit(main())
