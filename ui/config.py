"""The app's settings: one dataclass, defaults here, every field a command-line flag (grader.options)."""

import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from grader.audio import AudioLimits
from grader.audio import GateConfig
from grader.inference import PRECISIONS
from storage.engine import sqlite_path
from storage.models import ROLES
from storage.outbox import outbox_path

RETENTION = ("discard", "keep")


@dataclass
class AppConfig:
    """Grade spoken English in the browser and log examiner overrides."""

    checkpoint: str | None = field(default=None, metadata={"help": "grader checkpoint folder; default: "
                                                                   "checkpoints/default"})
    zero_shot: str | None = field(default=None, metadata={
        "help": "no checkpoint: grade zero-shot with this instruction-tuned speech LLM (e.g. "
                "Qwen/Qwen2-Audio-7B-Instruct; needs a GPU and the hub or a local copy); uncalibrated"})
    zero_shot_scale: str = field(default="speechocean762", metadata={"help": "with --zero-shot: the scale to grade on"})
    db: str | None = field(default=None, metadata={"help": "SQLAlchemy URL or SQLite file; default: $DATABASE_URL, "
                                                           "else DATA_DIR/grades.db"})
    data_dir: str = field(default="data", metadata={"help": "private folder for the database (never served)"})
    outbox: str | None = field(default=None, metadata={"help": "file where overrides wait that the database cannot "
                                                               "take yet; default: DB.outbox.jsonl beside a SQLite "
                                                               "database. On another disk, a full disk still "
                                                               "queues them"})
    host: str | None = field(default=None, metadata={"help": "address to listen on; default: $GRADIO_SERVER_NAME "
                                                             "or 127.0.0.1"})
    port: int | None = field(default=None, metadata={"help": "port; default: $GRADIO_SERVER_PORT or 7860"})
    auth_file: str | None = field(default=None, metadata={"help": "file of user:password or user:password:role lines "
                                                                  "(role: examiner, the default; adjudicator; admin); "
                                                                  "turns login on (also $GRADER_AUTH='user:pw,"
                                                                  "user2:pw2:adjudicator')"})
    blind: bool = field(default=False, metadata={"help": "blind first marking: the model's score, distribution and "
                                                         "evidence reach an examiner's page only once their own mark "
                                                         "is saved"})
    share: bool = field(default=False, metadata={"help": "open a public gradio.live link"})
    retention: str = field(default="discard", metadata={"help": "uploaded audio: 'discard' keeps only its SHA-256 "
                                                                "and metadata; 'keep' also stores the file in "
                                                                "DATA_DIR/audio"})
    max_upload_mb: float = field(default=25.0, metadata={"help": "largest upload accepted"})
    max_seconds: float = field(default=120.0, metadata={"help": "longest response graded"})
    max_prompt_chars: int = field(default=2000, metadata={"help": "longest reference/prompt text accepted (the "
                                                                  "grader reads at most ~200 of its tokens)"})
    max_batch: int = field(default=500, metadata={"help": "most responses in one Batch run (files, zip members or "
                                                          "manifest rows)"})
    max_batch_mb: float = field(default=1024.0, metadata={"help": "most audio a Batch zip may unpack to, in all"})
    session_hours: float = field(default=12.0, metadata={"help": "how long a login lasts"})
    max_sessions: int = field(default=500, metadata={"help": "browser tabs and API sessions whose state is held in "
                                                            "memory; beyond this the least recently used lose it"})
    concurrency: int = field(default=1, metadata={"help": "model runs at once, Grade and Batch together (each holds "
                                                          "the model busy)"})
    device: str | None = field(default=None, metadata={"help": "cpu or cuda; default: cuda when available"})
    threads: int = field(default=0, metadata={"help": "CPU threads for the model; 0: torch's default"})
    precision: str = field(default="fp32", metadata={"help": "fp32, or bf16 for faster grading on GPUs and CPUs "
                                                            "with native bfloat16 (AVX-512 BF16/AMX; emulated and "
                                                            "slower elsewhere); scores move by a few hundredths"})

    def __post_init__(self):
        if self.retention not in RETENTION:
            raise ValueError(f"--retention must be one of {', '.join(RETENTION)}, not {self.retention!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")

    @property
    def database_url(self) -> str:
        """A SQLAlchemy URL or a SQLite file path (storage.Database.open takes both)."""
        return self.db or os.environ.get("DATABASE_URL") or str(Path(self.data_dir) / "grades.db")

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite file behind database_url; None for a server database."""
        url = self.database_url
        return sqlite_path(url if "://" in url else f"sqlite:///{Path(url).resolve()}")

    @property
    def outbox_file(self) -> Path | None:
        """--outbox, else beside a SQLite database; None for a server database without --outbox."""
        db = self.sqlite_file
        return Path(self.outbox) if self.outbox else db and outbox_path(db)

    @property
    def private_paths(self) -> list[Path]:
        """What the app never serves and never reads as an upload: the data folder, the SQLite file with its WAL,
        shared memory and journal, and the outbox with its lock and rejected lines, wherever they are."""
        db = self.sqlite_file
        paths = [Path(self.data_dir)]
        if db:
            paths += [db.with_name(db.name + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
        if outbox := self.outbox_file:
            paths += [outbox.with_name(outbox.name + suffix) for suffix in ("", ".lock", ".rejected", ".tmp")]
        return [p.resolve() for p in paths]

    @property
    def audio_limits(self) -> AudioLimits:
        return AudioLimits(max_bytes=int(self.max_upload_mb * 2**20), max_seconds=self.max_seconds)

    @property
    def gate(self) -> GateConfig:
        return GateConfig(max_seconds=self.max_seconds)


def read_accounts(config: AppConfig) -> dict[str, tuple[str, str]]:
    """{user: (password, role)} from --auth-file (one `user:password` or `user:password:role` a line, # comments)
    and $GRADER_AUTH ('user:pw,user2:pw2:adjudicator'); empty: no login. The role (storage.ROLES: examiner, the
    default; adjudicator; admin) follows the last colon once there are two; a password holding a colon then needs
    its role written out (`user:pa:ss:examiner`)."""
    entries = os.environ.get("GRADER_AUTH", "").split(",")
    if config.auth_file:
        entries += Path(config.auth_file).read_text().splitlines()
    accounts = {}
    for entry in (e.strip() for e in entries):
        if entry and not entry.startswith("#"):
            user, sep, password = entry.partition(":")
            role = "examiner"
            if password.count(":"):
                password, _, role = password.rpartition(":")
                if role not in ROLES:
                    raise ValueError(f"auth entry for {user.strip()!r}: unknown role {role!r} (roles: "
                                     f"{', '.join(ROLES)}; a password with ':' must end with its role, e.g. "
                                     "user:pa:ss:examiner)")
            if not (sep and user.strip() and password):
                raise ValueError(f"auth entries must be user:password or user:password:role, got {user.strip()!r}:…")
            accounts[user.strip()] = (password, role)
    return accounts


def read_users(config: AppConfig) -> dict[str, str]:
    """{user: password} (read_accounts), for check_login."""
    return {user: password for user, (password, _) in read_accounts(config).items()}


def roles(config: AppConfig) -> dict[str, str]:
    """{user: role} (read_accounts); without login everybody marks as an examiner."""
    return {user: role for user, (_, role) in read_accounts(config).items()}


def check_login(users: dict[str, str]):
    """Gradio's auth callable: constant-time comparison, so timing does not reveal a password."""
    def check(user: str, password: str) -> bool:
        return user in users and hmac.compare_digest(users[user].encode(), password.encode())
    return check
