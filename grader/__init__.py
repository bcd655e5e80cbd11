"""L2 spoken-English grader: a speech (LLM) backbone with LoRA, regression and classification heads.

The front door, from audio to scores:

    from grader import Grader, load_audio
    grader = Grader.load()                      # the shipped checkpoint, or Grader.load("runs/my-grader")
    prediction = grader.grade(load_audio("answer.flac"), "the sentence that was read")

Wings: `grader.audio` (decode, gate, voice activity), `grader.backbones` (Whisper, Qwen2-Audio, weights),
`grader.model` (LoRA, heads, objectives, checkpoints), `grader.evidence` (transcript, fluency, reference words).
Command lines: `python -m grader.train | evaluate | predict | compare`.
"""

from .audio import SAMPLE_RATE, AudioError, AudioLimits, GateConfig, GateResult, check_audio, inspect_file, load_audio
from .evidence import build_evidence
from .inference import DEFAULT_CHECKPOINT, AspectScore, Grader, Prediction
from .model import GraderModel, ModelConfig
from .scale import SCALES, ScoreScale, get_scale

__all__ = ["DEFAULT_CHECKPOINT", "SAMPLE_RATE", "SCALES", "AspectScore", "AudioError", "AudioLimits", "GateConfig",
           "GateResult", "Grader", "GraderModel", "ModelConfig", "Prediction", "ScoreScale", "build_evidence",
           "check_audio", "get_scale", "inspect_file", "load_audio"]
