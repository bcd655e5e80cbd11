"""The Review tab: the work queue ("awaiting my mark") and one response opened for marking: its audio, the model's
result and evidence (withheld under blind marking until the mark is saved), the marks so far as the examiner's role
allows, and the mark form. History and Batch rows open here too (ui/app.py wires them)."""

from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from .. import callbacks as cb
from .. import marking
from ..callbacks import Services


@dataclass
class Review:
    """What other tabs need to open a response here: the grade # to set, and the event that opens it."""
    grade: gr.Number
    examiner: gr.Textbox
    open: Callable
    outputs: list


def build(services: Services, who: Callable, role: Callable, auth: bool) -> Review:
    scale = services.grader.scale if services.grader else None
    with gr.Accordion("Awaiting my mark", open=True):
        with gr.Row():
            q_session = marking.session_filter(services)
            q_candidate = gr.Textbox(label="Candidate id", max_lines=1, scale=1)
            q_part = gr.Textbox(label="Task part", max_lines=1, scale=1)
            q_random = gr.Checkbox(label="Random order", scale=1)
            examiner = gr.Textbox(label="Examiner name", max_lines=1, visible=not auth, scale=1)
        q_button = gr.Button("Show my queue", variant="primary")
        queue = gr.Dataframe(headers=marking.QUEUE_COLUMNS, interactive=False, wrap=True, max_height=320,
                             elem_id="queue")
    with gr.Row():
        grade_id = gr.Number(label="Grade #", precision=0, minimum=1, scale=1, elem_id="review-grade")
        open_button = gr.Button("Open", scale=0, min_width=100)
    heading = gr.HTML(elem_id="review-head")
    opened = gr.State()
    with gr.Row():
        with gr.Column(scale=1):
            audio = gr.Audio(label="Recording", type="numpy", interactive=False, elem_id="review-audio")
            card = gr.HTML(elem_id="review-card")
        with gr.Column(scale=1):
            marks = gr.HTML(elem_id="review-marks")
            with gr.Group(elem_id="mark-form"):
                gr.Markdown("### Your mark")
                with gr.Row():
                    final = gr.Number(label=f"Final score ({scale.min:g}–{scale.max:g}, step {scale.step:g})"
                                      if scale else "Final score", minimum=scale.min if scale else None,
                                      maximum=scale.max if scale else None, step=scale.step if scale else 0.5,
                                      value=lambda: None)  # empty, not 0 (gradio#6728)
                    reason = gr.Dropdown(["", *cb.REASON_CODES], value="", label="Reason")
                verdict = gr.Radio(list(cb.AGREEMENTS), label="Agreement with the model", visible=False)
                comment = gr.Textbox(label="Comment", lines=1)
                save = gr.Button("Save mark", variant="primary")
                saved = gr.Markdown()
    chart = gr.Plot(show_label=False, elem_id="review-chart", visible=False)
    evidence = gr.HTML(elem_id="review-evidence")
    timeline = gr.Plot(show_label=False, elem_id="review-timeline", visible=False)

    @cb.event
    def show_queue(session, candidate, part, shuffled, name, request: gr.Request):
        rows = marking.queue_rows(services, who(request, name), role(request), session, candidate or "", part or "",
                                  bool(shuffled))
        return pd.DataFrame(rows, columns=marking.QUEUE_COLUMNS)

    @cb.event
    def open_grade(number, name, request: gr.Request):
        head, sound, html_card, fig, html_evidence, time_fig, html_marks, state = marking.open_review(
            services, number, who(request, name), role(request))
        return (head, sound, html_card, gr.Plot(fig, visible=fig is not None), html_evidence,
                gr.Plot(time_fig, visible=time_fig is not None), html_marks, state,
                gr.Radio(visible=state.model_visible, value=None), None, "", "", "")

    @cb.event
    def save_mark(state, score, agree, code, text, name, request: gr.Request):
        message = marking.save_mark(services, state, score, agree, code, text, who(request, name), role(request))
        return message, state.grade_id

    def pick(table: pd.DataFrame, evt: gr.SelectData):
        return int(table.iloc[evt.index[0], 0])

    outputs = [heading, audio, card, chart, evidence, timeline, marks, opened, verdict, final, reason, comment, saved]
    q_button.click(show_queue, [q_session, q_candidate, q_part, q_random, examiner], queue, api_name="work_queue")
    queue.select(pick, queue, grade_id, api_name=False).then(open_grade, [grade_id, examiner], outputs,
                                                             api_name=False)
    # Raw values (preprocess=False), checked by ui.marking: a script's 11 or "abc" gets its message, and Gradio's
    # own range check (which prints a traceback to the log) never runs.
    open_button.click(open_grade, [grade_id, examiner], outputs, api_name="review", preprocess=False)
    # After a save the view opens again: under blind marking that is when the model's result first reaches the page.
    save.click(save_mark, [opened, final, verdict, reason, comment, examiner], [saved, grade_id], api_name="mark",
               preprocess=False).success(open_grade, [grade_id, examiner], outputs[:9], api_name=False)
    return Review(grade_id, examiner, open_grade, outputs)
