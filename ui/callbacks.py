"""What the app's events do, as plain functions of their inputs: testable without a browser or a server.

Each function takes the `Services` (settings, grader, database) first; ui/app.py binds them to components.
User mistakes raise `gr.Error`, which Gradio shows as a message and tests can catch.
"""

import csv
import functools
import hashlib
import html
import inspect
import logging
import math
import os
import shutil
import tempfile
import time
import traceback
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from grader.audio import SAMPLE_RATE, GateResult, SpeechSegment
from grader.data import ManifestError, read_manifest
from grader.evidence import build_evidence
from grader.inference import AssessOptions, Assessment, Grader, Prediction
from grader.review import Review
from grader.scale import ScoreScale, get_scale
from storage import AGREEMENTS, Database, StorageError
from storage import agreement as agreement_tables
from storage.marking import STAFF
from storage.models import MAX_CANDIDATE, MAX_FILE_NAME, MAX_PART, MAX_SESSION_NAME
from storage.export import ASPECT_COLUMNS, spreadsheet_safe, word_columns

from .charts import distribution_figure, drift_figure, timeline_figure
from .config import AppConfig
from .cards import evidence_html, result_card

AUDIO_TYPES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".webm", ".aac", ".mp4")
REASON_CODES = ("pronunciation", "fluency", "prosody", "grammar/vocabulary", "task/content", "audio quality",
                "speaker or accent", "other")
log = logging.getLogger("grader.app")
NO_CHECKPOINT = ("No grader checkpoint is available, so nothing can be graded. Train one with "
                 "`python -m grader.train` (see the README) or start the app with `--checkpoint DIR`.")
MAX_COMMENT = 2000  # characters in an examiner's comment
ZIP_RATIO = 100  # audio does not deflate 100:1; a zip bomb does (about 1000:1)
SCRATCH_AGE_S = 3600  # unpacked zips and CSV downloads older than this are swept from the temp folder
EVIDENCE_TTL_S = 3600  # a session's evidence (with its audio) is held this long for word playback


@dataclass
class Services:
    config: AppConfig
    grader: Grader | None  # None: no checkpoint; the app says so and grades nothing
    db: Database
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="grader-")))
    load_error: str | None = None
    roles: dict[str, str] = field(default_factory=dict)  # login -> examiner, adjudicator or admin (the auth file)
    # The front door (Grader.assess_batch) and the evidence step, replaceable by app.py (a GPU lent per call).
    assess: Callable[[Grader, list[Path], list[str | None], AssessOptions], list[Assessment]] = (
        lambda grader, paths, texts, options: grader.assess_batch(paths, texts, options))
    run_evidence: Callable[[Grader, np.ndarray, str | None, list[SpeechSegment]], dict] = build_evidence


def event(fn: Callable) -> Callable:
    """Wrap an event function so every failure reaches the examiner as a message, never `{"error": null}`: a
    gr.Error as raised, a storage failure with its one-line reason, anything else as a fixed sentence. Messages are
    HTML-escaped (Gradio renders them as HTML: a file name is not markup), and Gradio prints no traceback, which
    would echo client text into the log; the log gets the event, the exception's type and its frames only."""
    def refused(error: Exception) -> gr.Error:
        if isinstance(error, gr.Error):
            message, title = error.message, error.title
        elif isinstance(error, StorageError):
            log.warning("%s: %s", fn.__name__, type(error).__name__)
            message, title = f"{str(error)[:1].upper()}{str(error)[1:]}.", "Not saved"
        else:
            log.error("%s failed: %s\n%s", fn.__name__, type(error).__name__,
                      "".join(traceback.format_tb(error.__traceback__)).rstrip())
            message, title = (f"Something went wrong on the server ({type(error).__name__}); it is in the server's "
                              "log. Try again, and tell the administrator if it happens again."), "Error"
        return gr.Error(html.escape(str(message), quote=False), title=html.escape(str(title), quote=False),
                        print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def run_generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as error:
                raise refused(error) from None
        return run_generator

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            raise refused(error) from None
    return run


def check_upload(services: Services, path: str | Path) -> Path:
    """An uploaded file the app may read: never the database, its WAL or journal, the outbox or anything in the
    data folder, even through a link (compared by inode, with stat, which leaves SQLite's locks alone)."""
    path = Path(path)
    try:
        status = path.stat()
    except OSError:
        return path  # absent: the gate says "not found"
    for private in services.config.private_paths:
        try:
            inside = private.is_dir() and path.resolve().is_relative_to(private)
            if inside or os.path.samestat(status, private.stat()):
                raise gr.Error("This file cannot be graded: it is not an upload.", title="Refused")
        except OSError:
            continue
    return path


@dataclass
class Graded:
    """One response through the grader's front door (`Assessment`), as stored."""
    response_id: int
    grade_id: int
    assessment: Assessment

    @property
    def gate(self) -> GateResult:
        return self.assessment.gate

    @property
    def prediction(self) -> Prediction | None:
        return self.assessment.prediction

    @property
    def review(self) -> list[Review]:
        return self.assessment.review


# ---- grading ----------------------------------------------------------------------------------------------

def grade_file(services: Services, path: str | Path, candidate: str = "", task_part: str = "", prompt: str = "",
               progress: Callable = lambda fraction, desc: None) -> Graded:
    """Grade and store one file (the Grade tab). A refused file is stored as non-scorable with the gate's reason."""
    grader = require_grader(services)
    check_text_fields(services.config, candidate, task_part, prompt)
    progress(0.3, desc="Grading")
    assessment = services.assess(grader, [Path(path)], [prompt], assess_options(services.config))[0]
    progress(0.9, desc="Saving")
    return store_grade(services, Path(path), candidate, task_part, prompt, assessment)


def assess_options(config: AppConfig) -> AssessOptions:
    return AssessOptions(limits=config.audio_limits, gate=config.gate)


def store_grade(services: Services, path: Path, candidate: str, task_part: str, prompt: str,
                assessment: Assessment, session_id: int | None = None) -> Graded:
    """The response row and its grade row; a refused recording is stored as non-scorable with the gate's reason."""
    grader, gate, prediction = services.grader, assessment.gate, assessment.prediction
    response_id = store_response(services, path, candidate, task_part, prompt, gate, session_id)
    measures = gate.measures | {"gate_code": gate.code}
    if prediction is None:
        grade_id = services.db.add_grade(response_id, checkpoint_id=grader.checkpoint_id, scale_name=grader.scale.name,
                                         scores={}, scorable=False, latency_s=0.0, gate_reason=gate.reason,
                                         gate_measures=measures)
        log.info("grade %d (response %d): not scorable, %s", grade_id, response_id, gate.code)
    else:
        grade_id = services.db.add_grade(response_id, checkpoint_id=prediction.checkpoint,
                                         scale_name=prediction.scale.name,
                                         scores={a: asdict(x) for a, x in prediction.scores.items()}, scorable=True,
                                         latency_s=prediction.latency_s, headline=prediction.headline,
                                         gate_measures=measures, review=stored_review(assessment))
        log.info("grade %d (response %d): graded in %.2f s", grade_id, response_id, prediction.latency_s)
    return Graded(response_id, grade_id, assessment)


def stored_review(assessment: Assessment) -> dict:
    """What the grade row keeps of the grader's review: its reasons and the reference check, as the API gives them."""
    return {"reasons": [r.to_dict() for r in assessment.review],
            "reference": assessment.reference.to_dict() if assessment.reference else None}


def check_text_fields(config: AppConfig, candidate: str, task_part: str, prompt: str, where: str = "") -> None:
    """Refuse, before anything is decoded or stored, text no examiner means to send (a pasted file, say)."""
    limits = (("reference text", prompt, config.max_prompt_chars), ("candidate id", candidate, MAX_CANDIDATE),
              ("task part", task_part, MAX_PART))  # the columns' widths (storage.models owns them)
    for name, text, limit in limits:
        if len(text) > limit:
            raise gr.Error(f"{where}The {name} is {len(text):,} characters long; at most {limit:,} are accepted. "
                           "Paste only the sentence or task the candidate was given.", title="Text too long")


def require_grader(services: Services) -> Grader:
    if services.grader is None:
        raise gr.Error(services.load_error or NO_CHECKPOINT, title="No checkpoint")
    return services.grader


def store_response(services: Services, path: Path, candidate: str, task_part: str, prompt: str,
                   gate: GateResult, session_id: int | None = None) -> int:
    """The response row: the audio's SHA-256, the uploaded file's name (Gradio keeps it; a zip member's is its own)
    and metadata always, in its exam session if any; the file itself only under retention=keep."""
    digest = sha256(check_upload(services, path)) if path.is_file() else None
    kept = None
    if services.config.retention == "keep" and digest:
        folder = Path(services.config.data_dir) / "audio"
        folder.mkdir(parents=True, exist_ok=True)
        kept = folder / f"{digest}{path.suffix.lower()}"
        shutil.copyfile(path, kept)
    return services.db.add_response(audio_sha256=digest or "", duration_s=gate.measures.get("duration_s", 0.0),
                                    part=task_part.strip() or None, candidate_id=candidate.strip() or None,
                                    prompt_text=prompt.strip() or None, audio_path=str(kept) if kept else None,
                                    session_id=session_id, file_name=_file_name(path.name, MAX_FILE_NAME))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def result_json(graded: Graded) -> dict:
    """The machine-readable result (what scripts get from the `grade` API): `Assessment.to_dict`, as
    `grader.predict` prints it, with the stored ids."""
    return {"response_id": graded.response_id, "grade_id": graded.grade_id} | graded.assessment.to_dict()


def blind_card(graded: Graded) -> str:
    """The Grade tab's card under blind marking: that the response is stored and where to mark it, no score."""
    if graded.prediction is None:  # a refused recording has no score to withhold
        return result_card(graded)
    return (f'<div class="card withheld"><h3>Graded: #{graded.grade_id}</h3><p>Blind marking: enter your mark in '
            "the Review tab (it opens there); the model's score, distribution and evidence appear once your mark is "
            "saved.</p></div>")


def blind_json(graded: Graded) -> dict:
    """What scripts get from `grade` under blind marking: the ids and whether it was scored, no score."""
    a = graded.assessment
    return {"response_id": graded.response_id, "grade_id": graded.grade_id, "scorable": a.scorable,
            "gate_code": a.gate.code, "gate_reason": a.gate.reason}


def figure(graded: Graded) -> go.Figure | None:
    p = graded.prediction
    return distribution_figure(p.scores[p.headline], p.scale, p.headline) if p else None


# ---- evidence ---------------------------------------------------------------------------------------------

@dataclass
class Evidence:
    """A graded response's evidence and the audio it was computed from (to play words back)."""
    grade_id: int
    evidence: dict
    audio: np.ndarray


def evidence_for(services: Services, graded: Graded | None) -> Evidence | None:
    """Compute and store the evidence of the grade just made in this session, from the audio the grade decoded and
    the speech its VAD found (nothing is read, hashed or heard twice), and its reference text. None for a response
    that was not scored. The score is never touched."""
    grader = require_grader(services)
    if graded is None:
        raise gr.Error("Grade a response first: there is no evidence without a grade.")
    a = graded.assessment
    if not a.scorable:
        return None
    evidence = services.run_evidence(grader, a.audio, a.reference_text, a.speech)
    evidence["word_scores"] = word_scores(a.prediction)
    try:
        services.db.set_evidence(graded.grade_id, evidence)
    except StorageError as error:
        log.warning("evidence for grade %d not stored: %s", graded.grade_id, error)
        raise gr.Error(f"The evidence was computed but not saved: {error}", title="Not saved") from error
    log.info("evidence for grade %d in %.2f s", graded.grade_id, evidence["latency_s"])
    return Evidence(graded.grade_id, evidence, a.audio)


def word_scores(prediction: Prediction) -> dict:
    """The grade's word scores as the evidence panel shows them beside the phone evidence, and as they are stored
    with the evidence (History's CSV exports them): each reference word's {"word", "accuracy", "total"}, or
    none and the note saying why (no reference text; a checkpoint without word heads)."""
    return {"checkpoint": prediction.checkpoint, "words": prediction.words, "note": prediction.words_note}


def evidence_outputs(found: Evidence | None) -> tuple:
    """The panel's HTML, the timeline, the word picker's choices and the JSON, for ui/app.py."""
    if found is None:
        return evidence_html(None), None, gr.Dropdown(choices=[], value=None), None
    words = found.evidence["transcript"]["words"]
    choices = [(f'{i + 1}. {w["text"]} ({w["start"]:.2f}–{w["end"]:.2f} s)' + (" ⚠" if w["low_confidence"] else ""), i)
               for i, w in enumerate(words)]
    return (evidence_html(found.evidence), timeline_figure(found.evidence, found.audio),
            gr.Dropdown(choices=choices, value=None), found.evidence)


def word_audio(found: Evidence | None, index: int | None, margin_s: float = 0.05) -> tuple[int, np.ndarray] | None:
    """One transcript word's audio (with `margin_s` either side, so its edges are heard), to play back."""
    if index is None:
        return None
    if found is None:  # no evidence yet, or the session's copy expired (EVIDENCE_TTL_S)
        raise gr.Error("The evidence of this grade is no longer held for playback: grade the recording again.")
    words = found.evidence["transcript"]["words"]
    number = _real(index)
    if number is None or number != int(number) or not 0 <= number < len(words):
        raise gr.Error(f"Pick a word of the transcript: a number from 0 to {len(words) - 1}.")
    w = words[int(number)]
    start = max(int((w["start"] - margin_s) * SAMPLE_RATE), 0)
    end = min(int((w["end"] + margin_s) * SAMPLE_RATE), len(found.audio))
    return SAMPLE_RATE, (np.clip(found.audio[start:end], -1, 1) * 32767).astype(np.int16)


# ---- overrides --------------------------------------------------------------------------------------------

def examiner_id(username: str | None, typed_name: str) -> str:
    """Who is overriding: the login when auth is on (a client cannot choose it), else the typed name."""
    if username:
        return username
    name = str(typed_name or "").strip()
    if not name:
        raise gr.Error("Enter your name as examiner before saving an override.")
    return name


def signed_in_html(username: str | None, role: str = "examiner") -> str:
    """Who this page belongs to, on every page under login (the login is also who every mark is by), and in which
    role (from the auth file)."""
    return (f'<p class="signed-in">Logged in as <strong>{html.escape(username or "nobody")}</strong> '
            f'({html.escape(role)})</p>')


def save_override(services: Services, grade_id: int | None, final_score: float | None, agreement: str | None,
                  reason_code: str | None, comment: str, examiner: str, role: str = "examiner") -> str:
    """Store an examiner's decision on a grade; a locked or read-only database keeps it in the outbox for retry,
    and the message says so. The values may come raw from an API client (the event skips Gradio's preprocessing,
    whose failures have no message), so each is checked here."""
    grade_id = whole_number(grade_id, "Grade a response first: there is nothing to override yet.")
    final_score = check_score(services, grade_id, final_score)
    if agreement not in AGREEMENTS:
        raise gr.Error("Choose agree, partly or disagree.")
    check_reason_and_comment(reason_code, comment)
    try:
        receipt = services.db.add_override(grade_id, examiner=examiner, final_score=final_score,
                                           agreement=agreement, reason_code=reason_code or None,
                                           comment=(comment or "").strip() or None, role=role,
                                           seen=["audio", "model"])
    except (ValueError, TypeError, StorageError) as error:
        raise gr.Error(f"The override was not saved: {error}", title="Not saved") from error
    log.info("override %s on grade %d: %s", receipt.uuid, grade_id, "queued" if receipt.queued else "stored")
    if receipt.queued:
        return (f"⚠ Not written to the database yet: {receipt.error}. It is kept in the outbox "
                f"({services.db.outbox.path}) and is written to the database as soon as it accepts writes again; "
                "no need to submit it again.")
    return f"✓ Override saved (grade #{grade_id}): final score {final_score:g}, {agreement}, by {examiner}."


def check_score(services: Services, grade_id: int, value) -> float:
    """An examiner's score for a stored grade: a number on the grade's own scale, one of its steps (6.5 is no score
    on a 0-10 scale of whole points), and only for a response the model scored (a refused recording is recorded
    again, not marked)."""
    score = _real(value)
    if score is None:
        raise gr.Error("Enter your final score (a number).")
    stored = services.db.grade(grade_id)
    if stored is None:
        raise gr.Error(f"There is no grade #{grade_id}.")
    if not stored["scorable"]:
        raise gr.Error(f"Grade #{grade_id} was not scored ({stored['gate_reason']}), so there is no score to mark: "
                       "record the answer again.", title="Not scored")
    try:
        scale = get_scale(stored["scale_name"])
    except ValueError:
        scale = _scale(services)
    if scale:
        if not scale.min <= score <= scale.max:
            raise gr.Error(f"The final score must lie between {scale.min:g} and {scale.max:g}.")
        if not math.isclose((score - scale.min) / scale.step, round((score - scale.min) / scale.step), abs_tol=1e-6):
            raise gr.Error(f"{score:g} is not a score on the {scale.name} scale: it goes from {scale.min:g} to "
                           f"{scale.max:g} in steps of {scale.step:g}.")
    return score


def check_reason_and_comment(reason_code, comment) -> None:
    """A mark's reason (one of REASON_CODES, or none) and comment (text, at most MAX_COMMENT characters), as raw
    API values may send them: the Grade tab's override and the Review tab's mark check them alike."""
    if reason_code not in (None, "", *REASON_CODES):
        raise gr.Error(f"Choose a reason from the list ({', '.join(REASON_CODES)}), or none.")
    if not isinstance(comment, str | None):
        raise gr.Error("The comment must be text.")
    if len(comment or "") > MAX_COMMENT:
        raise gr.Error(f"The comment is {len(comment):,} characters long; at most {MAX_COMMENT:,} are accepted.",
                       title="Text too long")


def whole_number(value, missing: str) -> int:
    """A grade id as a client may send it (1, 1.0, "1"): a positive whole number SQLite can hold, else a message."""
    if value in (None, "", 0):
        raise gr.Error(missing)
    number = _real(value)
    if number is None or number != int(number) or not 0 < number < 2**63:
        raise gr.Error("The grade # must be the whole number of a graded response.")
    return int(number)


def _real(value) -> float | None:
    """A finite number from a number or numeric text; None for nothing, NaN, infinity or anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


# ---- history and agreement --------------------------------------------------------------------------------

def download_path(services: Services, name: str) -> Path:
    """A fresh folder per download in the private temp folder, so two examiners exporting at once never
    overwrite (or receive) each other's file, and the file keeps a readable name."""
    sweep(services)
    return Path(tempfile.mkdtemp(dir=services.workdir, prefix="download-")) / name


def write_csv(services: Services, name: str, header: list[str], rows: list[list]) -> str:
    """A CSV in the private temp folder (Gradio serves it from there for download; never from the data dir),
    every cell spreadsheet-safe."""
    path = download_path(services, name)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([spreadsheet_safe(v) for v in row] for row in rows)
    return str(path)


def sweep(services: Services, max_age_s: float = SCRATCH_AGE_S) -> None:
    """Remove downloads and unpacked zips older than `max_age_s` from the temp folder (Gradio serves a copy of a
    download from its own cache, which it sweeps itself)."""
    cutoff = time.time() - max_age_s
    for folder in services.workdir.glob("*"):
        if folder.name.startswith(("download-", "zip-")) and folder.is_dir() and folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)

# Few enough to fit 1280 px without scrolling sideways; the CSV export has every stored column.
HISTORY_COLUMNS = ["graded (UTC)", "grade", "candidate (or file)", "task part", "status", "model score", "CEFR",
                   "final score", "examiner", "agreement", "words/min", "transcript"]


def session_id(value: int | str | None) -> int | None:
    """A Session filter's value as a session id (None, 0 or empty: every session). A value that is no id (a script's,
    or text typed into the filter) is refused with a message; an id no session has simply matches nothing."""
    if value in (None, "", 0):
        return None
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        return int(value) or None
    raise gr.Error("Choose a session from the list.", title="No such session")


def history_filters(candidate: str = "", task_part: str = "", examiner: str = "",
                    session: int | str | None = None) -> dict:
    """Exact-match filters for storage's history(); an empty field filters nothing."""
    filters: dict = {k: v.strip() for k, v in (("candidate", candidate), ("part", task_part), ("examiner", examiner))
                     if v and v.strip()}
    return filters | ({"session_id": sid} if (sid := session_id(session)) else {})


def model_shown(services: Services, role: str) -> bool:
    """Whether lists of many responses (History, Batch, their CSVs, Agreement's pairs) may show the model's scores:
    always, except under blind marking to examiners, who see a response's model result once they have marked it."""
    return not services.config.blind or role in STAFF


def history_rows(services: Services, candidate: str = "", task_part: str = "", examiner: str = "",
                 session: int | None = None, role: str = "admin", viewer: str | None = None) -> list[list]:
    """Graded responses, newest first, each with its final mark and status (storage.marking) and the latest
    marker. While a mark is still awaited, an examiner (`viewer`, in `role`) sees only their own: a second marker
    never learns the first mark here. The model's scores as model_shown allows."""
    rows, shown = [], model_shown(services, role)
    history = services.db.history(**history_filters(candidate, task_part, examiner, session))
    finals = services.db.final_marks([r["grade_id"] for r in history if r["override_id"]])
    for r in history:
        if not shown:
            r |= {"soft": None}
        final = finals.get(r["grade_id"], {"score": None, "status": "graded"})  # no mark yet: graded
        awaited = final["status"].startswith("awaiting")
        if awaited and role not in STAFF and r["examiner"] != viewer:
            r |= {"examiner": None, "agreement": None}
            final = final | {"score": None}
        status = final["status"] if r["scorable"] else f"not scored: {r['gate_reason']}"
        who = r["candidate_id"] or r["file_name"] or ""  # batch files without candidate ids differ by name
        rows.append([_when(r["graded_at"]), r["grade_id"], who, r["part"] or "", status,
                     _round(r["soft"], 1), _cefr(r["scale_name"], r["soft"]), _round(final["score"], 1),
                     r["examiner"] or "", r["agreement"] or "", _round(r["speech_rate_wpm"], 1),
                     r["transcript"] or ""])
    return rows


def export_history(services: Services, candidate: str = "", task_part: str = "", examiner: str = "",
                   session: int | None = None, role: str = "admin") -> str:
    """Every matching row with all of storage's columns (hashes, checkpoint, latency...), not only those shown."""
    if not model_shown(services, role):
        raise gr.Error("Under blind marking the export, which holds the model's scores, is for adjudicators and "
                       "admins.", title="Not for this role")
    path = download_path(services, "history.csv")
    services.db.export_history_csv(path, **history_filters(candidate, task_part, examiner, session))
    return str(path)


@dataclass
class AgreementReport:
    """The Agreement tab's contents: each storage.agreement table as HTML, the drift plot, and a CSV per table."""
    summary: str
    tables: dict[str, str]  # title -> HTML
    drift: go.Figure
    csvs: list[str]


AGREEMENT_TABLES = {"Examiners against the model": "vs-model", "Examiners against each other": "vs-examiners",
                    "How examiners mark (distribution)": "distributions", "Drift over time": "drift"}


# Which responses the Agreement tab compares, by the grader's reference check (grader.reference).
REFERENCE_FILTERS = {"all": "All marked responses",
                     "matching": "Only answers that read their reference text (or had none)",
                     "mismatch": "Only answers flagged as not reading their reference text"}


def by_reference(grades: list[dict], which: str) -> list[dict]:
    """The marked grades the reference filter keeps; grades stored before review reasons were recorded count as
    matching (nothing was flagged on them)."""
    if which not in REFERENCE_FILTERS:
        raise gr.Error(f"Choose which responses: {', '.join(REFERENCE_FILTERS)}.")
    if which == "all":
        return grades
    return [g for g in grades if ("reference_mismatch" in (g["review_codes"] or ())) == (which == "mismatch")]


def agreement(services: Services, head: str = "regression", session: int | None = None,
              independent: bool = False, reference: str = "all") -> AgreementReport:
    """storage.agreement's tables over the marked responses (of one session, if given): each examiner against the
    model's `head` score (`independent`: only marks entered before the model was shown), examiners against each
    other, their mark distributions and weekly drift; plain headers, the metric's name on hover. `reference`: a
    REFERENCE_FILTERS key (all, matching, mismatch)."""
    scale = _scale(services)
    if scale is None:
        raise gr.Error(services.load_error or NO_CHECKPOINT, title="No checkpoint")
    if head not in agreement_tables.HEADS:
        raise gr.Error(f"Choose the model's score: {', '.join(agreement_tables.HEADS)}.")
    grades = by_reference(services.db.marked(scale.name, session_id=session_id(session)), reference)
    tables = dict(zip(AGREEMENT_TABLES, (agreement_tables.examiners_vs_model(grades, scale, head, independent),
                                         agreement_tables.examiners_vs_examiners(grades, scale),
                                         agreement_tables.distributions(grades, scale),
                                         agreement_tables.drift(grades, scale, head))))
    csvs = []
    for title, table in tables.items():
        path = download_path(services, f"agreement-{AGREEMENT_TABLES[title]}.csv")
        table.write_csv(path)
        csvs.append(str(path))
    marks = sum(len(g["marks"]) for g in grades)
    summary = (f"**{len(grades)}** marked responses, **{marks}** marks by "
               f"{len({m['examiner'] for g in grades for m in g['marks']})} examiner(s), on the {scale.name} scale."
               if grades else "No marks yet: nothing to compare.")
    if any(row[2] == "yes" for row in tables["Examiners against the model"].rows):
        summary += (f" **Fewer than {agreement_tables.MIN_N} responses** in a row marked “too few”: its figures "
                    "say little about the examiner (a correlation from 2 responses is always ±1).")
    return AgreementReport(summary, {t: agreement_html(table) for t, table in tables.items()},
                           drift_figure(tables["Drift over time"].rows), csvs)


def agreement_html(table: "agreement_tables.Table") -> str:
    """A table with plain headers, the metric's name and meaning on hover, and rows too small to judge greyed."""
    small = next((i for i, (_, metric, _) in enumerate(table.columns) if metric.startswith("n <")), None)
    head = "".join(f'<th title="{html.escape(f"{metric}: {help_}")}">{html.escape(header)}</th>'
                   for header, metric, help_ in table.columns)
    body = "".join(
        f'<tr{" class=too-small" if small is not None and row[small] == "yes" else ""}>'
        + "".join(f"<td>{'–' if v is None else html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in table.rows)
    return (f'<div class="agreement"><p class="meta">{html.escape(table.note)}</p>'
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


# ---- batch ------------------------------------------------------------------------------------------------

BATCH_COLUMNS = ["file", "candidate", "response", "grade", "scorable", "reason"]


def batch_header(aspects: list[str]) -> list[str]:
    """The Batch table's and CSV's columns for a grader's aspects (shown before anything is graded, too)."""
    return (BATCH_COLUMNS + [f"{a}_{h}" for a in aspects for h in ASPECT_COLUMNS] + ["cefr", "review"]
            + list(word_columns([])))


Item = tuple[Path, str, str, str]  # audio, candidate, task part, prompt


def batch_session(services: Services, name: str, share_percent: float | None) -> int | None:
    """The exam session a batch is stored in: the one of this name, or a new one double-marking `share_percent`
    of its responses (an existing session keeps its share). No name: no session."""
    name = (name or "").strip()
    if not name:
        return None
    if len(name) > MAX_SESSION_NAME:
        raise gr.Error(f"A session name has at most {MAX_SESSION_NAME} characters.", title="Text too long")
    share = _real(share_percent) if share_percent not in (None, "") else 0.0
    if share is None or not 0 <= share <= 100:
        raise gr.Error("The share to mark twice is a percentage from 0 to 100.")
    for existing in services.db.sessions():
        if existing["name"] == name:
            return existing["id"]
    try:
        return services.db.add_session(name, double_marking=share / 100)
    except (ValueError, TypeError) as error:
        raise gr.Error(f"The session was not created: {error}.") from error


@contextmanager
def batch_folder(services: Services) -> Iterator[Path]:
    """A private folder for one batch's unpacked zips, removed when the batch ends however it ends (done, refused,
    failed or cancelled). One left by a crash is swept after an hour, or with the whole temp folder at the next
    start (app.py)."""
    sweep(services)
    folder = Path(tempfile.mkdtemp(dir=services.workdir, prefix="zip-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def batch_inputs(services: Services, paths: list[str], manifest: str | None, into: Path | None = None) -> list[Item]:
    """(audio path, candidate, task part, prompt) for every audio file uploaded or inside uploaded zips (unpacked
    into `into`, by default a new folder in the temp folder); with a manifest (grader.data.read_manifest's format),
    one item per row, its audio matched by file name among the uploaded files only: a manifest never reaches a
    file on the server. A batch over --max-batch responses is refused before anything is unpacked or graded."""
    into = into or Path(tempfile.mkdtemp(dir=services.workdir, prefix="zip-"))
    limit = services.config.max_batch
    rows = _manifest_rows(manifest) if manifest else None
    if rows is not None and len(rows) > limit:
        raise _too_many(len(rows), limit)
    files: list[Path] = []
    for p in map(Path, paths or []):
        check_upload(services, p)
        if p.suffix.lower() == ".zip":
            files += _unzip(services, p, into, room=limit - len(files))
        elif p.suffix.lower() in AUDIO_TYPES:
            files.append(p)
    if rows is None:
        if len(files) > limit:
            raise _too_many(len(files), limit)
        return [(f, "", "", "") for f in files]
    by_name: dict[str, list[Path]] = {}
    for f in files:
        by_name.setdefault(f.name, []).append(f)
    items = []
    for r in rows:
        name = _file_name(r.audio.name or "unnamed")  # as an overlong zip member's was shortened on unpacking
        found = by_name.get(name, [])
        if len(found) > 1:
            raise gr.Error(f"{len(found)} uploaded files are named {name}: the manifest matches files by name, so "
                           "give them different names.", title="Manifest not matched")
        missing = services.workdir / "not-uploaded" / name  # no such file: the gate says "not found"
        items.append((found[0] if found else missing, r.speaker or "", r.part or "", r.text or ""))
    return items


def _manifest_rows(manifest: str):
    try:
        return read_manifest(manifest, check_audio=False, resolve=False)
    except ManifestError as error:
        raise gr.Error(str(error), title="Manifest not read") from error


def _too_many(count: int, limit: int) -> gr.Error:
    return gr.Error(f"This batch holds {count:,} responses; at most {limit:,} are graded in one run (--max-batch). "
                    "Split it into smaller batches.", title="Batch too large")


def _unzip(services: Services, archive: Path, into: Path, room: int) -> list[Path]:
    """The audio members of an uploaded zip, each unpacked into its own folder under `into` with its own name (the
    manifest matches by name; no path from the archive is used). All is checked from the zip's directory before a
    byte is unpacked: the number of members, each one's size and their total, the compression ratio (a zip bomb's
    is about 1000:1, audio's near 1:1), and the free temp space."""
    config = services.config
    try:
        z = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise gr.Error(f"{archive.name} is not a zip archive that can be read.", title="Zip not read") from error
    with z:
        members = z.infolist()
        audio = [m for m in members if not m.is_dir() and Path(m.filename).suffix.lower() in AUDIO_TYPES
                 and not Path(m.filename).name.startswith(".")]
        total, packed = sum(m.file_size for m in audio), sum(m.compress_size for m in audio)
        free = shutil.disk_usage(into).free
        refusal = next((message for wrong, message in (
            (len(audio) > room or len(members) > 10 * config.max_batch,
             f"holds {len(audio):,} audio files ({len(members):,} entries in all); at most {config.max_batch:,} are "
             "graded in one run (--max-batch)"),
            (any(m.file_size > config.audio_limits.max_bytes for m in audio),
             f"holds a file larger than the upload limit ({config.max_upload_mb:g} MB)"),
            (total > config.max_batch_mb * 2**20,
             f"unpacks to {total / 2**20:,.0f} MB of audio; at most {config.max_batch_mb:g} MB are unpacked "
             "(--max-batch-mb)"),
            (total > ZIP_RATIO * max(packed, 1),
             f"unpacks to {total / max(packed, 1):,.0f} times its packed size, as a zip bomb does (audio hardly "
             "compresses)"),
            (total + config.audio_limits.max_bytes > free,
             f"unpacks to {total / 2**20:,.0f} MB, but the server's temporary disk has {free / 2**20:,.0f} MB "
             "free"),
        ) if wrong), None)
        if refusal:
            raise gr.Error(f"{archive.name} {refusal}. Nothing was unpacked or graded.", title="Zip refused")
        files = []
        try:
            for member in audio:
                target = Path(tempfile.mkdtemp(dir=into)) / _file_name(Path(member.filename).name)
                with z.open(member) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
                files.append(target)
        except (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error) as error:
            raise gr.Error(f"{archive.name} could not be unpacked ({type(error).__name__}): it is damaged, "
                           "encrypted, or the server's temporary disk is full. Nothing was graded.",
                           title="Zip not read") from error
    return files


def _file_name(name: str, longest: int = 100) -> str:
    """A name that fits any file system (a zip member's or manifest's may be 300 characters long)."""
    if len(name) <= longest:
        return name
    suffix = Path(name).suffix[:10]
    return f"{name[: longest - len(suffix) - 1]}…{suffix}"


def grade_rows(services: Services, items: list[Item], chunk: int = 16, session_id: int | None = None,
               show_model: bool = True) -> Iterator[tuple[list[str], list[list]]]:
    """Grade the items through the grader's batched front door, `chunk` at a time, and store every one (in the exam
    session `session_id`, if any), yielding the table's header and its rows so far after each chunk: the Batch tab
    shows them as they come, and a cancel stops the batch between two chunks. `show_model` False (model_shown):
    the model's columns stay empty."""
    grader = require_grader(services)
    if not items:
        raise gr.Error("Upload audio files, a zip of them, or a manifest.")
    for path, candidate, task_part, prompt in items:
        check_text_fields(services.config, candidate, task_part, prompt, where=f"{path.name}: ")
    aspects = grader.aspects
    header = batch_header(aspects)
    rows = []
    for start in range(0, len(items), chunk):
        part = items[start: start + chunk]
        assessed = services.assess(grader, [i[0] for i in part], [i[3] for i in part], assess_options(services.config))
        for (path, candidate, task_part, prompt), assessment in zip(part, assessed):
            graded = store_grade(services, path, candidate, task_part, prompt, assessment, session_id)
            row = [path.name, candidate, graded.response_id, graded.grade_id, graded.gate.scorable,
                   graded.gate.reason or ""]
            if graded.prediction and show_model:
                p = graded.prediction
                row += [_round(getattr(p.scores[a], h)) for a in aspects for h in ASPECT_COLUMNS]
                row += [p.cefr or "", "; ".join(r.text for r in graded.review), *word_columns(p.words).values()]
            else:
                row += [""] * (len(header) - len(row))
            rows.append(row)
        yield header, rows


def grade_many(services: Services, items: list[Item],
               progress: Callable[[float, str], None] = lambda fraction, desc: None
               ) -> tuple[list[str], list[list], str]:
    """grade_rows to the end: the result table and its CSV."""
    header, rows = BATCH_COLUMNS, []
    for header, rows in grade_rows(services, items):
        progress(len(rows) / len(items), f"graded {len(rows)} of {len(items)}")
    return header, rows, write_csv(services, "batch-results.csv", header, rows)


# ---- helpers ----------------------------------------------------------------------------------------------

def _scale(services: Services) -> ScoreScale | None:
    return services.grader.scale if services.grader else None


def _cefr(scale_name: str, score: float | None) -> str:
    try:
        return (get_scale(scale_name).cefr_band(score) or "") if score is not None else ""
    except ValueError:  # a scale this version does not know
        return ""


def _round(x: float | None, digits: int = 3) -> float | str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), digits)


def _when(t) -> str:
    return t.strftime("%Y-%m-%d %H:%M") if hasattr(t, "strftime") else str(t or "")
