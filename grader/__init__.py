"""L2 spoken-English grader: a speech (LLM) backbone with LoRA, regression and classification heads.

The front door, from a recording to a grade (what the app, `grader.predict` and `grader.evaluate` all call):

    from grader import Grader
    grader = Grader.load()                      # the shipped checkpoint, or Grader.load("runs/my-grader")
    assessment = grader.assess("answer.flac", "the sentence that was read")
    assessment.gate, assessment.prediction, assessment.review, assessment.to_dict()

Wings: `grader.audio` (decode, gate, voice activity, trim), `grader.backbones` (Whisper, Qwen2-Audio, weights),
`grader.model` (LoRA, heads, objectives, checkpoints), `grader.review` and `grader.reference` (why to review a
grade), `grader.evidence` (transcript, fluency, reference words).
Command lines: `python -m grader.train | evaluate | predict | compare | report | ensemble | stretch | channel | merge`.
"""

import importlib

_HOMES = {  # each public name and the module that owns it; imported when first asked for, so that `python -m
    # grader.stretch` (or any module the front door imports) does not run a module the package already imported
    "SAMPLE_RATE": "audio", "AudioError": "audio", "AudioLimits": "audio", "GateConfig": "audio",
    "GateResult": "audio", "check_audio": "audio", "inspect_file": "audio", "load_audio": "audio",
    "build_evidence": "evidence",
    "DEFAULT_CHECKPOINT": "inference", "AspectScore": "inference", "AssessOptions": "inference",
    "Assessment": "inference", "Grader": "inference", "Prediction": "inference",
    "GraderModel": "model", "ModelConfig": "model",
    "Review": "review",
    "SCALES": "scale", "ScoreScale": "scale", "get_scale": "scale",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'grader' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
