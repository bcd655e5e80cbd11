"""What the app's events do, as plain functions of their inputs: testable without a browser or a server.

Each function takes the `Services` (settings, grader, database) first; ui/app.py binds them to components.
User mistakes raise `gr.Error`, which Gradio shows as a message and tests can catch.
"""

import csv
import hashlib
import html
import logging
import math
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from grader.audio import SAMPLE_RATE, AudioError, GateResult, inspect_file, load_audio
from grader.data import ManifestError, read_manifest
from grader.evidence import build_evidence
from grader.inference import Grader, Prediction
from grader.metrics import score_metrics
from grader.scale import ScoreScale, get_scale
from storage import AGREEMENTS, Database, StorageError

from .charts import agreement_figure, distribution_figure, timeline_figure
from .config import AppConfig
from .cards import evidence_html

AUDIO_TYPES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".webm", ".aac", ".mp4")
REASON_CODES = ("pronunciation", "fluency", "prosody", "grammar/vocabulary", "task/content", "audio quality",
                "speaker or accent", "other")
FLAT_ENTROPY = 0.85  # normalised entropy above which the distribution says "could be anything"
log = logging.getLogger("grader.app")
NO_CHECKPOINT = ("No grader checkpoint is available, so nothing can be graded. Train one with "
                 "`python -m grader.train` (see the README) or start the app with `--checkpoint DIR`.")


@dataclass
class Services:
    config: AppConfig
    grader: Grader | None  # None: no checkpoint; the app says so and grades nothing
    db: Database
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="grader-")))
    load_error: str | None = None
    run_model: Callable[[Grader, list[np.ndarray], list[str | None]], list[Prediction]] = (
        lambda grader, audios, prompts: grader.grade_batch(audios, prompts))
    run_evidence: Callable[[Grader, np.ndarray, str | None], dict] = build_evidence


@dataclass
class Graded:
    """One response through the gate and (if scorable) the model."""
    response_id: int
    grade_id: int
    gate: GateResult
    prediction: Prediction | None
    review: list[str]


# ---- grading ----------------------------------------------------------------------------------------------

def review_reasons(prediction: Prediction) -> list[str]:
    """Why an examiner should listen to this one: the two heads disagree by more than half a class step
    (0.5 on speechocean762's 1-point classes, 0.25 on a half-band scale), or the distribution is flat."""
    score, scale = prediction.scores[prediction.headline], prediction.scale
    reasons = []
    gap = abs(score.regression - score.soft)
    if gap > 0.5 * scale.step:
        reasons.append(f"the regression ({score.regression:.2f}) and soft ({score.soft:.2f}) scores differ by "
                       f"{gap:.2f}, more than half a class step ({0.5 * scale.step:g})")
    entropy = normalised_entropy(score.probs)
    if entropy > FLAT_ENTROPY:
        reasons.append(f"the class distribution is nearly flat (normalised entropy {entropy:.2f} > {FLAT_ENTROPY}): "
                       "the model is unsure")
    return reasons


def normalised_entropy(probs: list[float]) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1)
    return float(-(p * np.log(p)).sum() / math.log(len(p))) if len(p) > 1 else 0.0


def grade_file(services: Services, path: str | Path, candidate: str = "", task_part: str = "", prompt: str = "",
               progress: Callable = lambda fraction, desc: None) -> Graded:
    """Gate, grade and store one file. A refused file is stored as non-scorable with the gate's reason."""
    grader = require_grader(services)
    config = services.config
    check_text_fields(config, candidate, task_part, prompt)
    audio, gate = inspect_file(path, config.audio_limits, config.gate)
    response_id = store_response(services, Path(path), candidate, task_part, prompt, gate)
    measures = gate.measures | {"gate_code": gate.code}
    if not gate.scorable:
        grade_id = services.db.add_grade(response_id, checkpoint_id=grader.checkpoint_id, scale_name=grader.scale.name,
                                         scores={}, scorable=False, latency_s=0.0, gate_reason=gate.reason,
                                         gate_measures=measures)
        log.info("grade %d (response %d): not scorable, %s", grade_id, response_id, gate.code)
        return Graded(response_id, grade_id, gate, None, [])
    progress(0.3, desc="Grading")
    prediction = services.run_model(grader, [audio], [prompt.strip() or None])[0]
    progress(0.9, desc="Saving")
    grade_id = services.db.add_grade(response_id, checkpoint_id=prediction.checkpoint, scale_name=prediction.scale.name,
                                     scores={a: asdict(x) for a, x in prediction.scores.items()}, scorable=True,
                                     latency_s=prediction.latency_s, headline=prediction.headline,
                                     gate_measures=measures)
    log.info("grade %d (response %d): graded in %.2f s", grade_id, response_id, prediction.latency_s)
    return Graded(response_id, grade_id, gate, prediction, review_reasons(prediction))


def check_text_fields(config: AppConfig, candidate: str, task_part: str, prompt: str, where: str = "") -> None:
    """Refuse, before anything is decoded or stored, text no examiner means to send (a pasted file, say)."""
    limits = (("reference text", prompt, config.max_prompt_chars), ("candidate id", candidate, 200),
              ("task part", task_part, 200))
    for name, text, limit in limits:
        if len(text) > limit:
            raise gr.Error(f"{where}The {name} is {len(text):,} characters long; at most {limit:,} are accepted. "
                           "Paste only the sentence or task the candidate was given.", title="Text too long")


def require_grader(services: Services) -> Grader:
    if services.grader is None:
        raise gr.Error(services.load_error or NO_CHECKPOINT, title="No checkpoint")
    return services.grader


def store_response(services: Services, path: Path, candidate: str, task_part: str, prompt: str,
                   gate: GateResult) -> int:
    """The response row: the audio's SHA-256 and metadata always; the file itself only under retention=keep."""
    digest = sha256(path) if path.is_file() else None
    kept = None
    if services.config.retention == "keep" and digest:
        folder = Path(services.config.data_dir) / "audio"
        folder.mkdir(parents=True, exist_ok=True)
        kept = folder / f"{digest}{path.suffix.lower()}"
        shutil.copyfile(path, kept)
    return services.db.add_response(audio_sha256=digest or "", duration_s=gate.measures.get("duration_s", 0.0),
                                    part=task_part.strip() or None, candidate_id=candidate.strip() or None,
                                    prompt_text=prompt.strip() or None, audio_path=str(kept) if kept else None)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def result_json(graded: Graded) -> dict:
    """The machine-readable result (what scripts get from the `grade` API)."""
    out = {"response_id": graded.response_id, "grade_id": graded.grade_id, "scorable": graded.gate.scorable, "gate_code": graded.gate.code,
           "gate_reason": graded.gate.reason}
    if graded.prediction:
        out |= graded.prediction.to_dict() | {"review": graded.review}
    return out


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


def evidence_for(services: Services, path: str | Path | None, grade_id: int | None) -> Evidence | None:
    """Compute and store the evidence of a scored grade, from the same recording (checked by its hash) and the
    reference text stored with it. None for a response that was not scored. The score is never touched."""
    grader = require_grader(services)
    if not grade_id:
        raise gr.Error("Grade a response first: there is no evidence without a grade.")
    stored = services.db.grade(int(grade_id))
    if stored is None:
        raise gr.Error(f"There is no grade #{int(grade_id)}.")
    if not stored["scorable"]:
        return None
    if not path or not Path(path).is_file() or sha256(Path(path)) != stored["response"]["audio_sha256"]:
        raise gr.Error(f"This recording is not the one graded as #{int(grade_id)}: grade it first.")
    try:
        audio = load_audio(path, services.config.audio_limits)
    except AudioError as error:
        raise gr.Error(str(error)) from error
    evidence = services.run_evidence(grader, audio, stored["response"]["prompt_text"])
    try:
        services.db.set_evidence(int(grade_id), evidence)
    except StorageError as error:
        log.warning("evidence for grade %d not stored: %s", int(grade_id), error)
        raise gr.Error(f"The evidence was computed but not saved: {error}", title="Not saved") from error
    log.info("evidence for grade %d in %.2f s", int(grade_id), evidence["latency_s"])
    return Evidence(int(grade_id), evidence, audio)


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
    if found is None or index is None:
        return None
    words = found.evidence["transcript"]["words"]
    if not 0 <= int(index) < len(words):
        raise gr.Error("Pick a word of the transcript.")
    w = words[int(index)]
    start = max(int((w["start"] - margin_s) * SAMPLE_RATE), 0)
    end = min(int((w["end"] + margin_s) * SAMPLE_RATE), len(found.audio))
    return SAMPLE_RATE, (np.clip(found.audio[start:end], -1, 1) * 32767).astype(np.int16)


# ---- overrides --------------------------------------------------------------------------------------------

def examiner_id(username: str | None, typed_name: str) -> str:
    """Who is overriding: the login when auth is on (a client cannot choose it), else the typed name."""
    if username:
        return username
    name = (typed_name or "").strip()
    if not name:
        raise gr.Error("Enter your name as examiner before saving an override.")
    return name


def save_override(services: Services, grade_id: int | None, final_score: float | None, agreement: str | None,
                  reason_code: str | None, comment: str, examiner: str) -> str:
    """Store an examiner's decision on a grade; a locked or read-only database keeps it in the outbox for retry,
    and the message says so."""
    if not grade_id:
        raise gr.Error("Grade a response first: there is nothing to override yet.")
    scale = _scale(services)
    if final_score is None or math.isnan(final_score):
        raise gr.Error("Enter your final score.")
    if scale and not scale.min <= final_score <= scale.max:
        raise gr.Error(f"The final score must lie between {scale.min:g} and {scale.max:g}.")
    if agreement not in AGREEMENTS:
        raise gr.Error("Choose agree, partly or disagree.")
    try:
        receipt = services.db.add_override(int(grade_id), examiner=examiner, final_score=float(final_score),
                                           agreement=agreement, reason_code=reason_code or None,
                                           comment=(comment or "").strip() or None)
    except (ValueError, StorageError) as error:
        raise gr.Error(f"The override was not saved: {error}", title="Not saved") from error
    log.info("override %s on grade %d: %s", receipt.uuid, int(grade_id), "queued" if receipt.queued else "stored")
    if receipt.queued:
        return (f"⚠ Not written to the database yet: {receipt.error}. It is kept in the outbox and will be saved "
                "automatically when the database accepts writes again; no need to submit it again.")
    return f"✓ Override saved (grade #{int(grade_id)}): final score {final_score:g}, {agreement}, by {examiner}."


# ---- history and agreement --------------------------------------------------------------------------------

def download_path(services: Services, name: str) -> Path:
    """A fresh folder per download in the private temp folder, so two examiners exporting at once never
    overwrite (or receive) each other's file, and the file keeps a readable name."""
    return Path(tempfile.mkdtemp(dir=services.workdir)) / name


def write_csv(services: Services, name: str, header: list[str], rows: list[list]) -> str:
    """A CSV in the private temp folder (Gradio serves it from there for download; never from the data dir)."""
    path = download_path(services, name)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)

HISTORY_COLUMNS = ["graded at (UTC)", "response", "grade", "candidate", "task part", "status", "regression",
                   "soft", "CEFR", "final score", "agreement", "examiner", "reason", "comment", "words/min",
                   "pauses", "transcript"]


def history_filters(candidate: str = "", task_part: str = "", examiner: str = "") -> dict[str, str]:
    """Exact-match filters for storage's history(); an empty field filters nothing."""
    return {k: v.strip() for k, v in (("candidate", candidate), ("part", task_part), ("examiner", examiner))
            if v and v.strip()}


def history_rows(services: Services, candidate: str = "", task_part: str = "", examiner: str = "") -> list[list]:
    """Graded responses, newest first, each with the override in force."""
    rows = []
    for r in services.db.history(**history_filters(candidate, task_part, examiner)):
        status = ("overridden" if r["override_id"] else "graded") if r["scorable"] else \
            f"not scored: {r['gate_reason']}"
        rows.append([_when(r["graded_at"]), r["response_id"], r["grade_id"], r["candidate_id"] or "",
                     r["part"] or "", status, _round(r["regression"]), _round(r["soft"]),
                     _cefr(r["scale_name"], r["soft"]), _round(r["final_score"]), r["agreement"] or "",
                     r["examiner"] or "", r["reason_code"] or "", r["comment"] or "", _round(r["speech_rate_wpm"], 1),
                     "" if r["pauses"] is None else r["pauses"], r["transcript"] or ""])
    return rows


def export_history(services: Services, candidate: str = "", task_part: str = "", examiner: str = "") -> str:
    """Every matching row with all of storage's columns (hashes, checkpoint, latency...), not only those shown."""
    path = download_path(services, "history.csv")
    services.db.export_history_csv(path, **history_filters(candidate, task_part, examiner))
    return str(path)


AGREEMENT_COLUMNS = ["examiner", "n", "rmse", "pcc", "src", "krc", "within_0_5", "within_1_0"]


def agreement(services: Services, head: str = "regression") -> tuple[list[list], go.Figure, str, str | None]:
    """Model (`head`: regression or soft) against examiners' final scores: overall and per-examiner metrics,
    the scatter plot, a summary line, and the CSV of pairs."""
    pairs = services.db.override_pairs()
    if not pairs:
        return [], agreement_figure([], [], [], _scale(services)), "No overrides yet: nothing to compare.", None
    model = [p[f"model_{head}"] for p in pairs]
    final = [p["final_score"] for p in pairs]
    who = [p["examiner"] for p in pairs]
    table = [_metric_row("all examiners", model, final)]
    for name in sorted(set(who)):
        picked = [i for i, w in enumerate(who) if w == name]
        table.append(_metric_row(name, [model[i] for i in picked], [final[i] for i in picked]))
    columns = ["grade_id", "part", "examiner", "model_regression", "model_soft", "final_score", "agreement",
               "created_at"]
    csv_path = write_csv(services, "agreement.csv", columns, [[p[c] for c in columns] for p in pairs])
    overall = table[0]
    pearson = overall[3] if overall[3] != "" else "n/a (needs two or more different scores)"
    summary = (f"**{overall[1]}** examiner decisions from {len(set(who))} examiner(s), model {head} score: "
               f"RMSE {overall[2]}, Pearson {pearson}, within 0.5: {overall[6]} %, within 1.0: {overall[7]} %.")
    return table, agreement_figure(model, final, who, _scale(services), head), summary, csv_path


def _metric_row(name: str, model: list[float], final: list[float]) -> list:
    m = score_metrics(model, final)
    return [name, m["n"], *(_round(m[k]) for k in AGREEMENT_COLUMNS[2:])]


# ---- batch ------------------------------------------------------------------------------------------------

BATCH_COLUMNS = ["file", "candidate", "response", "grade", "scorable", "reason"]


def batch_inputs(services: Services, paths: list[str], manifest: str | None) -> list[tuple[Path, str, str, str]]:
    """(audio path, candidate, task part, prompt) for every audio file uploaded or inside uploaded zips; with a
    manifest (grader.data.read_manifest's format), one item per row, its audio matched by file name among the
    uploaded files only: a manifest never reaches a file on the server."""
    files: list[Path] = []
    for p in map(Path, paths or []):
        if p.suffix.lower() == ".zip":
            files += _unzip(services, p)
        elif p.suffix.lower() in AUDIO_TYPES:
            files.append(p)
    if not manifest:
        return [(f, "", "", "") for f in files]
    by_name = {_display_name(f): f for f in files}
    try:
        rows = read_manifest(manifest, check_audio=False, resolve=False)
    except ManifestError as error:
        raise gr.Error(str(error), title="Manifest not read") from error
    unmatched = services.workdir / "not-uploaded"  # no such file: the gate refuses it as "not found"
    return [(by_name.get(r.audio.name, unmatched / r.audio.name), r.speaker or "", r.part or "", r.text or "")
            for r in rows]


def _unzip(services: Services, archive: Path) -> list[Path]:
    """Audio members of a zip, extracted flat into the private temp folder (no path from the archive is used)."""
    out = Path(tempfile.mkdtemp(dir=services.workdir, prefix="zip-"))
    files = []
    with zipfile.ZipFile(archive) as z:
        for i, info in enumerate(z.infolist()):
            name = Path(info.filename).name
            if info.is_dir() or Path(name).suffix.lower() not in AUDIO_TYPES or name.startswith("."):
                continue
            if info.file_size > services.config.audio_limits.max_bytes:
                raise gr.Error(f"{name} in {archive.name} is larger than the upload limit.")
            target = out / f"{i:05d}-{name}"
            with z.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            files.append(target)
    return files


def grade_many(services: Services, items: list[tuple[Path, str, str, str]],
               progress: Callable[[float, str], None] = lambda fraction, desc: None) -> tuple[list[str], list[list], str]:
    """Grade each item (gate first), store every one, and return the result table and its CSV."""
    grader = require_grader(services)
    if not items:
        raise gr.Error("Upload audio files, a zip of them, or a manifest.")
    for path, candidate, task_part, prompt in items:
        check_text_fields(services.config, candidate, task_part, prompt, where=f"{_display_name(path)}: ")
    aspects = grader.aspects
    header = BATCH_COLUMNS + [f"{a}_{h}" for a in aspects for h in ("regression", "soft")] + ["cefr", "review"]
    rows = []
    for i, (path, candidate, task_part, prompt) in enumerate(items):
        progress(i / len(items), f"grading {path.name} ({i + 1}/{len(items)})")
        graded = grade_file(services, path, candidate, task_part, prompt)
        row = [_display_name(path), candidate, graded.response_id, graded.grade_id, graded.gate.scorable, graded.gate.reason or ""]
        if graded.prediction:
            p = graded.prediction
            row += [_round(getattr(p.scores[a], h)) for a in aspects for h in ("regression", "soft")]
            row += [p.cefr or "", "; ".join(graded.review)]
        else:
            row += [""] * (2 * len(aspects) + 2)
        rows.append(row)
    progress(1.0, "done")
    return header, rows, write_csv(services, "batch-results.csv", header, rows)


def _display_name(path: Path) -> str:
    """The uploaded name, without the index prefix a zip member got on extraction."""
    name = path.name
    return name[6:] if path.parent.name.startswith("zip-") else name


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
