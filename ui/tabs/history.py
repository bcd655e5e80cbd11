"""The History tab: graded responses with the override in force, filtered, and their CSV export."""

import gradio as gr
import pandas as pd

from .. import callbacks as cb
from ..callbacks import Services


def build(services: Services) -> None:
    with gr.Row():
        f_candidate = gr.Textbox(label="Candidate id", max_lines=1)
        f_part = gr.Textbox(label="Task part", max_lines=1)
        f_examiner = gr.Textbox(label="Examiner (only responses they overrode)", max_lines=1)
    with gr.Row():
        refresh = gr.Button("Show", variant="primary")
        export = gr.Button("Export CSV")
    history = gr.Dataframe(headers=cb.HISTORY_COLUMNS, interactive=False, wrap=True, max_height=600)
    history_csv = gr.File(label="CSV", interactive=False)

    @cb.event
    def show_history(c, p, e):
        return pd.DataFrame(cb.history_rows(services, c or "", p or "", e or ""), columns=cb.HISTORY_COLUMNS)

    @cb.event
    def export_history(c, p, e):
        return cb.export_history(services, c or "", p or "", e or "")

    filters = [f_candidate, f_part, f_examiner]
    refresh.click(show_history, filters, history, api_name="history")
    export.click(export_history, filters, history_csv, api_name="export_history")
