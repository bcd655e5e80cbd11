"""Train a grader: LoRA on the backbone plus regression and classification heads.

    python -m grader.train --manifest ../shared/data/speechocean762-train/labels.tsv \
        --target total --backbone whisper --model tiny.en --objective fa+reg --dev-speakers 25 --out runs/base

When LoRA leaves the audio encoder frozen (the default scope "text"), its outputs are computed once and
cached, so each epoch costs only the decoder/LLM and the heads. `--augment-views K` caches K perturbed
recordings of each clip too (grader.augment: view v through channel v of its CHANNELS, noise, room, telephone,
codec, clean, with random room tone and gain; trimmed as the app trims) and each epoch draws one of the clip's K+1
views, so the model learns to ignore the channel at no extra cost per epoch; `--consistency W` instead pairs each
clean recording with a perturbed view: the labels teach the clean one, and the perturbed one learns only to score
as its clean twin (as TRADES does for adversarial robustness), so the clean task is trained as without it. With
LoRA on the encoder the views are kept as recordings and encoded every step.

`--folds K` cross-validates by speaker instead: one model per fold on the other folds' speakers (the encoder
cache shared), out-of-fold predictions for every response (`oof.tsv`, `oof_words.tsv`) and their metrics, band
table and review-flag figures (`cv.json`, `grader.report`), as one would expect on unseen speakers:

    python -m grader.train --manifest ../shared/data/speechocean762-train/labels.tsv \
        --target total,accuracy,fluency,prosodic --epochs 3 --folds 5 --out runs/cv-base

On GPUs the same command trains on the device `accelerate` gives each process; data-parallel over several GPUs:

    accelerate launch --num_processes 4 -m grader.train ... --backbone qwen2-audio --dtype bfloat16 \
        --precision bf16 --gradient-checkpointing

(each process takes every Nth length-bucketed batch; only the main process writes checkpoints and reports).
DeepSpeed ZeRO-2 for 7B LoRA on smaller cards: configs/accelerate-zero2.yaml (see configs/README.md).
"""

import hashlib
import json
import math
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs, PartialState
from tqdm import tqdm

from .audio import SAMPLE_RATE, load_audio, trim_to_speech
from .augment import CHANNELS, RECIPE, augment
from .backbones import AudioStates
from .data import (Response, WordScores, length_batches, rater_mean_scores, read_manifest,
                   read_speak_and_improve, read_word_scores, speaker_folds, split_by_speaker)
from .inference import PRECISIONS, autocast, encode_audios, encode_with_summaries, score_states
from .metrics import score_metrics
from .model import (Decoded, GraderModel, ModelConfig, consistency_loss, label_weights, parse_objective, score_loss,
                    word_loss)
from .options import comma_ints, comma_list, parse_options
from .report import print_crossval, write_crossval


@dataclass
class TrainConfig:
    """Train a grader (Ma et al. 2025 recipe) and keep the checkpoint that scores best on dev."""

    manifest: str = field(default="", metadata={"help": "TSV/CSV manifest, or a Speak & Improve root with --sandi"})
    sandi: bool = field(default=False, metadata={"help": "read --manifest as a Speak & Improve 2025 release"})
    dev_manifest: str | None = None
    rater_scores: str | None = field(default=None, metadata={
        "help": "raters.tsv: train on each response's mean rater score (the fair average), not its label; "
                "dev is still measured against the labels"})
    rater_aspects: list[str] = field(default_factory=list, metadata={
        "parse": comma_list,
        "help": "with --rater-scores: only these aspects learn the raters' mean (e.g. fluency,prosodic, whose labels "
                "are the raters' median), the others their labels; empty: every aspect"})
    dev_speakers: int = field(default=25, metadata={
        "help": "speakers held out for dev when no --dev-manifest; 0 trains on all and keeps the last epoch"})
    folds: int = field(default=0, metadata={
        "help": "k-fold cross-validation by speaker over the whole manifest (one model per fold, its last epoch): "
                "out-of-fold predictions and metrics in --out; 0: off"})
    run_folds: list[int] = field(default_factory=list, metadata={
        "parse": comma_ints,
        "help": "run only these folds of --folds (e.g. 0,1): a cheaper paired comparison, whose out-of-fold "
                "figures cover those folds' speakers (compare with `grader.report --folds 0,1`); empty: all"})
    model: ModelConfig = field(default_factory=ModelConfig)
    reweight: float = field(default=0.0, metadata={
        "help": "weight each response's loss by its score's smoothed label density ^ -POWER (0.5: inverse square "
                "root), so rare scores count more; 0: off"})
    word_scores: str | None = field(default=None, metadata={
        "help": "words.tsv: train the word heads (--word-target) on the experts' word scores"})
    word_weight: float = field(default=1.0, metadata={"help": "weight of the word loss beside the sentence loss"})
    text_dropout: float = field(default=0.3, metadata={"help": "train without the text this often"})
    mismatch: float = field(default=0.0, metadata={
        "help": "this share of the answers read with a reference text is read with another answer's text instead, "
                "accuracy and total taught as the scale's floor (the asked sentence was not read; fluency and prosody "
                "keep their labels, the word heads learn nothing from it), so the score depends on the answer "
                "reading its task; 0: off"})
    augment_views: int = field(default=0, metadata={
        "help": "cache this many perturbed recordings of each clip (grader.augment, seeded by --seed; view v goes "
                "through channel v of grader.augment.CHANNELS: noise, room, telephone, codec, clean); each epoch "
                "trains on one of its views, clean or perturbed; 0: clean only"})
    consistency: float = field(default=0.0, metadata={
        "help": "with --augment-views: pair every batch's clean recordings with one perturbed view of each; the "
                "labels teach the clean ones, and this weight times the squared change of the perturbed scores from "
                "the clean ones (in class steps, the clean side held fixed) teaches the perturbed ones, so the score "
                "learns to ignore the channel; twice the cost per epoch; 0: off"})
    epochs: int = 6
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.06
    seed: int = 0
    threads: int = 0
    limit: int = field(default=0, metadata={"help": "use only the first N responses (smoke tests)"})
    cache_dir: str | None = field(default="runs/cache", metadata={
        "help": "keep frozen-encoder outputs here between runs (keyed by backbone and audio path); empty: off"})
    out: str = "runs/grader"
    resume: bool = False
    precision: str = field(default="fp32", metadata={
        "help": "fp32, or bf16: autocast the trained forward pass (GPUs; with --dtype bfloat16 the frozen weights "
                "are bf16 already, LoRA and heads stay fp32)"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute each layer's activations in the backward pass: far less memory for long answers and "
                "big batches, about a third slower"})

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch size must be at least 1 (got {self.epochs} and {self.batch_size})")
        if not 0 <= self.text_dropout <= 1 or not 0 <= self.mismatch <= 1 or not 0 <= self.warmup < 1:
            raise ValueError("text dropout and mismatch must lie in [0, 1] and warmup (a share of the steps) in [0, 1)")
        if min(self.dev_speakers, self.limit, self.folds, self.reweight, self.augment_views, self.consistency) < 0:
            raise ValueError("dev speakers, limit, folds, reweight, augment views and consistency cannot be negative")
        if self.consistency and not self.augment_views:
            raise ValueError("--consistency compares clean and perturbed recordings: it needs --augment-views")
        if any(not 0 <= k < self.folds for k in self.run_folds):
            raise ValueError(f"--run-folds must name folds 0..{self.folds - 1} of --folds, not {self.run_folds}")
        if self.folds and (self.sandi or self.dev_manifest):
            raise ValueError("--folds cross-validates one manifest by speaker: no --sandi or --dev-manifest")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.rater_aspects and (not self.rater_scores or not set(self.rater_aspects) <= set(self.model.aspects)):
            raise ValueError(f"--rater-aspects needs --rater-scores and names aspects of --target, not "
                             f"{self.rater_aspects}")
        if bool(self.word_scores) != bool(self.model.word_aspects):
            raise ValueError("word heads need both --word-scores (the experts' word scores) and --word-target")


def load_responses(config: TrainConfig) -> tuple[list[Response], list[Response]]:
    targets = config.model.aspects
    if config.sandi:
        train = read_speak_and_improve(config.manifest, "train", target=targets[0])
        dev = read_speak_and_improve(config.dev_manifest or config.manifest, "dev", target=targets[0])
        return train, dev
    responses = read_manifest(config.manifest, targets)[: config.limit or None]
    if config.dev_manifest:
        train, dev = responses, read_manifest(config.dev_manifest, targets)
    elif config.dev_speakers == 0 or config.folds:  # train on everything (folds make their own dev sets)
        train, dev = responses, []
    else:
        train, dev = split_by_speaker(responses, config.dev_speakers, config.seed)
    return with_rater_means(config, train), dev


def with_rater_means(config: TrainConfig, responses: list[Response]) -> list[Response]:
    """The training targets: each response's labels, or its raters' mean with --rater-scores (on --rater-aspects)."""
    if not config.rater_scores:
        return responses
    return rater_mean_scores(config.rater_scores, responses, config.rater_aspects or config.model.aspects)


@dataclass
class Examples:
    """Responses with what training reads of them: audio, frozen-encoder outputs, word targets."""

    responses: list[Response]
    audio: list[np.ndarray]
    states: list[torch.Tensor] | None  # None when the encoder trains (LoRA on it): no cache
    words: list[torch.Tensor | None]  # (words, word aspects) per response; None where it has no word scores
    # each response's augmented recordings: their frozen-encoder outputs, or the recordings when the encoder trains
    views: list[list[torch.Tensor | np.ndarray]] | None = None

    def take(self, rows: list[int]) -> "Examples":
        return Examples([self.responses[i] for i in rows], [self.audio[i] for i in rows],
                        None if self.states is None else [self.states[i] for i in rows], [self.words[i] for i in rows],
                        None if self.views is None else [self.views[i] for i in rows])

    def inputs(self) -> list[torch.Tensor | np.ndarray]:
        """What the model reads of each clean response: its frozen-encoder outputs, or its recording."""
        return self.audio if self.states is None else self.states

    def epoch_inputs(self, rng: random.Random) -> list[torch.Tensor | np.ndarray]:
        """Each response's input for one epoch: one of its views (clean or augmented) at random."""
        if not self.views:
            return self.inputs()
        return [rng.choice([clean, *views]) for clean, views in zip(self.inputs(), self.views)]

    def paired_inputs(self, batch: list[int], rng: random.Random) -> list[torch.Tensor | np.ndarray]:
        """A batch's clean inputs, then one augmented view of each response in the same order."""
        clean = self.inputs()
        return [clean[i] for i in batch] + [rng.choice(self.views[i]) for i in batch]


def word_targets(responses: list[Response], scores: dict[str, WordScores], aspects: list[str]) -> list:
    """Each response's word targets, where its text's words are exactly the scored words (else None)."""
    out = []
    for r in responses:
        w = scores.get(r.utt_id)
        fits = w is not None and r.text is not None and r.text.split() == w.words
        out.append(torch.tensor([w.scores[a] for a in aspects]).T.contiguous() if fits else None)
    return out


DELIVERY = ("fluency", "prosodic")  # aspects of how the answer was spoken, whatever sentence it read


def mismatched(prompts: list[str | None], words: list[torch.Tensor | None], targets: torch.Tensor, texts: list[str],
               floored: torch.Tensor, floor: float, share: float,
               rng: random.Random) -> tuple[list, list, torch.Tensor]:
    """A batch's prompts, word targets and sentence targets with `share` of its rows that have a text given
    another response's text. The answer does not read that sentence: the aspects `floored` marks (all but DELIVERY:
    accuracy and total) are taught the scale's `floor`, and fluency and prosody the answer's own labels; the word
    heads are not taught on such a row (the experts' word scores judge how a read word sounds). The train split has
    no such answer."""
    prompts, words, targets = list(prompts), list(words), targets.clone()
    for row, prompt in enumerate(prompts):
        if prompt is None or rng.random() >= share:
            continue
        prompts[row] = rng.choice([t for t in texts if t != prompt] or [prompt])
        targets[row, floored] = floor
        words[row] = None
    return prompts, words, targets


def trimmed_audio(responses: list[Response]) -> list[np.ndarray]:
    """Each response's recording trimmed to its speech, as the front door grades it."""
    return [trim_to_speech(load_audio(r.audio)) for r in tqdm(responses, desc="loading audio", leave=False)]


def recording_names(responses: list[Response], audio: list[np.ndarray]) -> list[str]:
    """The encoder caches' key of each response's (trimmed) recording: its path and length in samples."""
    return [f"{r.audio.resolve()}#{len(a)}" for r, a in zip(responses, audio)]


def prepare(config: TrainConfig, model: GraderModel, responses: list[Response]) -> Examples:
    """Load the audio, cache the frozen encoder's outputs and read the word targets, once for all folds."""
    started = time.perf_counter()
    audio = trimmed_audio(responses)
    states = views = None
    if not model.audio_encoder_trainable:
        model.eval()
        names = recording_names(responses, audio)
        with PartialState().main_process_first():  # the main process encodes and writes the cache, the others read it
            states = cached_encodings(model, names, audio.__getitem__, config.cache_dir)
            views = augmented_views(config, model, responses, names)
        print(f"encoder outputs for {len(states)} responses ({config.augment_views} augmented views each) ready "
              f"in {time.perf_counter() - started:.0f} s")
    elif config.augment_views:  # the encoder trains: keep the perturbed recordings, encoded afresh every step
        views = [[perturbed(config, r, v) for v in range(config.augment_views)]
                 for r in tqdm(responses, desc="augmenting", leave=False)]
    words = [None] * len(responses)
    if config.word_scores:
        words = word_targets(responses, read_word_scores(config.word_scores, config.model.word_aspects),
                             config.model.word_aspects)
        print(f"word scores for {sum(w is not None for w in words)} of {len(responses)} responses")
    return Examples(responses, audio, states, words, views)


def perturbed(config: TrainConfig, response: Response, v: int) -> np.ndarray:
    """View v of a response: its recording through channel v of CHANNELS (grader.augment), with settings drawn
    from (seed, v, its utt_id), so it is the same in every run and fold; trimmed after the perturbation, as a real
    recording's room tone comes before the answer."""
    rng = np.random.default_rng([config.seed, v, zlib.crc32(response.utt_id.encode())])
    return trim_to_speech(augment(load_audio(response.audio), rng, CHANNELS[v % len(CHANNELS)]))


def augmented_views(config: TrainConfig, model: GraderModel, responses: list[Response],
                    names: list[str], summaries: bool = False) -> list[list[torch.Tensor]]:
    """The frozen encoder's outputs (or, with `summaries`, their summaries) of each response's `--augment-views`
    perturbed recordings, cached; the cache names them by grader.augment.RECIPE too, so changed settings are
    encoded afresh."""
    views: list[list[torch.Tensor]] = [[] for _ in responses]
    for v in range(config.augment_views):
        encoded = cached_encodings(model, [f"{name}#augment{config.seed}.{v}.{RECIPE}" for name in names],
                                   lambda i: perturbed(config, responses[i], v), config.cache_dir,
                                   summaries=summaries)
        for i, states in enumerate(encoded):
            views[i].append(states)
    return views


def dev_metrics(decoded: Decoded, responses: list[Response], aspects: list[str], objective: str,
                words: list[torch.Tensor | None] | None = None, word_aspects: list[str] = ()) -> dict:
    """Metrics for every aspect and for each decoding the objective trained; "word/<aspect>" over every scored
    word where the model has word heads."""
    parts = parse_objective(objective)
    decodings = (["regression"] if "reg" in parts else []) + (["soft", "hard"] if {"ce", "fa"} & set(parts) else [])
    metrics = {}
    for a, aspect in enumerate(aspects):
        human = [r.scores[aspect] for r in responses]
        for name in decodings:
            metrics[f"{aspect}/{name}"] = score_metrics(getattr(decoded, name)[:, a].tolist(), human)
    pairs = [(p, t) for p, t in zip(decoded.words or [], words or []) if p is not None and t is not None]
    if pairs:
        predicted, human = (torch.cat(x) for x in zip(*pairs))
        for a, aspect in enumerate(word_aspects):
            metrics[f"word/{aspect}"] = score_metrics(predicted[:, a].tolist(), human[:, a].tolist())
    return metrics


def selection_key(metrics: dict, aspects: list[str], objective: str) -> float:
    decoding = "soft" if {"ce", "fa"} & set(parse_objective(objective)) else "regression"
    pcc = metrics[f"{aspects[0]}/{decoding}"]["pcc"]
    return -1.0 if math.isnan(pcc) else pcc


def cached_encodings(model: GraderModel, names: list[str], audio: Callable[[int], np.ndarray],
                     cache_dir: str | None, chunk: int = 256, summaries: bool = False) -> list[torch.Tensor]:
    """Frozen-encoder outputs (float16), computed once per encoder and recording and kept on disk, so comparing
    objectives or poolings, or retraining on all data, does not pay for the encoder again. `names[i]` keys
    recording i (its path and length in samples, so audio trimmed or otherwise changed in length is re-encoded);
    `audio(i)` makes it, only where the cache lacks it, `chunk` at a time. With `summaries`, each recording's
    summary of the encoder's layers (float32, grader.probe) instead, in a cache of their own."""
    key = hashlib.sha1(json.dumps(model.config.backbone.encoder_settings, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"{'summary' if summaries else 'encoder'}-{key}.pt" if cache_dir else None
    store: dict[str, torch.Tensor] = torch.load(path) if path and path.is_file() else {}
    todo = [i for i, name in enumerate(names) if name not in store]
    if todo:
        for start in tqdm(range(0, len(todo), chunk), desc=f"encoding {len(todo)} recordings", leave=False):
            rows = todo[start: start + chunk]
            states, summary = encode_with_summaries(model, [audio(i) for i in rows])
            for i, x in zip(rows, summary if summaries else states):
                store[names[i]] = x if summaries else x.to(torch.float16)
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(store, path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)
    return [store[name] for name in names]


def batch_audio(model: GraderModel, inputs: list[torch.Tensor | np.ndarray]) -> AudioStates:
    """A batch's encoder outputs: cached frozen-encoder outputs as they are, recordings through the encoder."""
    if isinstance(inputs[0], torch.Tensor):
        return AudioStates.batch([s.float() for s in inputs]).to(model.backbone.device)
    return model.backbone.encode(model.backbone.features(inputs))


def train_step(model: GraderModel, audio: AudioStates, prompts: list[str | None], targets: torch.Tensor,
               optimizer: torch.optim.Optimizer, objective: str, schedule=None, weights: torch.Tensor | None = None,
               words: list[torch.Tensor | None] | None = None, word_weight: float = 1.0,
               accelerator: Accelerator | None = None, precision: torch.dtype | None = None,
               consistency: float = 0.0) -> float:
    """One optimisation step on one batch (gradients clipped to norm 1); the loss before the step. `weights`
    weigh the responses' sentence losses; `words` are word targets for the word heads. `consistency` > 0: the
    batch's second half is its first half perturbed; the labels teach the first half, and the halves' squared score
    difference, with that weight, the second. With an `accelerator`, `model` may be its DDP/DeepSpeed wrapper;
    `precision` autocasts the forward pass."""
    core = accelerator.unwrap_model(model) if accelerator else model
    device = core.backbone.device
    with autocast(core, precision):
        output = model(audio, prompts)
        n = len(prompts) // 2 if consistency else len(prompts)  # the labels teach the clean half, when paired
        taught = output.first(n)
        loss = score_loss(taught, targets[:n].to(device), core.scale, objective,
                          None if weights is None else weights[:n].to(device))
        if words is not None and core.word_heads is not None:
            loss = loss + word_weight * word_loss(taught, words[:n], core.scale)
        if consistency:
            loss = loss + consistency * consistency_loss(output, core.scale)
    optimizer.zero_grad()
    (accelerator.backward if accelerator else torch.Tensor.backward)(loss)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    (accelerator.clip_grad_norm_ if accelerator else torch.nn.utils.clip_grad_norm_)(params, 1.0)
    optimizer.step()
    if schedule is not None:
        schedule.step()
    return loss.item()


def new_model(config: TrainConfig) -> GraderModel:
    torch.manual_seed(config.seed)  # every fold, and a rerun, starts from the same LoRA initialisation
    model = GraderModel(config.model).to(Accelerator().device)  # the device accelerate gives this process
    if config.gradient_checkpointing:
        model.backbone.model.activation_checkpointing_enable({"use_reentrant": False})
    return model


def fit(config: TrainConfig, model: GraderModel, train_set: Examples, dev_set: Examples, out: Path,
        select: bool = True) -> tuple[list[dict], Decoded | None]:
    """Train `model`, measuring `dev_set` after every epoch, and save to `out` the best epoch on dev (`select`)
    or the last one. Returns the history and the dev predictions of the last epoch."""
    random.seed(config.seed)
    aspects, objective = config.model.aspects, config.model.objective
    targets = torch.tensor([[r.scores[a] for a in aspects] for r in train_set.responses])
    weights = label_weights(targets, model.scale, config.reweight) if config.reweight else None
    with torch.no_grad():  # start from the training prior: the mean score and the class frequencies
        model.heads.start_from(targets)
        scored = [w for w in train_set.words if w is not None]
        if model.word_heads is not None and scored:
            model.word_heads.regression.bias.copy_(torch.cat(scored).mean(0))
    trainable = [p for p in model.parameters() if p.requires_grad]
    print(f"trainable parameters: {sum(p.numel() for p in trainable):,}; "
          f"audio encoder {'trained (LoRA)' if model.audio_encoder_trainable else 'frozen, outputs cached'}")

    started = time.perf_counter()
    steps_per_epoch = math.ceil(len(train_set.responses) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, int(config.warmup * total_steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warmup, 0.5 * (
        1 + math.cos(math.pi * min(1.0, (s - warmup) / max(1, total_steps - warmup))))))
    first_epoch, best, history = 0, -math.inf, []
    if config.resume and (out / "last" / "trainer.pt").is_file():
        state = torch.load(out / "last" / "trainer.pt", weights_only=False)
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        first_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
        print(f"resumed after epoch {first_epoch}")
    # word heads see no loss in a batch without reference texts: DDP must then not wait for their gradients
    ddp = DistributedDataParallelKwargs(find_unused_parameters=model.word_heads is not None)
    accelerator = Accelerator(kwargs_handlers=[ddp])
    if accelerator.state.deepspeed_plugin:  # DeepSpeed reads the batch size from a DataLoader, and there is none
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.batch_size
    net, optimizer, schedule = accelerator.prepare(model, optimizer, schedule)
    world, main = accelerator.num_processes, accelerator.is_main_process

    rng = random.Random(config.seed)
    use_text = config.model.use_text
    prompts = [r.text if use_text else None for r in train_set.responses]
    dev_prompts = [r.text if use_text else None for r in dev_set.responses]
    dev_states = None if dev_set.states is None else [s.float() for s in dev_set.states]
    decoded = None
    view_rng = random.Random(config.seed + 1)
    mismatch_rng = random.Random(config.seed + 2)  # its own stream: --mismatch 0 trains exactly as before
    texts = sorted({r.text for r in train_set.responses if r.text})
    floored = torch.tensor([a not in DELIVERY for a in aspects])  # the aspects a mismatched row floors
    for epoch in range(first_epoch, config.epochs):
        epoch_inputs = None if config.consistency else train_set.epoch_inputs(view_rng)
        net.train()
        batches = length_batches([len(a) for a in train_set.audio], config.batch_size, shuffle=True,
                                 seed=config.seed * 1000 + epoch)
        # every process takes every world-th batch, the same number each (DDP steps together)
        batches = batches[: len(batches) // world * world][accelerator.process_index :: world]
        progress = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not main)
        for batch in progress:
            batch_prompts = [None if rng.random() < config.text_dropout else prompts[i] for i in batch]
            words = [train_set.words[i] if p else None for i, p in zip(batch, batch_prompts)]
            batch_targets = targets[batch]
            if config.mismatch:
                batch_prompts, words, batch_targets = mismatched(batch_prompts, words, batch_targets, texts, floored,
                                                                 model.scale.min, config.mismatch, mismatch_rng)
            if config.consistency:  # the clean recordings, then the same responses perturbed, with the same texts
                audio = batch_audio(model, train_set.paired_inputs(batch, view_rng))
                batch_prompts, words = batch_prompts + batch_prompts, words + words
            else:
                audio = batch_audio(model, [epoch_inputs[i] for i in batch])
            loss = train_step(net, audio, batch_prompts, batch_targets, optimizer, objective, schedule,
                              None if weights is None else weights[batch], words, config.word_weight, accelerator,
                              PRECISIONS[config.precision], config.consistency)
            progress.set_postfix(loss=f"{loss:.3f}", lr=f"{schedule.get_last_lr()[0]:.1e}")

        model.eval()
        if dev_set.responses:
            states = dev_states if dev_states is not None else encode_audios(model, dev_set.audio)
            decoded = score_states(model, states, dev_prompts)
            metrics = dev_metrics(decoded, dev_set.responses, aspects, objective, dev_set.words,
                                  config.model.word_aspects)
            key = selection_key(metrics, aspects, objective) if select else float(epoch)
        else:
            metrics, key = {}, float(epoch)
        history.append({"epoch": epoch + 1, "selection_pcc": key, "metrics": metrics})
        scores = "  ".join(f"{name} pcc {m['pcc']:.3f} rmse {m['rmse']:.3f}" for name, m in metrics.items())
        print(f"epoch {epoch + 1} dev: {scores}" if dev_set.responses else f"epoch {epoch + 1} done (no dev set)")
        info = {"training": asdict(config), "dev_metrics": metrics, "epoch": epoch + 1,
                "checkpoint_id": f"{out.name}-e{epoch + 1}",
                "data": {"train": len(train_set.responses), "dev": len(dev_set.responses),
                         "train_hours": sum(map(len, train_set.audio)) / SAMPLE_RATE / 3600}}
        if not main:  # every process scored dev (the same figures); one writes
            best = max(best, key)
            continue
        if key > best:
            best = key
            model.save(out, **info)
            print(f"  {f'new best ({key:.3f})' if select and dev_set.responses else 'epoch'} saved to {out}")
        model.save(out / "last", **info)
        torch.save({"model": model.trained_state(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "epoch": epoch, "best": best, "history": history},
                   out / "last" / "trainer.pt")
        (out / "history.json").write_text(json.dumps(history, indent=2))  # every epoch: a stopped run keeps it
    if decoded is None and dev_set.responses:  # resumed after the last epoch
        decoded = score_states(model, dev_states or encode_audios(model, dev_set.audio), dev_prompts)
    kept = f"best dev pcc {best:.3f}" if select and dev_set.responses else "the last epoch kept"
    print(f"done in {time.perf_counter() - started:.0f} s; {kept}; checkpoint {out}")
    return history, decoded


def train(config: TrainConfig) -> dict:
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.folds:
        return crossval(config)
    train_set, dev_set = load_responses(config)
    print(f"{len(train_set)} training and {len(dev_set)} dev responses; aspects {config.model.aspects}")
    model = new_model(config)
    data = prepare(config, model, train_set + dev_set)
    n = len(train_set)
    history, _ = fit(config, model, data.take(list(range(n))), data.take(list(range(n, n + len(dev_set)))),
                     Path(config.out))
    return {"best": max(h["selection_pcc"] for h in history), "history": history}


def crossval(config: TrainConfig) -> dict:
    """k-fold cross-validation by speaker: each fold's model is trained on the other folds' speakers and
    predicts its own; the out-of-fold predictions cover every response once, from a model that never heard
    that speaker."""
    aspects = config.model.aspects
    responses = read_manifest(config.manifest, aspects)[: config.limit or None]
    trained = with_rater_means(config, responses)
    fold_of = speaker_folds(responses, config.folds, config.seed, target=aspects[0])
    out = Path(config.out)
    model = new_model(config)
    data = prepare(config, model, responses)
    oof: list[Decoded | None] = [None] * len(responses)
    fold_metrics = []
    for k in config.run_folds or range(config.folds):
        dev_rows = [i for i, f in enumerate(fold_of) if f == k]
        train_rows = [i for i, f in enumerate(fold_of) if f != k]
        train_set = data.take(train_rows)
        train_set.responses = [trained[i] for i in train_rows]
        print(f"fold {k + 1}/{config.folds}: {len(train_rows)} training, {len(dev_rows)} held-out responses "
              f"({len({responses[i].speaker for i in dev_rows})} speakers)")
        model = model if not fold_metrics else new_model(config)
        history, decoded = fit(config, model, train_set, data.take(dev_rows), out / f"fold{k}", select=False)
        fold_metrics.append(history[-1]["metrics"])
        for row, i in enumerate(dev_rows):
            oof[i] = Decoded(decoded.regression[row], decoded.probs[row], decoded.hard[row], decoded.soft[row],
                             [decoded.words[row]] if decoded.words is not None else None)
    if not PartialState().is_main_process:
        return {}
    rows = [i for i, d in enumerate(oof) if d is not None]
    report = write_crossval(config, [responses[i] for i in rows], [fold_of[i] for i in rows], [oof[i] for i in rows],
                            [data.words[i] for i in rows], fold_metrics, model.scale, out)
    print_crossval(report)
    return report


def main(argv: list[str] | None = None) -> None:
    config = parse_options(TrainConfig, argv)
    if not config.manifest:
        raise SystemExit("--manifest is required")
    train(config)


if __name__ == "__main__":
    main()
