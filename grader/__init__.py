"""L2 spoken-English grader: a speech (LLM) backbone with LoRA, regression and classification heads.

The front door, from a recording to a grade (what the app, `grader.predict` and `grader.evaluate` all call):

    from grader import Grader
    grader = Grader.load()                      # the shipped checkpoint, or Grader.load("runs/my-grader")
    assessment = grader.assess("answer.flac", "the sentence that was read")
    assessment.gate, assessment.prediction, assessment.review, assessment.to_dict()

Wings: `grader.audio` (decode, gate, voice activity, trim), `grader.backbones` (Whisper, Qwen2-Audio, weights),
`grader.model` (LoRA, heads, objectives, checkpoints), `grader.review` and `grader.reference` (why to review a
grade), `grader.evidence` (transcript, fluency, reference words).
Command lines: `python -m grader.train | evaluate | predict | compare`.
"""

from .audio import SAMPLE_RATE, AudioError, AudioLimits, GateConfig, GateResult, check_audio, inspect_file, load_audio
from .evidence import build_evidence
from .inference import DEFAULT_CHECKPOINT, AspectScore, AssessOptions, Assessment, Grader, Prediction
from .model import GraderModel, ModelConfig
from .review import Review
from .scale import SCALES, ScoreScale, get_scale

__all__ = ["DEFAULT_CHECKPOINT", "SAMPLE_RATE", "SCALES", "AspectScore", "AssessOptions", "Assessment", "AudioError",
           "AudioLimits", "GateConfig", "GateResult", "Grader", "GraderModel", "ModelConfig", "Prediction", "Review",
           "ScoreScale", "build_evidence", "check_audio", "get_scale", "inspect_file", "load_audio"]
