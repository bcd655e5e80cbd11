"""The Gradio interface: Grade (with the evidence panel), History, Agreement and Batch tabs (ui/tabs/), bound to
ui.callbacks; the page's style is ui/style.css.

Every event has an api_name, so scripts can grade and log overrides with gradio_client.
"""

import html
from pathlib import Path

import gradio as gr

from . import callbacks as cb
from .callbacks import Services
from .tabs import agreement, batch, grade, history

CSS = (Path(__file__).resolve().parent / "style.css").read_text()


def build_app(services: Services, auth: bool = False) -> gr.Blocks:
    """The whole app. `auth`: examiners log in, and an override's examiner is their login, never a typed name."""
    grader = services.grader

    def who(request: gr.Request | None, typed: str) -> str:
        """Under auth the session's login, whatever name the client sent; otherwise the typed name."""
        return cb.examiner_id(getattr(request, "username", None), "") if auth else cb.examiner_id(None, typed)

    with gr.Blocks(title="L2 speaking grader", delete_cache=(3600, 3600), analytics_enabled=False) as demo:
        with gr.Row(elem_id="top"):
            gr.Markdown("# L2 speaking grader\nRecord or upload a spoken answer in English; the model scores it, "
                        "and an examiner can confirm or override the score.")
            if auth:
                signed_in = gr.HTML(elem_id="signed-in")
                gr.Button("Log out", link="/logout", size="sm", scale=0, min_width=90, elem_id="logout")


                def signed(request: gr.Request):
                    return cb.signed_in_html(getattr(request, "username", None))

                demo.load(signed, None, signed_in, api_name=False)
        if grader is None:
            gr.HTML('<div class="banner"><strong>No checkpoint loaded.</strong> '
                    f'{html.escape(services.load_error or cb.NO_CHECKPOINT)}</div>')
        else:
            scale = grader.scale
            gr.Markdown(f"Checkpoint **{grader.checkpoint_id}** · scale {scale.name} ({scale.min:g}–{scale.max:g}, "
                        f"step {scale.step:g}) · aspects: {', '.join(grader.aspects)}")
        with gr.Tab("Grade"):
            grade.build(services, who, auth)
        with gr.Tab("History"):
            history.build(services)
        with gr.Tab("Agreement"):
            agreement.build(services)
        with gr.Tab("Batch"):
            batch.build(services)
    return demo
