"""The History tab: graded responses with the mark in force, filtered (by session too), and their CSV export. A row
opens its response in the Review tab (ui/app.py wires it)."""

import gradio as gr
import pandas as pd

from .. import callbacks as cb
from .. import marking
from ..callbacks import Services


def build(services: Services, role) -> gr.Dataframe:
    with gr.Row():
        f_session = marking.session_filter(services)
        f_candidate = gr.Textbox(label="Candidate id", max_lines=1)
        f_part = gr.Textbox(label="Task part", max_lines=1)
        f_examiner = gr.Textbox(label="Examiner (only responses they marked)", max_lines=1)
    with gr.Row():
        refresh = gr.Button("Show", variant="primary")
        export = gr.Button("Export CSV")
    gr.Markdown("Click a row to open the response for review and marking.", elem_classes="meta")
    history = gr.Dataframe(headers=cb.HISTORY_COLUMNS, interactive=False, wrap=True, max_height=600, max_chars=80,
                           elem_id="history")
    history_csv = gr.File(label="CSV", interactive=False)

    @cb.event
    def show_history(c, p, e, s, request: gr.Request):
        rows = cb.history_rows(services, c or "", p or "", e or "", s, role(request),
                               getattr(request, "username", None))
        return pd.DataFrame(rows, columns=cb.HISTORY_COLUMNS)

    @cb.event
    def export_history(c, p, e, s, request: gr.Request):
        return cb.export_history(services, c or "", p or "", e or "", s, role(request))

    filters = [f_candidate, f_part, f_examiner, f_session]
    refresh.click(show_history, filters, history, api_name="history")
    export.click(export_history, filters, history_csv, api_name="export_history")
    return history
