"""The Batch tab: many recordings (files, a zip, a manifest) graded and stored at once, with a results CSV."""

import gradio as gr
import pandas as pd

from .. import callbacks as cb
from ..callbacks import Services


def build(services: Services) -> None:
    gr.Markdown("Grade many recordings at once: audio files, a zip of them, and/or a manifest (CSV or TSV with an "
                "`audio` column and optional `candidate`, `task_part`, `prompt`). Every response is stored, "
                "non-scorable ones with their reason.")
    with gr.Row():
        batch_files = gr.File(file_count="multiple", file_types=[*cb.AUDIO_TYPES, ".zip"], label="Audio files or zip")
        manifest = gr.File(file_types=[".csv", ".tsv", ".txt"], label="Manifest (optional)")
    batch_button = gr.Button("Grade all", variant="primary", interactive=services.grader is not None)
    batch_table = gr.Dataframe(interactive=False, wrap=True, max_height=600)
    batch_csv = gr.File(label="Results CSV", interactive=False)

    def run_batch(files, listing, progress=gr.Progress()):
        items = cb.batch_inputs(services, files or [], listing)
        header, rows, path = cb.grade_many(services, items, lambda f, d: progress(f, desc=d))
        return pd.DataFrame(rows, columns=header), path

    batch_button.click(run_batch, [batch_files, manifest], [batch_table, batch_csv], api_name="grade_batch",
                       concurrency_limit=services.config.concurrency)
