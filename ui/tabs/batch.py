"""The Batch tab: many recordings (files, a zip, a manifest) graded and stored at once, with a results CSV."""

import gradio as gr
import pandas as pd

from .. import callbacks as cb
from ..callbacks import Services


def build(services: Services, role) -> gr.Dataframe:
    gr.Markdown("Grade many recordings at once: audio files, a zip of them, and/or a manifest (CSV or TSV with an "
                "`audio` column and optional `candidate`, `task_part`, `prompt`). Every response is stored, "
                "non-scorable ones with their reason; click a row to review and mark it.")
    with gr.Row():
        batch_files = gr.File(file_count="multiple", file_types=[*cb.AUDIO_TYPES, ".zip"], label="Audio files or zip")
        manifest = gr.File(file_types=[".csv", ".tsv", ".txt"], label="Manifest (optional)")
    with gr.Row():
        session = gr.Textbox(label="Exam session (a name: History, exports and queues filter by it)", max_lines=1,
                             scale=3)
        share = gr.Number(label="Share marked twice (%)", value=0, minimum=0, maximum=100, step=5, scale=1,
                          info="sampled; disagreements go to adjudication")
    with gr.Row():
        batch_button = gr.Button("Grade all", variant="primary", interactive=services.grader is not None)
        stop_button = gr.Button("Cancel", variant="stop")
    header = cb.batch_header(services.grader.aspects) if services.grader else cb.BATCH_COLUMNS
    batch_table = gr.Dataframe(headers=header, interactive=False, wrap=True, max_height=600)
    batch_csv = gr.File(label="Results CSV", interactive=False)

    @cb.event
    def run_batch(files, listing, name, percent, request: gr.Request, progress=gr.Progress()):
        """A generator: the table grows as responses are graded, and Cancel stops it between two chunks (what
        was graded stays stored); the unpacked zip is removed however it ends."""
        with cb.batch_folder(services) as into:
            items = cb.batch_inputs(services, files or [], listing, into)
            session_id = cb.batch_session(services, name, percent)
            rows = []
            for header, rows in cb.grade_rows(services, items, session_id=session_id,
                                              show_model=cb.model_shown(services, role(request))):
                progress(len(rows) / len(items), desc=f"graded {len(rows)} of {len(items)}")
                yield pd.DataFrame(rows, columns=header), None
            yield pd.DataFrame(rows, columns=header), cb.write_csv(services, "batch-results.csv", header, rows)

    # One concurrency limit for every model run: Batch shares Grade's "model" group.
    running = batch_button.click(run_batch, [batch_files, manifest, session, share], [batch_table, batch_csv],
                                 api_name="grade_batch",
                                 concurrency_limit=services.config.concurrency, concurrency_id="model")
    stop_button.click(None, cancels=[running])
    return batch_table
