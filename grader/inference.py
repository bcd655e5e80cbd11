"""Running a grader over audio: batched encoding, scoring, and the `Grader` the app and CLIs use.

`Grader.assess` (and `assess_batch`) is the front door every caller uses, the web app, `grader.predict`,
`grader.evaluate` and the benchmarks: a recording in; decode, gate, trim, model, review reasons and CEFR band out,
as one `Assessment`.
"""

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio import TRIM_MARGIN_S, AudioLimits, GateConfig, GateResult, SpeechSegment, check_audio, inspect_file
from .audio import trim_to_speech
from .backbones import AudioStates, BackboneConfig, WhisperBackbone
from .backbones.whisper import adapters_off
from .channel import ChannelProbe, ChannelReading
from .data import length_batches
from .ensemble import check_members, mean_decoded
from .model import Decoded, decode
from .model import GraderModel, LoraOptions, ModelConfig, checkpoint_fingerprint, read_checkpoint_info
from .probe import ScoreProbe
from .reference import ReferenceMatch, check_texts, checkable
from .review import Review, review_reasons
from .scale import ScoreScale
from .stretch import read_stretches, stretch_decoded

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO / "checkpoints" / "default"
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
log = logging.getLogger(__name__)
ZERO_SHOT_NOTE = ("zero-shot grade: an instruction-tuned speech LLM's answer to the score prompt, never trained on "
                  "human scores, so it is uncalibrated: not comparable with a trained grader's scores or with "
                  "examiners' marks until measured against them")
# What a zero-shot grader scores on each scale when not told: the shipped grader's aspects.
ZERO_SHOT_ASPECTS = {"speechocean762": ["total", "accuracy", "fluency", "prosodic"], "sandi": ["total"]}


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products run in hardware: any CUDA GPU torch can use, or a CPU with AVX-512 BF16 or AMX.
    Elsewhere torch emulates bf16, which graded 3-6x slower than fp32 on an AVX2-only CPU (benchmarks/README.md)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def autocast(model: GraderModel, dtype: torch.dtype | None):
    """Mixed precision for the model's matrix products (faster where bf16 is native: see `native_bf16`); a no-op
    for dtype None. Wraps the network only: the log-mel features are computed before it, in fp32."""
    return torch.autocast(model.backbone.device.type, dtype=dtype) if dtype else nullcontext()


@torch.inference_mode()
def encode_with_summaries(model: GraderModel, audios: list[np.ndarray], batch_size: int = 16,
                          precision: torch.dtype | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """Audio encoder outputs, one (frames, dim) tensor per response, batched by length, and each response's summary
    of the encoder's layers (`AudioStates.summary`; None where the backbone gives none)."""
    states: list[torch.Tensor] = [torch.empty(0)] * len(audios)
    summaries: list[torch.Tensor | None] = [None] * len(audios)
    for batch in length_batches([len(a) for a in audios], batch_size):
        features = model.backbone.features([audios[i] for i in batch])
        with autocast(model, precision):
            encoded = model.backbone.encode(features)
        for row, (i, s) in enumerate(zip(batch, encoded.unbatch())):
            states[i] = s
            summaries[i] = None if encoded.summary is None else encoded.summary[row].float()
    return states, summaries


def encode_audios(model: GraderModel, audios: list[np.ndarray], batch_size: int = 16,
                  precision: torch.dtype | None = None) -> list[torch.Tensor]:
    """Audio encoder outputs, one (frames, dim) tensor per response, batched by length."""
    return encode_with_summaries(model, audios, batch_size, precision)[0]


@torch.inference_mode()
def score_states(model: GraderModel, states: list[torch.Tensor], prompts: list[str | None],
                 batch_size: int = 32, precision: torch.dtype | None = None) -> Decoded:
    """Decoded scores for each response's encoder states, in input order."""
    parts: dict[int, Decoded] = {}
    for batch in length_batches([len(s) for s in states], batch_size):
        audio = AudioStates.batch([states[i] for i in batch]).to(model.backbone.device)
        with autocast(model, precision):
            outputs = model(audio, [prompts[i] for i in batch])
        decoded = decode(outputs, model.scale)
        for row, i in enumerate(batch):
            parts[i] = Decoded(*(t[row] for t in (decoded.regression, decoded.probs, decoded.hard, decoded.soft)),
                               words=[decoded.words[row]] if decoded.words is not None else None)
    ordered = [parts[i] for i in range(len(states))]
    words = [d.words[0] for d in ordered] if model.word_heads is not None else None
    return Decoded(*(torch.stack([getattr(d, f) for d in ordered]) for f in ("regression", "probs", "hard", "soft")),
                   words=words)


@dataclass
class AspectScore:
    regression: float  # the regression head, clamped to the scale
    soft: float  # expectation under the class distribution
    hard: float  # the most probable class
    probs: list[float]  # one per class of the scale, ascending


@dataclass
class Prediction:
    scores: dict[str, AspectScore]  # by aspect, headline first
    scale: ScoreScale
    checkpoint: str
    latency_s: float = 0.0
    # Per reference word, in text order: {"word", "accuracy", "total", ...} (the checkpoint's word aspects);
    # empty with `words_note` saying why (no reference text, or a checkpoint without word heads).
    words: list[dict] = field(default_factory=list)
    words_note: str | None = None
    uncalibrated: bool = False  # a zero-shot grade (Grader.zero_shot): see ZERO_SHOT_NOTE
    stretch: float | None = None  # the strength of the checkpoint's stretch (grader.stretch), if it has one
    blended: list[str] = field(default_factory=list)  # the aspects blended with the checkpoint's score probe
    blended_text: bool = False  # the blend weighed what this answer's reference text tells (grader.probe)

    @property
    def headline(self) -> str:
        return next(iter(self.scores))

    @property
    def cefr(self) -> str | None:
        """The CEFR band of the headline soft score, on scales that have bands."""
        return self.scale.cefr_band(self.scores[self.headline].soft)

    def to_dict(self) -> dict:
        return {"checkpoint": self.checkpoint, "scale": self.scale.name, "latency_s": round(self.latency_s, 4),
                "cefr": self.cefr,
                "scores": {k: {"regression": round(v.regression, 3), "soft": round(v.soft, 3), "hard": v.hard,
                               "probs": [round(p, 4) for p in v.probs]} for k, v in self.scores.items()},
                "words": self.words} | ({"words_note": self.words_note} if self.words_note else {}) | (
                    {"stretch": self.stretch} if self.stretch else {}) | (
                    {"blended": self.blended, "blended_text": self.blended_text} if self.blended else {}) | (
                    {"uncalibrated": True, "note": ZERO_SHOT_NOTE} if self.uncalibrated else {})


def word_aspects(members: list[GraderModel]) -> list[str]:
    """The word-level scores an ensemble gives: its members' with word heads (grader.ensemble keeps them alike)."""
    return next((m.config.word_aspects for m in members if m.word_heads is not None), [])


class Grader:
    """A loaded checkpoint, ready to grade 16-kHz audio. Load once per process: loading takes seconds."""

    def __init__(self, model: GraderModel, checkpoint_id: str, info: dict, precision: str = "fp32",
                 members: list[GraderModel] | None = None, channel: ChannelProbe | None = None,
                 probe: ScoreProbe | None = None):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.model = model  # encodes the audio, and its Whisper gives the transcript and the reference check
        self.members = members or [model]  # an ensemble (grader.ensemble) scores with each on model's encoding
        self.checkpoint_id = checkpoint_id
        self.info = info
        self.probe = probe  # grader.probe: blended with the members' scores, before the stretch; None: off
        self.stretches = read_stretches(info, model.config.aspects)  # grader.stretch; None: scores as trained
        self.precision = PRECISIONS[precision]
        self.channel = channel  # grader.channel: tells a reverberant recording from the encoder's states; None: off
        # Held while grading and while the adapters are off (`stock_whisper`): the adapters are state of the one
        # shared model, and Gradio runs events in threads.
        self.lock = threading.Lock()

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, device: str | None = None, threads: int = 0,
             precision: str = "fp32", pad_to_30s: bool = False) -> "Grader":
        """`precision` "bf16" runs the network under autocast (scores move by a few hundredths; see
        benchmarks/); `pad_to_30s` feeds the encoder stock 30-s windows, the naive path, for comparison."""
        folder = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
        if not (folder / "grader.json").is_file():
            hint = "" if checkpoint else " (the default checkpoint ships with the repo; is this a full clone?)"
            raise FileNotFoundError(f"no grader checkpoint at {folder}{hint}. Train one with "
                                    f"`python -m grader.train` or pass --checkpoint DIR.")
        if threads:
            torch.set_num_threads(threads)
        info = read_checkpoint_info(folder)
        overrides = {"pad_to_30s": True} if pad_to_30s else {}
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        members = [GraderModel.load(folder / name, device, **overrides) for name in info.get("members", [])]
        if members:
            check_members(members)
        model = members[0] if members else GraderModel.load(folder, device, **overrides)
        device = model.backbone.device
        if precision == "bf16" and not native_bf16(device):
            hardware = (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
            log.warning("precision bf16 on %s without native bfloat16 (%s): torch emulates it, so grading is "
                        "several times slower than fp32; use fp32 here", device, hardware)
        frozen = not model.audio_encoder_trainable  # the probes read the frozen encoder's states
        channel = ChannelProbe.load(folder) if frozen else None
        probe = ScoreProbe.load(folder, model.config.aspects, word_aspects(members or [model])) if frozen else None
        checkpoint_id = f"{info.get('checkpoint_id', folder.name)}@{checkpoint_fingerprint(folder)}"
        return cls(model, checkpoint_id, info, precision, members, channel, probe)

    @classmethod
    def zero_shot(cls, model: str, scale: str = "speechocean762", aspects: list[str] | None = None,
                  device: str | None = None, threads: int = 0, precision: str = "fp32",
                  dtype: str | None = None) -> "Grader":
        """A grader without a checkpoint: an instruction-tuned speech LLM (`model`: Qwen/Qwen2-Audio-7B-Instruct, a
        hub id or a local folder) asked the score-token prompt (grader.model.answer_prompt); the grade is its
        distribution over the option letters. Nothing is trained, so every prediction says it is uncalibrated.
        `dtype` of the weights: default bfloat16 on a GPU (15.7 GiB for the 7B), float32 on a CPU."""
        if threads:
            torch.set_num_threads(threads)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or ("bfloat16" if device.type == "cuda" else "float32")
        backbone = BackboneConfig("qwen2-audio", model, dtype=dtype)
        config = ModelConfig(backbone=backbone, lora=LoraOptions(rank=0), scale=scale, objective="fa", head="tokens",
                             aspects=aspects or ZERO_SHOT_ASPECTS.get(scale, ["total"]))
        grader = cls(GraderModel(config).to(device).eval(), f"zero-shot:{model}",
                     {"zero_shot": True, "model": asdict(config)}, precision)
        log.warning("grading zero-shot with %s (%s, %s): %s", model, scale, ", ".join(config.aspects), ZERO_SHOT_NOTE)
        return grader

    @property
    def uncalibrated(self) -> bool:
        """A zero-shot grader: no human score ever tuned it."""
        return bool(self.info.get("zero_shot"))

    @property
    def scale(self) -> ScoreScale:
        return self.model.scale

    @property
    def aspects(self) -> list[str]:
        return self.model.config.aspects

    @property
    def uses_text(self) -> bool:
        return self.model.config.use_text

    @property
    def word_aspects(self) -> list[str]:
        """The word-level scores the grader gives (empty: no member has word heads)."""
        return word_aspects(self.members)

    def assess(self, recording: str | Path | np.ndarray, reference_text: str | None = None,
               options: "AssessOptions | None" = None) -> "Assessment":
        """Grade one recording (a file, or 16-kHz mono audio as `load_audio` returns it) the way every caller
        does: see `assess_batch`."""
        return self.assess_batch([recording], [reference_text], options)[0]

    def assess_batch(self, recordings: list[str | Path | np.ndarray], reference_texts: list[str | None] | None = None,
                     options: "AssessOptions | None" = None, batch_size: int = 16) -> list["Assessment"]:
        """Decode and gate each recording; grade the scorable ones, batched, on their speech (`trim_to_speech`,
        with the VAD segments the gate found); check each against its reference text (`grader.reference`; an open
        answer, with none, is not checked); and say why an examiner should review it (`grader.review`)."""
        options = options or AssessOptions()
        texts = [(t or "").strip() or None for t in reference_texts or [None] * len(recordings)]
        out = []
        for recording in recordings:
            start = time.perf_counter()
            if isinstance(recording, np.ndarray):
                audio, gate = recording, check_audio(recording, options.gate)
            else:
                audio, gate = inspect_file(recording, options.limits, options.gate)
            out.append(Assessment(gate, audio=audio, timings={"decode_gate": time.perf_counter() - start}))
        scorable = [i for i, a in enumerate(out) if a.scorable]
        if not scorable:
            return out
        heard = [out[i].audio if options.trim_margin_s is None else
                 trim_to_speech(out[i].audio, list(out[i].gate.speech), options.trim_margin_s) for i in scorable]
        graded = self._grade_batch(heard, [texts[i] for i in scorable], batch_size)
        for k, i in enumerate(scorable):
            a = out[i]
            a.prediction, a.reference, a.reference_text = graded.predictions[k], graded.references[k], texts[i]
            a.channel = self.channel.read(graded.states[k]) if self.channel else None
            a.review = review_reasons(a.prediction, a.reference, a.gate.measures, a.channel)
            a.timings |= graded.timings
        return out

    @contextmanager
    def stock_whisper(self) -> Iterator[WhisperBackbone | None]:
        """The grader's Whisper as OpenAI trained it, every LoRA adapter off, for the transcript and the reference
        check (None for a backbone without a Whisper decoder). No grade runs meanwhile: the lock is held, and the
        adapters are back on when the block ends, however it ends."""
        whisper = self.model.backbone
        if not isinstance(whisper, WhisperBackbone):
            yield None
            return
        with self.lock, adapters_off(whisper.model):
            yield whisper

    def grade(self, audio: np.ndarray, prompt: str | None = None) -> Prediction:
        """The model alone on audio as given: no gate, no trim, no review (`assess` does all of them)."""
        return self.grade_batch([audio], [prompt])[0]

    def grade_batch(self, audios: list[np.ndarray], prompts: list[str | None] | None = None,
                    batch_size: int = 16) -> list[Prediction]:
        return self._grade_batch(audios, prompts or [None] * len(audios), batch_size).predictions

    def _grade_batch(self, audios: list[np.ndarray], texts: list[str | None], batch_size: int) -> "GradedBatch":
        """Encode, score with every member, check each answer against its reference text (`grader.reference`), blend
        with the score probe and stretch. An answer that does not read its text (`ReferenceMatch.mismatch`) is
        blended as one without a text: its word scores are not scores of words it spoke, and the blend was fitted on
        answers that read their text; the members, taught such answers (`grader.train --mismatch`), score it at the
        bottom of the scale."""
        start = time.perf_counter()
        prompts = texts if self.uses_text else [None] * len(audios)
        with self.lock:
            states, summaries = encode_with_summaries(self.model, audios, batch_size, self.precision)
            decoded = mean_decoded([score_states(m, states, prompts, batch_size, self.precision)
                                    for m in self.members], self.scale.values)
        model_s = time.perf_counter() - start
        start = time.perf_counter()
        references = self._check_references(audios, states, texts, batch_size)
        reference_s = time.perf_counter() - start
        read = [None if r and r.mismatch else r for r in references]  # the checks the blend may read
        if self.probe:
            decoded = self.probe.blended(decoded, summaries, self.scale, read)
        if self.stretches:
            decoded = stretch_decoded(decoded, self.stretches, self.scale)
        latency = (model_s + reference_s) / max(len(audios), 1)
        predictions = [self._prediction(decoded, i, latency, prompts[i], read[i]) for i in range(len(audios))]
        return GradedBatch(predictions, states, references, {"model": model_s / max(len(audios), 1),
                                                             "reference": reference_s / max(len(audios), 1)})

    def _check_references(self, audios: list[np.ndarray], states: list[torch.Tensor], texts: list[str | None],
                          batch_size: int) -> list[ReferenceMatch | None]:
        """Each answer's reference check; None for an open answer (no text) or a backbone without Whisper's decoder."""
        checked = checkable(texts)
        if not checked:
            return [None] * len(texts)
        with self.stock_whisper() as whisper:
            if whisper is None:
                return [None] * len(texts)
            if self.model.audio_encoder_trainable:  # LoRA in the encoder: stock Whisper hears it afresh
                states = dict(zip(checked, encode_audios(self.model, [audios[k] for k in checked], batch_size,
                                                         self.precision)))
            return check_texts(whisper, states, texts, batch_size)

    def _prediction(self, decoded: Decoded, i: int, latency: float, prompt: str | None = None,
                    reference: ReferenceMatch | None = None) -> Prediction:
        """The i-th response's prediction; `reference`: the reference check the probe's blend read (None: none)."""
        scores = {aspect: AspectScore(float(decoded.regression[i, a]), float(decoded.soft[i, a]),
                                      float(decoded.hard[i, a]), decoded.probs[i, a].tolist())
                  for a, aspect in enumerate(self.aspects)}
        words, note = [], None
        if decoded.words is None:
            note = "this checkpoint has no word heads (train with --word-scores words.tsv --word-target accuracy,total)"
        elif decoded.words[i] is None:
            note = "word scores need a reference text: give the sentence the candidate read"
        else:
            words = [{"word": word, **{a: round(float(v), 2) for a, v in zip(self.word_aspects, row)}}
                     for word, row in zip(prompt.split(), decoded.words[i].tolist())]
        scored = decoded.words[i] if decoded.words else None
        return Prediction(scores, self.scale, self.checkpoint_id, latency, words, note, uncalibrated=self.uncalibrated,
                          stretch=self.info["stretch"]["strength"] if self.stretches else None,
                          blended=self.probe.blended_aspects(scored, reference) if self.probe else [],
                          blended_text=bool(self.probe and self.probe.reads_text(scored, reference)))


@dataclass
class GradedBatch:
    """What `Grader._grade_batch` gives, per answer: the prediction, the encoder states it was made from (the
    channel probe reads them), the reference check (None: not checked), and the seconds per answer that the model
    and the check took."""

    predictions: list[Prediction]
    states: list[torch.Tensor]
    references: list[ReferenceMatch | None]
    timings: dict[str, float]


@dataclass(frozen=True)
class AssessOptions:
    """How a recording reaches the model."""

    limits: AudioLimits = field(default_factory=AudioLimits)  # what the decoder accepts
    gate: GateConfig = field(default_factory=GateConfig)  # what the gate grades
    trim_margin_s: float | None = TRIM_MARGIN_S  # speech kept with this margin; None: the whole recording, for
    # comparison with grading before trimming (benchmarks/bench_robustness.py --no-trim)


@dataclass
class Assessment:
    """One recording through the front door. Refused by the gate: no prediction, and the gate says why."""

    gate: GateResult
    prediction: Prediction | None = None
    review: list[Review] = field(default_factory=list)
    reference: ReferenceMatch | None = None  # words of the reference text found; None: not checked (no text)
    reference_text: str | None = None
    channel: ChannelReading | None = None  # the checkpoint's channel probe on the graded audio; None: it has none
    audio: np.ndarray | None = None  # the decoded recording, whole (None: it could not be read)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per response: decode_gate, model, reference

    @property
    def scorable(self) -> bool:
        return self.gate.scorable

    @property
    def speech(self) -> list[SpeechSegment]:
        """What the VAD heard, in seconds of `audio`: the evidence step is handed these."""
        return list(self.gate.speech)

    def to_dict(self) -> dict:
        """The result as scripts get it: from the app's `grade` API and from `grader.predict`, alike."""
        out = {"scorable": self.scorable, "gate_code": self.gate.code, "gate_reason": self.gate.reason}
        if self.prediction:
            out |= self.prediction.to_dict() | {"review": [r.to_dict() for r in self.review],
                                                "reference": self.reference.to_dict() if self.reference else None,
                                                "channel": self.channel.to_dict() if self.channel else None}
        return out
