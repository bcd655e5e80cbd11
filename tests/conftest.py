"""Shared fixtures. Real speech comes from the 36 speechocean762 clips bundled in tests/data/speechocean762 (same
layout and columns as the corpus), so a fresh clone tests itself. The few tests that need the whole corpus (2,500
clips) find it beside the repo and skip with a clear reason where it is absent (a user's clone has no ../shared)."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SPEECHOCEAN = REPO.parent / "shared" / "data" / "speechocean762-train"
CLIPS = REPO / "tests" / "data" / "speechocean762"


@pytest.fixture(scope="session")
def speechocean_dir() -> Path:
    """The whole speechocean762 train split (2,500 clips), only for tests that need the corpus, not a few clips."""
    if not (SPEECHOCEAN / "labels.tsv").is_file():
        pytest.skip(f"needs the full speechocean762 corpus, not found at {SPEECHOCEAN} "
                    f"(a clone has only the 36 clips in tests/data/speechocean762)")
    return SPEECHOCEAN


@pytest.fixture(scope="session")
def speechocean_clips() -> Path:
    """36 real speechocean762 clips shipped with the tests (12 speakers, 3 each: 8 rated 8-10 for accuracy, 4 rated
    3-4), with their labels.tsv, words.tsv and raters.tsv rows: the corpus's layout, audio paths relative to it."""
    if not (CLIPS / "labels.tsv").is_file():
        pytest.fail(f"the bundled test clips are missing from {CLIPS}")
    return CLIPS


@pytest.fixture(scope="session")
def speech_clip(speechocean_clips) -> Path:
    """A real 2.6-s read-aloud clip: 'WE CALL IT BEAR'."""
    return speechocean_clips / "audio" / "000010011.flac"


POSTGRES = os.environ.get("GRADER_TEST_POSTGRES_URL")  # set by .ci/run, which starts a PostgreSQL server


@contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a new, empty database on the PostgreSQL server at $GRADER_TEST_POSTGRES_URL (its user needs
    CREATEDB), dropped afterwards; skips, saying why, where there is no server (a user's clone)."""
    if not POSTGRES:
        pytest.skip("no PostgreSQL server: set GRADER_TEST_POSTGRES_URL (.ci/run starts one and sets it)")
    import sqlalchemy as sa

    name = f"grader_{os.getpid()}_{time.monotonic_ns()}"
    admin = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request, tmp_path) -> Iterator[str]:
    """An empty database on each backend: a new SQLite file, and a new PostgreSQL database (postgres_database)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'grades.db'}"
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def tiny_whisper(tmp_path_factory) -> str:
    """A 2-layer, 32-wide random Whisper with the real tiny.en tokenizer and feature extractor."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

    from grader.backbones.weights import resolve_whisper

    folder = tmp_path_factory.mktemp("tiny-whisper")
    processor = WhisperProcessor.from_pretrained(resolve_whisper("tiny.en"))
    config = WhisperConfig(vocab_size=51864, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64)
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> str:
    """A 2-layer random Qwen2-Audio (audio tower and LLM) with a byte-level BPE tokenizer and the chat tokens."""
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, WhisperTokenizerFast

    from grader.backbones.weights import resolve_whisper

    folder = tmp_path_factory.mktemp("tiny-qwen2-audio")
    tokenizer = WhisperTokenizerFast.from_pretrained(resolve_whisper("tiny.en"))
    tokenizer.add_special_tokens({"additional_special_tokens": [
        "<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|audio_eos|>", "<|AUDIO|>"]})
    config = Qwen2AudioConfig(
        audio_config=dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64),
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"))
    torch.manual_seed(0)
    Qwen2AudioForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def small_manifest(speechocean_clips) -> Path:
    """36 real utterances from 12 speakers, 3 each: the bundled clips' labels.tsv, audio paths relative to it."""
    return speechocean_clips / "labels.tsv"


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_whisper, small_manifest, tmp_path_factory) -> Path:
    """A real checkpoint (total, accuracy, fluency, prosodic) trained for one epoch on a tiny random Whisper:
    fast to load and grade, for tests of everything around the model."""
    from grader.train import main as train_main

    out = tmp_path_factory.mktemp("checkpoint") / "tiny"
    train_main(["--manifest", str(small_manifest), "--model", tiny_whisper, "--dev-speakers", "3", "--epochs", "1",
                "--batch-size", "8", "--target", "total,accuracy,fluency,prosodic", "--cache-dir", "",
                "--out", str(out)])
    return out


@dataclass
class RunningApp:
    url: str
    db: Path
    process: subprocess.Popen
    folder: Path  # holds the data dir, the database, the log and the process's TMPDIR

    def log(self) -> str:
        return (self.folder / "app.log").read_text(errors="replace")[-3000:]


@contextmanager
def launch_app(checkpoint: Path, folder: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[RunningApp]:
    """`python app.py` on a free port with a fresh SQLite file, its own TMPDIR, and `args` appended; stopped with
    SIGTERM on exit (the test may have killed it already)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k != "GRADER_AUTH"}
    env = base | {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
                  "TMPDIR": str(folder / "tmp")} | (env or {})
    app = RunningApp(f"http://127.0.0.1:{port}/", folder / "grades.db", None, folder)  # type: ignore[arg-type]
    with open(folder / "app.log", "w") as log:
        app.process = subprocess.Popen(
            [sys.executable, str(REPO / "app.py"), "--checkpoint", str(checkpoint), "--db", str(app.db),
             "--data-dir", str(folder / "data"), "--port", str(port), "--host", "127.0.0.1", *args],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while True:
                if app.process.poll() is not None:
                    pytest.fail(f"app exited ({app.process.returncode}):\n{app.log()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"app did not start in 120 s:\n{app.log()}")
                try:
                    if httpx.get(app.url, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            yield app
        finally:
            if app.process.poll() is None:
                app.process.terminate()
                app.process.wait(timeout=30)
