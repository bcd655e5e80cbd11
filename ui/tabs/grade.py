"""The Grade tab: record or upload, the score card and distribution, the evidence panel, the examiner's decision."""

from collections.abc import Callable
from pathlib import Path

import gradio as gr

from .. import callbacks as cb
from ..cards import result_card
from ..callbacks import Services

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def build(services: Services, who: Callable[[gr.Request | None, str], str], role: Callable[[gr.Request | None], str],
          auth: bool) -> tuple[gr.Number, gr.events.Dependency]:
    """Returns the grade # and the grade event, for ui/app.py: under blind marking a grade opens in the Review tab,
    since this tab never shows the model's result before a mark."""
    grader = services.grader
    blind = services.config.blind
    scale = grader.scale if grader else None
    with gr.Row():
        with gr.Column(scale=2):
            audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Spoken response",
                             elem_id="audio-input")
            if any(EXAMPLES.glob("*.flac")):
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
    with gr.Group(elem_id="evidence-panel", visible=not blind):
        gr.Markdown("### Evidence")
        evidence_panel = gr.HTML(elem_id="evidence")
        timeline = gr.Plot(label="Timeline", show_label=False, elem_id="timeline")
        with gr.Row():
            # Custom values: a script sends the word's index, which the choices (empty until evidence) would refuse.
            word_pick = gr.Dropdown(choices=[], label="Play a word of the transcript", scale=2, elem_id="word-pick",
                                    allow_custom_value=True)
            word_clip = gr.Audio(label="Word", type="numpy", interactive=False, scale=3, elem_id="word-audio")
        with gr.Accordion("Evidence as JSON", open=False):
            evidence_json = gr.JSON(label="evidence")
        evidence_state = gr.State(time_to_live=cb.EVIDENCE_TTL_S)  # it holds the audio: not for the session's life
        graded_state = gr.State()  # the grade just made: its decoded audio and speech go on to the evidence
    with gr.Group(visible=not blind):
        gr.Markdown("### Examiner decision\nYour own score for this response; it is stored beside the model's, never "
                    "replacing it. The score is not pre-filled, so the model does not anchor your judgement.")
        with gr.Row():
            grade_id = gr.Number(label="Grade #", precision=0, interactive=False, scale=1)
            final = gr.Number(label=f"Final score ({scale.min:g}–{scale.max:g})" if scale else "Final score",
                              minimum=scale.min if scale else None, maximum=scale.max if scale else None,
                              step=scale.step if scale else 0.5, scale=1,
                              value=lambda: None)  # empty, not 0: a plain None is shown as 0 (gradio#6728)
            verdict = gr.Radio(list(cb.AGREEMENTS), label="Agreement with the model", scale=2)
            reason = gr.Dropdown(["", *cb.REASON_CODES], value="", label="Reason", scale=2)
        with gr.Row():
            comment = gr.Textbox(label="Comment", lines=1, scale=4)
            examiner = gr.Textbox(label="Examiner name", max_lines=1, visible=not auth, scale=1)
        save = gr.Button("Save override", variant="secondary")
        saved = gr.Markdown()

    @cb.event
    def grade(path, cand, part, text, progress=gr.Progress()):
        if not path:
            raise gr.Error("Record or upload a response first.")
        cb.check_upload(services, path)
        progress(0.05, desc="Checking the recording")
        graded = cb.grade_file(services, path, cand or "", part or "", text or "", progress=progress)
        if blind:  # nothing of the model's result leaves the server before the examiner's mark
            return (cb.blind_card(graded), None, cb.blind_json(graded), graded.grade_id,
                    None, None, "", "", "", "", None, gr.Dropdown(choices=[], value=None), None, None, None, graded)
        return (result_card(graded), cb.figure(graded), cb.result_json(graded), graded.grade_id,
                None, None, "", "", "", "", None, gr.Dropdown(choices=[], value=None), None, None, None, graded)

    @cb.event
    def evidence(graded):
        found = cb.evidence_for(services, graded)
        if blind:  # stored for the Review tab, shown there once the mark is saved
            return "", None, gr.Dropdown(choices=[], value=None), None, None
        return *cb.evidence_outputs(found), found

    # The evidence follows a successful grade as its own event, so the score shows first; both hold the model.
    graded_event = grade_button.click(
        grade, [audio, candidate, task_part, prompt],
        [card, chart, raw, grade_id, final, verdict, reason, comment, saved,
         evidence_panel, timeline, word_pick, word_clip, evidence_json, evidence_state, graded_state],
        api_name="grade", concurrency_limit=services.config.concurrency, concurrency_id="model")
    graded_event.success(evidence, [graded_state], [evidence_panel, timeline, word_pick, evidence_json,
                                                    evidence_state],
                         api_name="evidence", concurrency_limit=services.config.concurrency, concurrency_id="model")
    @cb.event
    def word_audio(found, index):
        if blind:
            raise gr.Error("Under blind marking the evidence, words too, is shown in the Review tab once your mark "
                           "is saved.")
        return cb.word_audio(found, index)

    word_pick.change(word_audio, [evidence_state, word_pick], word_clip, api_name="word_audio")

    @cb.event
    def override(rid, score, agree, code, text, name, request: gr.Request):
        if blind:
            raise gr.Error("Under blind marking, marks are entered in the Review tab (API: /review, then /mark), "
                           "where the model's result appears once your mark is saved.")
        return cb.save_override(services, rid, score, agree, code, text, who(request, name), role(request))

    # Raw values (preprocess=False): a client's "abc" as the grade # gets save_override's message, not a
    # preprocessing traceback with no message.
    save.click(override, [grade_id, final, verdict, reason, comment, examiner], saved, api_name="override",
               preprocess=False)
    return grade_id, graded_event
