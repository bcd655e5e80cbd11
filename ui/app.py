"""The Gradio interface: Grade (with the evidence panel), History, Agreement and Batch tabs bound to ui.callbacks.

Every event has an api_name, so scripts can grade and log overrides with gradio_client.
"""

from pathlib import Path

import gradio as gr
import pandas as pd

from . import callbacks as cb
from .callbacks import Services

EXAMPLES = Path(__file__).resolve().parents[1] / "tests" / "data" / "examples"
CSS = """
.card {border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 14px 18px;}
.card .headline {display: flex; align-items: baseline; gap: 12px; flex-wrap: wrap; margin-bottom: 8px;}
.card .label {font-size: 1.1em; font-weight: 600; text-transform: capitalize;}
.card .score {font-size: 2.6em; font-weight: 700; line-height: 1;}
.card .of {color: var(--body-text-color-subdued);}
.card .cefr {background: #1f6f43; color: white; border-radius: 6px; padding: 2px 10px; font-weight: 600;}
.card table, .card tr {border: none !important;}
.card table {width: 100%; border-collapse: collapse; margin: 6px 0 0 0 !important;}
.card th, .card td {text-align: left; padding: 4px 8px; border: none !important;
  border-bottom: 1px solid var(--border-color-primary) !important;}
.card td:first-child {text-transform: capitalize;}
.card .meta {color: var(--body-text-color-subdued); font-size: 0.85em; margin-top: 8px;}
.card .review {background: #fff4e0; border-left: 4px solid #e67e22; padding: 8px 12px; margin: 8px 0; color: #5a3a00;}
.card .review ul {margin: 4px 0 0 18px;}
.card.refused {border-color: #c0392b; background: #fdf0ee; color: #5a1a12;}
.banner {background: #fdf0ee; border: 1px solid #c0392b; border-radius: 8px; padding: 10px 14px; color: #5a1a12;}
.evidence h4 {margin: 16px 0 4px 0;}
.evidence .note {font-size: 0.9em;}
.evidence .meta {color: var(--body-text-color-subdued); font-size: 0.9em;}
.evidence .transcript, .evidence .reference {font-size: 1.15em; line-height: 1.9;}
.evidence mark.unsure {background: #f5c26b; color: inherit; border-radius: 3px; padding: 0 2px;}
.evidence table, .evidence tr {border-collapse: collapse; border: none !important; margin: 4px 0 !important;}
.evidence td, .evidence th {text-align: left; padding: 3px 10px 3px 0; border: none !important;
  border-bottom: 1px solid var(--border-color-primary) !important;}
.evidence .op-correct {color: #1f6f43;}
.evidence .op-substituted {color: #a05a00; font-weight: 600;}
.evidence .op-substituted .heard {font-weight: 400; font-style: italic;}
.evidence .op-omitted {color: #c0392b; text-decoration: line-through;}
.evidence .op-inserted {color: #2c5aa0; font-style: italic;}
.evidence .suspect {text-decoration: underline wavy #c0392b; text-underline-offset: 4px;}
.evidence .op-omitted.suspect {text-decoration: line-through underline wavy #c0392b;}
"""


def build_app(services: Services, auth: bool = False) -> gr.Blocks:
    """The whole app. `auth`: examiners log in, and an override's examiner is their login, never a typed name."""
    grader = services.grader
    scale = grader.scale if grader else None

    def who(request: gr.Request | None, typed: str) -> str:
        """Under auth the session's login, whatever name the client sent; otherwise the typed name."""
        return cb.examiner_id(getattr(request, "username", None), "") if auth else cb.examiner_id(None, typed)

    with gr.Blocks(title="L2 speaking grader", delete_cache=(3600, 3600), analytics_enabled=False) as demo:
        gr.Markdown("# L2 speaking grader\nRecord or upload a spoken answer in English; the model scores it, "
                    "and an examiner can confirm or override the score.")
        if grader is None:
            gr.HTML(f'<div class="banner"><strong>No checkpoint loaded.</strong> {services.load_error or cb.NO_CHECKPOINT}</div>')
        else:
            gr.Markdown(f"Checkpoint **{grader.checkpoint_id}** · scale {scale.name} ({scale.min:g}–{scale.max:g}, "
                        f"step {scale.step:g}) · aspects: {', '.join(grader.aspects)}")

        with gr.Tab("Grade"):
            with gr.Row():
                with gr.Column(scale=2):
                    audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Spoken response",
                                     elem_id="audio-input")
                    if EXAMPLES.is_dir() and any(EXAMPLES.glob("*.flac")):
                        gr.Examples([[str(p)] for p in sorted(EXAMPLES.glob("*.flac"))], [audio],
                                    label="Example recordings (speechocean762)")
                    with gr.Row():
                        candidate = gr.Textbox(label="Candidate id", max_lines=1)
                        task_part = gr.Textbox(label="Task part", max_lines=1)
                    prompt = gr.Textbox(label="Prompt or reference text (optional)", lines=2)
                    grade_button = gr.Button("Grade", variant="primary", interactive=grader is not None)
                with gr.Column(scale=3):
                    card = gr.HTML()
                    chart = gr.Plot(label="Class distribution", show_label=False)
                    with gr.Accordion("Result as JSON", open=False):
                        raw = gr.JSON(label="result")
            with gr.Group(elem_id="evidence-panel"):
                gr.Markdown("### Evidence")
                evidence_panel = gr.HTML(elem_id="evidence")
                timeline = gr.Plot(label="Timeline", show_label=False, elem_id="timeline")
                with gr.Row():
                    word_pick = gr.Dropdown(choices=[], label="Play a word of the transcript", scale=2,
                                            elem_id="word-pick")
                    word_clip = gr.Audio(label="Word", type="numpy", interactive=False, scale=3, elem_id="word-audio")
                with gr.Accordion("Evidence as JSON", open=False):
                    evidence_json = gr.JSON(label="evidence")
                evidence_state = gr.State()
            with gr.Group():
                gr.Markdown("### Examiner decision\nYour own score for this response; it is stored beside the "
                            "model's, never replacing it. The score is not pre-filled, so the model does not "
                            "anchor your judgement.")
                with gr.Row():
                    grade_id = gr.Number(label="Grade #", precision=0, interactive=False, scale=1)
                    final = gr.Number(label=f"Final score ({scale.min:g}–{scale.max:g})" if scale else "Final score",
                                      minimum=scale.min if scale else None, maximum=scale.max if scale else None,
                                      step=scale.step if scale else 0.5, scale=1)
                    verdict = gr.Radio(list(cb.AGREEMENT), label="Agreement with the model", scale=2)
                    reason = gr.Dropdown(["", *cb.REASON_CODES], value="", label="Reason", scale=2)
                with gr.Row():
                    comment = gr.Textbox(label="Comment", lines=1, scale=4)
                    examiner = gr.Textbox(label="Examiner name", max_lines=1, visible=not auth, scale=1)
                save = gr.Button("Save override", variant="secondary")
                saved = gr.Markdown()

        def grade(path, cand, part, text, progress=gr.Progress()):
            if not path:
                raise gr.Error("Record or upload a response first.")
            progress(0.05, desc="Checking the recording")
            graded = cb.grade_file(services, path, cand or "", part or "", text or "", progress=progress)
            return (cb.result_card(graded), cb.figure(graded), cb.result_json(graded), graded.grade_id,
                    None, None, "", "", "", "", None, gr.Dropdown(choices=[], value=None), None, None, None)

        def evidence(path, rid):
            found = cb.evidence_for(services, path, rid)
            return *cb.evidence_outputs(found), found

        # The evidence follows a successful grade as its own event, so the score shows first; both hold the model.
        graded_event = grade_button.click(
            grade, [audio, candidate, task_part, prompt],
            [card, chart, raw, grade_id, final, verdict, reason, comment, saved,
             evidence_panel, timeline, word_pick, word_clip, evidence_json, evidence_state],
            api_name="grade", concurrency_limit=services.config.concurrency, concurrency_id="model")
        graded_event.success(evidence, [audio, grade_id], [evidence_panel, timeline, word_pick, evidence_json,
                                                           evidence_state],
                             api_name="evidence", concurrency_limit=services.config.concurrency,
                             concurrency_id="model")
        word_pick.change(cb.word_audio, [evidence_state, word_pick], word_clip, api_name="word_audio")

        def override(rid, score, agree, code, text, name, request: gr.Request):
            return cb.save_override(services, rid, score, agree, code, text, who(request, name))

        save.click(override, [grade_id, final, verdict, reason, comment, examiner], saved, api_name="override")

        with gr.Tab("History"):
            with gr.Row():
                f_candidate = gr.Textbox(label="Candidate id", max_lines=1)
                f_part = gr.Textbox(label="Task part", max_lines=1)
                f_examiner = gr.Textbox(label="Examiner (only responses they overrode)", max_lines=1)
            with gr.Row():
                refresh = gr.Button("Show", variant="primary")
                export = gr.Button("Export CSV")
            history = gr.Dataframe(headers=cb.HISTORY_COLUMNS, interactive=False, wrap=True, max_height=600)
            history_csv = gr.File(label="CSV", interactive=False)

        def show_history(c, p, e):
            return pd.DataFrame(cb.history_rows(services, c or "", p or "", e or ""), columns=cb.HISTORY_COLUMNS)

        def export_history(c, p, e):
            return cb.export_history(services, c or "", p or "", e or "")

        filters = [f_candidate, f_part, f_examiner]
        refresh.click(show_history, filters, history, api_name="history")
        export.click(export_history, filters, history_csv, api_name="export_history")

        with gr.Tab("Agreement"):
            gr.Markdown("How the model's score compares with examiners' final scores, over every response with "
                        "an override (the latest per response).")
            with gr.Row():
                head = gr.Radio(["regression", "soft"], value="regression", label="Model score")
                compare = gr.Button("Compute", variant="primary")
            summary = gr.Markdown()
            metrics = gr.Dataframe(headers=cb.AGREEMENT_COLUMNS, interactive=False)
            scatter = gr.Plot(show_label=False)
            agreement_csv = gr.File(label="CSV of pairs", interactive=False)

        def show_agreement(h):
            table, fig, text, path = cb.agreement(services, h)
            return pd.DataFrame(table, columns=cb.AGREEMENT_COLUMNS), fig, text, path

        compare.click(show_agreement, head, [metrics, scatter, summary, agreement_csv], api_name="agreement")

        with gr.Tab("Batch"):
            gr.Markdown("Grade many recordings at once: audio files, a zip of them, and/or a manifest (CSV or TSV "
                        "with an `audio` column and optional `candidate`, `task_part`, `prompt`). Every response "
                        "is stored, non-scorable ones with their reason.")
            with gr.Row():
                batch_files = gr.File(file_count="multiple", file_types=[*cb.AUDIO_TYPES, ".zip"],
                                      label="Audio files or zip")
                manifest = gr.File(file_types=[".csv", ".tsv", ".txt"], label="Manifest (optional)")
            batch_button = gr.Button("Grade all", variant="primary", interactive=grader is not None)
            batch_table = gr.Dataframe(interactive=False, wrap=True, max_height=600)
            batch_csv = gr.File(label="Results CSV", interactive=False)

        def run_batch(files, listing, progress=gr.Progress()):
            items = cb.batch_inputs(services, files or [], listing)
            header, rows, path = cb.grade_many(services, items, lambda f, d: progress(f, desc=d))
            return pd.DataFrame(rows, columns=header), path

        batch_button.click(run_batch, [batch_files, manifest], [batch_table, batch_csv], api_name="grade_batch",
                           concurrency_limit=services.config.concurrency)
    return demo
