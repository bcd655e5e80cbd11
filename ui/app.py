"""The Gradio interface: Grade (with the evidence panel), History, Agreement and Batch tabs (ui/tabs/), bound to
ui.callbacks; the page's style is ui/style.css.

Every event has an api_name, so scripts can grade and log overrides with gradio_client.
"""

import html
from pathlib import Path

import gradio as gr

from . import callbacks as cb
from .callbacks import Services
from . import marking
from .tabs import agreement, batch, grade, history, review

CSS = (Path(__file__).resolve().parent / "style.css").read_text()


def build_app(services: Services, auth: bool = False) -> gr.Blocks:
    """The whole app. `auth`: examiners log in, and a mark's examiner (and role) is their login's, never a typed
    name."""
    grader = services.grader

    def who(request: gr.Request | None, typed: str) -> str:
        """Under auth the session's login, whatever name the client sent; otherwise the typed name."""
        return cb.examiner_id(getattr(request, "username", None), "") if auth else cb.examiner_id(None, typed)

    def role(request: gr.Request | None) -> str:
        return marking.role_of(services, getattr(request, "username", None) if auth else None)

    with gr.Blocks(title="L2 speaking grader", delete_cache=(3600, 3600), analytics_enabled=False) as demo:
        with gr.Row(elem_id="top"):
            gr.Markdown("# L2 speaking grader\nRecord or upload a spoken answer in English; the model scores it, "
                        "and examiners mark it: in the Review tab, blind or double-marked as the session asks.")
            if auth:
                with gr.Column(scale=0, min_width=240, elem_id="account"):
                    signed_in = gr.HTML(elem_id="signed-in")
                    gr.Button("Log out", link="/logout", size="sm", elem_id="logout")

                def signed(request: gr.Request):
                    name = getattr(request, "username", None)
                    return cb.signed_in_html(name, marking.role_of(services, name))

                demo.load(signed, None, signed_in, api_name=False)
        if grader is None:
            gr.HTML('<div class="banner"><strong>No checkpoint loaded.</strong> '
                    f'{html.escape(services.load_error or cb.NO_CHECKPOINT)}</div>')
        else:
            scale = grader.scale
            gr.Markdown(f"Checkpoint **{grader.checkpoint_id}** · scale {scale.name} ({scale.min:g}–{scale.max:g}, "
                        f"step {scale.step:g}) · aspects: {', '.join(grader.aspects)}"
                        + (" · **blind first marking**" if services.config.blind else ""))
        with gr.Tabs() as tabs:
            with gr.Tab("Grade", id="grade"):
                graded_id, graded = grade.build(services, who, role, auth)
            with gr.Tab("Review", id="review"):
                reviewing = review.build(services, who, role, auth)
            with gr.Tab("History", id="history"):
                history_table = history.build(services, role)
            with gr.Tab("Agreement", id="agreement"):
                agreement.build(services, role)
            with gr.Tab("Batch", id="batch"):
                batch_table = batch.build(services, role)

        def pick(table, evt: gr.SelectData):
            """A History or Batch row, clicked: its grade opens in the Review tab."""
            grade_id = table["grade"].iloc[evt.index[0]] if len(table) else None
            if grade_id in (None, ""):
                raise gr.Error("This row has no grade to open.")
            return int(grade_id), gr.Tabs(selected="review")

        if services.config.blind:  # the Grade tab shows no score: the response opens in Review for its first mark
            graded.success(lambda g: (g, gr.Tabs(selected="review")), graded_id, [reviewing.grade, tabs],
                           api_name=False).then(reviewing.open, [reviewing.grade, reviewing.examiner],
                                                reviewing.outputs, api_name=False)
        for table in (history_table, batch_table):
            table.select(cb.event(pick), table, [reviewing.grade, tabs], api_name=False).success(
                reviewing.open, [reviewing.grade, reviewing.examiner], reviewing.outputs, api_name=False)
    return demo
