"""The Agreement tab: how examiners agree with the model and with each other (storage.agreement's tables), each
examiner's mark distribution and drift over time, in plain headers with the metric's name on hover, and a CSV of
every table."""

import gradio as gr

from .. import callbacks as cb
from .. import marking
from ..callbacks import Services
from storage.agreement import HEADS


def build(services: Services, role) -> None:
    gr.Markdown("Each examiner's latest mark of each response, against the model and against the other marker of a "
                "double-marked response. Hover a column's header for the measure it shows.")
    with gr.Row():
        session = marking.session_filter(services)
        head = gr.Radio(list(HEADS), value="regression", label="Model score", scale=2)
        independent = gr.Checkbox(label="Only marks made before seeing the model (blind)", scale=1)
        reference = gr.Dropdown([(label, key) for key, label in cb.REFERENCE_FILTERS.items()], value="all",
                                label="Responses", scale=2)
        compare = gr.Button("Compute", variant="primary", scale=1)
    summary = gr.Markdown(elem_id="agreement-summary")
    panels = []
    for title in cb.AGREEMENT_TABLES:
        gr.Markdown(f"### {title}")
        panels.append(gr.HTML(elem_id=f"agreement-{cb.AGREEMENT_TABLES[title]}"))
        if title == "Drift over time":
            drift = gr.Plot(show_label=False, elem_id="drift-plot")
    csvs = gr.File(label="CSV of every table", file_count="multiple", interactive=False)

    @cb.event
    def show_agreement(h, s, blind_only, which, request: gr.Request):
        if not cb.model_shown(services, role(request)):  # its rows hold the model's scores and each examiner's bias
            raise gr.Error("Under blind marking the Agreement figures are for adjudicators and admins.",
                           title="Not for this role")
        report = cb.agreement(services, h, s, bool(blind_only), which or "all")
        return report.summary, *report.tables.values(), report.drift, report.csvs

    compare.click(show_agreement, [head, session, independent, reference], [summary, *panels, drift, csvs],
                  api_name="agreement")
