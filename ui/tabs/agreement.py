"""The Agreement tab: the model's scores against examiners' final scores, overall and per examiner."""

import gradio as gr
import pandas as pd

from .. import callbacks as cb
from ..callbacks import Services


def build(services: Services) -> None:
    gr.Markdown("How the model's score compares with examiners' final scores, over every response with an override "
                "(the latest per response).")
    with gr.Row():
        head = gr.Radio(["regression", "soft"], value="regression", label="Model score")
        compare = gr.Button("Compute", variant="primary")
    summary = gr.Markdown()
    metrics = gr.Dataframe(headers=cb.AGREEMENT_COLUMNS, interactive=False)
    scatter = gr.Plot(show_label=False)
    agreement_csv = gr.File(label="CSV of pairs", interactive=False)

    @cb.event
    def show_agreement(h):
        table, fig, text, path = cb.agreement(services, h)
        return pd.DataFrame(table, columns=cb.AGREEMENT_COLUMNS), fig, text, path

    compare.click(show_agreement, head, [metrics, scatter, summary, agreement_csv], api_name="agreement")
