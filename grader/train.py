"""Train a grader: LoRA on the backbone plus regression and classification heads.

    python -m grader.train --manifest ../shared/data/speechocean762-train/labels.tsv \
        --target total --backbone whisper --model tiny.en --objective fa+reg --dev-speakers 25 --out runs/base

When LoRA leaves the audio encoder frozen (the default scope "text"), its outputs are computed once and
cached, so each epoch costs only the decoder/LLM and the heads.
"""

import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .audio import SAMPLE_RATE, load_audio
from .backbones import AudioStates
from .data import (ManifestError, Response, length_batches, read_manifest, read_rater_means, read_speak_and_improve,
                   split_by_speaker)
from .inference import encode_audios, score_states
from .metrics import score_metrics
from .model import Decoded, GraderModel, ModelConfig, parse_objective, score_loss
from .options import parse_options


@dataclass
class TrainConfig:
    """Train a grader (Ma et al. 2025 recipe) and keep the checkpoint that scores best on dev."""

    manifest: str = field(default="", metadata={"help": "TSV/CSV manifest, or a Speak & Improve root with --sandi"})
    sandi: bool = field(default=False, metadata={"help": "read --manifest as a Speak & Improve 2025 release"})
    dev_manifest: str | None = None
    rater_scores: str | None = field(default=None, metadata={
        "help": "raters.tsv: train on each response's mean rater score (the fair average), not its label; "
                "dev is still measured against the labels"})
    dev_speakers: int = field(default=25, metadata={
        "help": "speakers held out for dev when no --dev-manifest; 0 trains on all and keeps the last epoch"})
    model: ModelConfig = field(default_factory=ModelConfig)
    text_dropout: float = field(default=0.3, metadata={"help": "train without the text this often"})
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

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch size must be at least 1 (got {self.epochs} and {self.batch_size})")
        if not 0 <= self.text_dropout <= 1 or not 0 <= self.warmup < 1:
            raise ValueError("text dropout must lie in [0, 1] and warmup (a share of the steps) in [0, 1)")
        if self.dev_speakers < 0 or self.limit < 0:
            raise ValueError("dev speakers and limit cannot be negative")


def load_responses(config: TrainConfig) -> tuple[list[Response], list[Response]]:
    targets = config.model.aspects
    if config.sandi:
        train = read_speak_and_improve(config.manifest, "train", target=targets[0])
        dev = read_speak_and_improve(config.dev_manifest or config.manifest, "dev", target=targets[0])
        return train, dev
    responses = read_manifest(config.manifest, targets)[: config.limit or None]
    if config.dev_manifest:
        train, dev = responses, read_manifest(config.dev_manifest, targets)
    elif config.dev_speakers == 0:  # the final model: train on everything, keep the last epoch
        train, dev = responses, []
    else:
        train, dev = split_by_speaker(responses, config.dev_speakers, config.seed)
    if config.rater_scores:
        means = read_rater_means(config.rater_scores, targets)
        unrated = [r.utt_id for r in train if r.utt_id not in means]
        if unrated:
            raise ManifestError(f"{config.rater_scores} has no scores for {len(unrated)} responses, e.g. {unrated[0]}")
        train = [replace(r, scores=means[r.utt_id]) for r in train]
    return train, dev


def dev_metrics(decoded: Decoded, responses: list[Response], aspects: list[str], objective: str) -> dict:
    """Metrics for every aspect and for each decoding the objective trained."""
    parts = parse_objective(objective)
    decodings = (["regression"] if "reg" in parts else []) + (["soft", "hard"] if {"ce", "fa"} & set(parts) else [])
    metrics = {}
    for a, aspect in enumerate(aspects):
        human = [r.scores[aspect] for r in responses]
        for name in decodings:
            metrics[f"{aspect}/{name}"] = score_metrics(getattr(decoded, name)[:, a].tolist(), human)
    return metrics


def selection_key(metrics: dict, aspects: list[str], objective: str) -> float:
    decoding = "soft" if {"ce", "fa"} & set(parse_objective(objective)) else "regression"
    pcc = metrics[f"{aspects[0]}/{decoding}"]["pcc"]
    return -1.0 if math.isnan(pcc) else pcc


def cached_encodings(model: GraderModel, responses: list[Response], audios: list[np.ndarray],
                     cache_dir: str | None) -> list[torch.Tensor]:
    """Frozen-encoder outputs (float16), computed once per backbone and audio file and kept on disk,
    so comparing objectives or retraining on all data does not pay for the encoder again."""
    key = hashlib.sha1(json.dumps(asdict(model.config.backbone), sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"encoder-{key}.pt" if cache_dir else None
    store: dict[str, torch.Tensor] = torch.load(path) if path and path.is_file() else {}
    names = [str(r.audio.resolve()) for r in responses]
    todo = [i for i, name in enumerate(names) if name not in store]
    if todo:
        for i, states in zip(todo, encode_audios(model, [audios[i] for i in todo])):
            store[names[i]] = states.to(torch.float16)
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(store, path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)
    return [store[name] for name in names]


def batch_audio(model: GraderModel, batch: list[int], audios: list[np.ndarray],
                states: list[torch.Tensor] | None = None) -> AudioStates:
    """A batch's encoder outputs: from the cache of frozen-encoder `states`, else by running the encoder."""
    if states is not None:
        return AudioStates.batch([states[i].float() for i in batch]).to(model.backbone.device)
    return model.backbone.encode(model.backbone.features([audios[i] for i in batch]))


def train_step(model: GraderModel, audio: AudioStates, prompts: list[str | None], targets: torch.Tensor,
               optimizer: torch.optim.Optimizer, objective: str, schedule=None) -> float:
    """One optimisation step on one batch (gradients clipped to norm 1); the loss before the step."""
    loss = score_loss(model(audio, prompts), targets.to(model.backbone.device), model.scale, objective)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], 1.0)
    optimizer.step()
    if schedule is not None:
        schedule.step()
    return loss.item()


def train(config: TrainConfig) -> dict:
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    out = Path(config.out)
    train_set, dev_set = load_responses(config)
    aspects = config.model.aspects
    objective = config.model.objective
    print(f"{len(train_set)} training and {len(dev_set)} dev responses; aspects {aspects}")

    model = GraderModel(config.model)
    targets = torch.tensor([[r.scores[a] for a in aspects] for r in train_set])
    with torch.no_grad():  # start from the training prior: the mean score and the class frequencies
        model.heads.start_from(targets)
    trainable = [p for p in model.parameters() if p.requires_grad]
    print(f"trainable parameters: {sum(p.numel() for p in trainable):,}; "
          f"audio encoder {'trained (LoRA)' if model.audio_encoder_trainable else 'frozen, outputs cached'}")

    started = time.perf_counter()
    train_audio = [load_audio(r.audio) for r in tqdm(train_set, desc="loading audio", leave=False)]
    dev_audio = [load_audio(r.audio) for r in tqdm(dev_set, desc="loading dev audio", leave=False)]
    cache = not model.audio_encoder_trainable
    if cache:
        model.eval()
        states = cached_encodings(model, train_set + dev_set, train_audio + dev_audio, config.cache_dir)
        train_states, dev_states = states[: len(train_set)], [s.float() for s in states[len(train_set) :]]
        print(f"encoder outputs for {len(states)} responses ready in {time.perf_counter() - started:.0f} s")

    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
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

    rng = random.Random(config.seed)
    prompts = [r.text if config.model.use_text else None for r in train_set]
    dev_prompts = [r.text if config.model.use_text else None for r in dev_set]
    for epoch in range(first_epoch, config.epochs):
        model.train()
        batches = length_batches([len(a) for a in train_audio], config.batch_size, shuffle=True,
                                 seed=config.seed * 1000 + epoch)
        progress = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}")
        for batch in progress:
            audio = batch_audio(model, batch, train_audio, train_states if cache else None)
            batch_prompts = [None if rng.random() < config.text_dropout else prompts[i] for i in batch]
            loss = train_step(model, audio, batch_prompts, targets[batch], optimizer, objective, schedule)
            progress.set_postfix(loss=f"{loss:.3f}", lr=f"{schedule.get_last_lr()[0]:.1e}")

        model.eval()
        if dev_set:
            states = dev_states if cache else encode_audios(model, dev_audio)
            metrics = dev_metrics(score_states(model, states, dev_prompts), dev_set, aspects, objective)
            key = selection_key(metrics, aspects, objective)
        else:
            metrics, key = {}, float(epoch)
        history.append({"epoch": epoch + 1, "selection_pcc": key, "metrics": metrics})
        scores = "  ".join(f"{name} pcc {m['pcc']:.3f} rmse {m['rmse']:.3f}" for name, m in metrics.items())
        print(f"epoch {epoch + 1} dev: {scores}" if dev_set else f"epoch {epoch + 1} done (no dev set)")
        info = {"training": asdict(config), "dev_metrics": metrics, "epoch": epoch + 1,
                "checkpoint_id": f"{out.name}-e{epoch + 1}",
                "data": {"train": len(train_set), "dev": len(dev_set),
                         "train_hours": sum(map(len, train_audio)) / SAMPLE_RATE / 3600}}
        if key > best:
            best = key
            model.save(out, **info)
            print(f"  {f'new best ({key:.3f})' if dev_set else 'epoch'} saved to {out}")
        model.save(out / "last", **info)
        torch.save({"model": model.trained_state(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(), "epoch": epoch, "best": best, "history": history},
                   out / "last" / "trainer.pt")
        (out / "history.json").write_text(json.dumps(history, indent=2))  # every epoch: a stopped run keeps it
    kept = f"best dev pcc {best:.3f}" if dev_set else "no dev set, the last epoch kept"
    print(f"done in {time.perf_counter() - started:.0f} s; {kept}; checkpoint {out}")
    return {"best": best, "history": history}


def main(argv: list[str] | None = None) -> None:
    config = parse_options(TrainConfig, argv)
    if not config.manifest:
        raise SystemExit("--manifest is required")
    train(config)


if __name__ == "__main__":
    main()
