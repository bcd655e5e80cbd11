"""The examiner's workbench as plain functions: the work queue, a response opened for review (what this examiner, in
this role, may see of it), and a mark saved with what was on screen before it.

The rules (phases, who is awaited, who sees which marks, blind marking, the final mark) are storage.marking's;
Database.review applies them, and this module only lays out what it returns. Under blind marking the model's score,
distribution and evidence are never sent to the page before the examiner's own mark is stored: they are absent from
what these functions return, not hidden by the page.
"""

import html
import random
from dataclasses import dataclass, field

import gradio as gr
import numpy as np

from grader.audio import SAMPLE_RATE, AudioError, GateResult, load_audio
from grader.inference import AspectScore, Assessment, Prediction
from grader.review import Review, review_reasons
from grader.scale import get_scale
from storage import AGREEMENTS, StorageError

from .callbacks import (Graded, Services, _round, _when, check_reason_and_comment, check_score, session_id,
                        whole_number)
from .cards import evidence_html, result_card
from .charts import distribution_figure, timeline_figure

QUEUE_COLUMNS = ["grade", "phase", "session", "candidate", "task part", "file", "graded at (UTC)"]
PHASE_WORDS = {"first": "first mark", "second": "second mark (independent of the first)",
               "adjudication": "adjudication (your mark becomes final)"}


def role_of(services: Services, username: str | None) -> str:
    """The examiner's role from the auth file; without login everyone marks as an examiner."""
    return services.roles.get(username or "", "examiner")


def queue_rows(services: Services, examiner: str, role: str, session: int | None = None, candidate: str = "",
               part: str = "", shuffled: bool = False) -> list[list]:
    """The responses awaiting this examiner's mark, oldest first or in a random order (a new one each time, so that
    no examiner marks a session in the order it was recorded). Responses the model refused are not marked."""
    rows = services.db.work_queue(examiner, role, session_id=session_id(session), candidate=candidate.strip() or None,
                                  part=part.strip() or None,
                                  shuffle_seed=random.randrange(2**32) if shuffled else None)
    return [[r["grade_id"], r["phase"], r["session"] or "", r["candidate_id"] or "", r["part"] or "",
             r["file_name"] or "", _when(r["graded_at"])] for r in rows if r["scorable"]]


def session_choices(services: Services) -> list[tuple[str, int]]:
    """The session filter's choices: 0 is every session (a default, so scripts may leave the filter out)."""
    return [("All sessions", 0)] + [(f'{s["name"]} ({s["responses"]} responses)', s["id"])
                                    for s in services.db.sessions()]


def session_filter(services: Services) -> gr.Dropdown:
    """The Session filter of History, Review and Agreement. It lists the sessions as they are when it is opened (a
    batch may have made one since), and takes any value a script sends, so that the event judges it
    (callbacks.session_id) and answers with a message, not Gradio's own check with its traceback in the log."""
    dropdown = gr.Dropdown(session_choices(services), value=0, label="Session", scale=2, allow_custom_value=True)
    dropdown.focus(lambda: gr.Dropdown(choices=session_choices(services)), None, dropdown, api_name=False,
                   queue=False)
    return dropdown


@dataclass
class Opened:
    """A response as one examiner may see it before marking, and what the page shows of it, in order (`seen`)."""
    grade_id: int
    phase: str
    model_visible: bool
    seen: list[str] = field(default_factory=list)


def open_review(services: Services, grade_id, examiner: str, role: str) -> tuple:
    """The review view's outputs for one grade: heading, audio, card, distribution, evidence, timeline, marks so far,
    and the state the mark form saves with (the phase offered and what was shown)."""
    grade_id = whole_number(grade_id, "Pick a response from the queue, History or Batch, or enter its grade #.")
    view = services.db.review(grade_id, examiner=examiner, role=role, blind=services.config.blind)
    if view is None:
        raise gr.Error(f"There is no grade #{grade_id}.")
    stored, response = view["grade"], view["response"]
    audio = kept_audio(services, response)
    opened = Opened(grade_id, view["phase"], view["model_visible"], ["audio"] if audio is not None else [])
    card, chart, evidence, timeline = withheld_html(view), None, "", None
    if view["model_visible"] or not stored["scorable"]:
        graded = stored_graded(stored)
        card, p = result_card(graded), graded.prediction
        chart = distribution_figure(p.scores[p.headline], p.scale, p.headline) if p else None
        opened.seen.append("model")
        if stored["evidence"]:
            evidence = evidence_html(stored["evidence"])
            timeline = timeline_figure(stored["evidence"], audio[1] / 32767) if audio is not None else None
            opened.seen.append("evidence")
    if view["marks"]:
        opened.seen.append("marks")
    return (heading_html(view), audio, card, chart, evidence, timeline, marks_html(view), opened)


def kept_audio(services: Services, response: dict) -> tuple[int, np.ndarray] | None:
    """The recording, where retention keeps it, as samples (the data folder itself is never served)."""
    if not response["audio_path"]:
        return None
    try:
        audio = load_audio(response["audio_path"], services.config.audio_limits)
    except (AudioError, OSError):
        return None
    return SAMPLE_RATE, (np.clip(audio, -1, 1) * 32767).astype(np.int16)


def stored_graded(stored: dict) -> Graded:
    """A stored grade as the card renders a fresh one, with the review reasons the grader gave it (a grade stored
    before they were kept has them worked out again from its scores and gate measures)."""
    measures = stored["gate_measures"] or {}
    gate = GateResult(stored["scorable"], stored["gate_reason"], measures.get("gate_code"), measures)
    prediction = None
    if stored["scorable"] and stored["scores"]:
        order = [stored["headline"], *(a for a in stored["scores"] if a != stored["headline"])]
        prediction = Prediction({a: AspectScore(**stored["scores"][a]) for a in order}, get_scale(stored["scale_name"]),
                                stored["checkpoint_id"], stored["latency_s"])
    kept = (stored["review"] or {}).get("reasons")
    review = ([Review(**r) for r in kept] if kept is not None else
              review_reasons(prediction, measures=measures) if prediction else [])
    return Graded(stored["response_id"], stored["id"], Assessment(gate, prediction, review))


def withheld_html(view: dict) -> str:
    why = ("Blind marking: the model's score, distribution and evidence appear once your mark is saved, so that "
           "your judgement is your own.")
    return f'<div class="card withheld"><h3>Model result withheld</h3><p>{why}</p></div>'


def heading_html(view: dict) -> str:
    r, g, session = view["response"], view["grade"], view["session"]
    facts = [("grade", f'#{g["id"]}'), ("session", session and session["name"]), ("candidate", r["candidate_id"]),
             ("task part", r["part"]), ("file", r["file_name"]), ("duration", f'{r["duration_s"]:.1f} s'),
             ("prompt", r["prompt_text"])]
    items = "".join(f"<dt>{k}</dt><dd>{html.escape(str(v))}</dd>" for k, v in facts if v)
    phase = (f'Your mark would be the <strong>{PHASE_WORDS[view["phase"]]}</strong>.' if g["scorable"]
             else "Not scored by the model: there is nothing to mark.")
    audio = "" if r["audio_path"] else (' <span class="meta">The recording itself is not kept (--retention '
                                        "discard): only its metadata.</span>")
    return f'<div class="review-head"><dl>{items}</dl><p>{phase}{audio}</p></div>'


def marks_html(view: dict) -> str:
    """The marks this examiner may see, oldest first, and the final mark when they may see it."""
    rows = "".join(
        f'<tr><td>{_when(m["created_at"])}</td><td>{html.escape(m["examiner"])} ({html.escape(m["role"])})</td>'
        f'<td>{html.escape(m["phase"])}</td><td><strong>{m["final_score"]:g}</strong></td>'
        f'<td>{"yes" if m["model_seen"] else "no"}{", " + html.escape(m["agreement"]) if m["agreement"] else ""}</td>'
        f'<td>{html.escape("; ".join(x for x in (m["reason_code"], m["comment"]) if x))}</td></tr>'
        for m in view["marks"])
    table = (f'<table class="marks"><tr><th>when (UTC)</th><th>examiner</th><th>phase</th><th>score</th>'
             f'<th title="whether the model\'s result was shown before this mark, and the examiner\'s agreement with '
             f'it">model seen</th><th>reason, comment</th></tr>{rows}</table>') if rows else \
        '<p class="meta">No marks yet.</p>'
    hidden = (f'<p class="meta">{view["hidden_marks"]} other mark(s) are not shown until every mark awaited is in, '
              "so that they do not sway yours.</p>") if view["hidden_marks"] else ""
    final = view["final"]
    status = ""
    if final and final["status"] != "unmarked":
        score = "" if final["score"] is None else f': <strong>{_round(final["score"], 2)}</strong>'
        status = f'<p class="final">Final mark — {html.escape(final["status"])}{score}</p>'
    return f'<div class="marks-so-far"><h4>Marks so far</h4>{table}{hidden}{status}</div>'


def save_mark(services: Services, opened: Opened | None, final_score, agreement: str | None, reason_code: str | None,
              comment: str, examiner: str, role: str) -> str:
    """Store a mark of the opened response in the phase the view offered, with what was shown before it. The
    agreement with the model is asked only where the model was shown."""
    if opened is None:
        raise gr.Error("Open a response first: from your queue, History or Batch, or by its grade #.")
    score = check_score(services, opened.grade_id, final_score)
    if opened.model_visible:
        if agreement not in AGREEMENTS:
            raise gr.Error("Choose agree, partly or disagree: how your mark compares with the model's.")
    else:
        agreement = None
    check_reason_and_comment(reason_code, comment)
    try:
        receipt = services.db.add_override(opened.grade_id, examiner=examiner, final_score=score, agreement=agreement,
                                           reason_code=reason_code or None, comment=(comment or "").strip() or None,
                                           role=role, phase=opened.phase, model_seen=opened.model_visible,
                                           seen=opened.seen)
    except (ValueError, TypeError, StorageError) as error:
        raise gr.Error(f"The mark was not saved: {error}", title="Not saved") from error
    if receipt.queued:
        return (f"⚠ Not written to the database yet: {receipt.error}. It is kept in the outbox and written as soon "
                "as the database accepts writes again; no need to submit it again.")
    return f"✓ Mark saved (grade #{opened.grade_id}, {receipt.phase or opened.phase} mark): {score:g}, by {examiner}."
