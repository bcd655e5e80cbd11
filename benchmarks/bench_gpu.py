"""The `qwen2-audio` backbone at full Qwen2-Audio-7B size, random weights (no download): grading latency,
responses/s and peak GPU memory for batches of 30-s clips, and one LoRA training step's time and memory, for each
head type (pooled linear heads; score-token heads, the LM head over the option letters at one answer position per
aspect) and for the zero-shot grader (score tokens, no LoRA, built by grader.inference.Grader.zero_shot).

The model is the published Qwen2-Audio-7B architecture (audio tower: 32 layers, d_model 1280; LLM: 32 layers,
hidden 4096, MLP 11008, vocabulary 156,032; 8.4 B parameters) built from its config with random weights in
bfloat16 directly on the device, SDPA attention. The tokenizer is the offline Whisper tokenizer plus the chat
special tokens (as tests/conftest.py's `tiny_qwen`); config and tokenizer go to a temporary folder, and
grader.backbones.Qwen2AudioBackbone is built by the real code with `from_pretrained` handing it the in-memory
model; one random base serves every head type in turn (each one's LoRA is dropped before the next is injected).
Grading runs grader.inference.encode_audios + score_states (the Grader's path) for four aspects; the training step
is grader.train's (LoRA scope "text" on cached encoder states, fa+reg, AdamW).

    .venv/bin/python benchmarks/bench_gpu.py                 # needs a CUDA GPU (H200: ~16 GiB of weights, ~5 min)
    .venv/bin/python benchmarks/bench_gpu.py --tiny          # same code, tiny config, on CPU (a smoke run)

Targets (from the issue): >= 50 responses/s at batch 32 on one H200, <= 20 GiB peak at batch 1.
Audio is synthetic (the weights are random, so content does not matter; timings depend only on length).
"""

import json
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.common import load1, write_results  # noqa: E402
from grader.options import parse_options  # noqa: E402

# Qwen/Qwen2-Audio-7B(-Instruct) config.json; everything else is Qwen2AudioConfig's default.
# (Qwen2AudioConfig() alone has MLP 22016 and vocabulary 151,936: 12.7 B parameters, not the released 8.4 B.)
FULL_TEXT_CONFIG = dict(model_type="qwen2", vocab_size=156032, intermediate_size=11008, max_position_embeddings=8192,
                        rms_norm_eps=1e-5)
TINY_AUDIO_CONFIG = dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64)
TINY_TEXT_CONFIG = dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=1)
PROMPT = "We call it bear because it lives in the forest and likes honey more than anything else."
ASPECTS = ["total", "accuracy", "fluency", "prosodic"]
TARGETS = {"responses_per_s_batch32": 50.0, "peak_gib_batch1": 20.0}


@dataclass
class GpuBench:
    """Qwen2-Audio-7B (random weights) grading and LoRA-step speed and memory; --tiny for a CPU smoke run."""

    tiny: bool = field(default=False, metadata={"help": "a 2-layer, 32-wide config instead of the 7B"})
    device: str = field(default="", metadata={"help": "'' : cuda when available, else cpu"})
    dtype: str = "bfloat16"
    batches: str = field(default="1,8,32", metadata={"help": "grading batch sizes, comma-separated"})
    clip_seconds: float = 30.0
    repeats: int = field(default=3, metadata={"help": "timed repeats per batch size (after one warm-up)"})
    train_batch: int = field(default=8, metadata={"help": "responses per LoRA training step (0: skip)"})
    train_steps: int = field(default=3, metadata={"help": "timed training steps (after one warm-up)"})
    lora_rank: int = 8
    heads: str = field(default="pooled,tokens", metadata={"help": "head types to measure, comma-separated"})
    zero_shot: bool = field(default=True, metadata={"help": "also grade with the zero-shot grader (tokens, no LoRA)"})
    threads: int = field(default=0, metadata={"help": "torch CPU threads; 0: usable cores"})
    seed: int = 0
    out: str = field(default="", metadata={
        "help": "results file; '' : benchmarks/results/gpu.json, or gpu-tiny-<device>.json with --tiny"})


def build_base(opts: GpuBench, device, folder: Path):
    """A random Qwen2-Audio on the device, its config and tokenizer written to `folder`."""
    import torch
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, WhisperTokenizerFast

    from grader.backbones.weights import resolve_whisper

    tokenizer = WhisperTokenizerFast.from_pretrained(resolve_whisper("tiny.en"))
    tokenizer.add_special_tokens({"additional_special_tokens": [
        "<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|audio_eos|>", "<|AUDIO|>"]})
    audio_token = tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    if opts.tiny:
        config = Qwen2AudioConfig(audio_config=TINY_AUDIO_CONFIG, text_config=TINY_TEXT_CONFIG | {
            "vocab_size": len(tokenizer)}, audio_token_index=audio_token)
    else:
        config = Qwen2AudioConfig(text_config=FULL_TEXT_CONFIG, audio_token_index=audio_token)
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    dtype = getattr(torch, opts.dtype)
    torch.manual_seed(opts.seed)
    t0 = time.perf_counter()
    with torch.device(device):
        base = Qwen2AudioForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")
    base.eval()
    sync(device)
    build_s = time.perf_counter() - t0
    info = {"parameters": sum(p.numel() for p in base.parameters()),
            "audio_tower_parameters": sum(p.numel() for p in base.model.audio_tower.parameters()),
            "attn_implementation": base.config._attn_implementation, "dtype": opts.dtype,
            "text_config": {k: getattr(config.text_config, k) for k in (
                "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size")},
            "audio_config": {k: getattr(config.audio_config, k) for k in (
                "d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "num_mel_bins")},
            "build_s": round(build_s, 2)}
    return base, info


def in_memory(base):
    """Hand the random base to every `from_pretrained` of the backbone, so the real construction code runs."""
    from transformers import Qwen2AudioForConditionalGeneration

    return mock.patch.object(Qwen2AudioForConditionalGeneration, "from_pretrained", lambda *a, **k: base)


def grader_model(base, folder: Path, opts: GpuBench, head: str, device):
    """A GraderModel with fresh LoRA (scope text) and `head` heads around the shared base."""
    from grader.backbones import BackboneConfig
    from grader.model import GraderModel, LoraOptions, ModelConfig

    with in_memory(base):
        model = GraderModel(ModelConfig(backbone=BackboneConfig("qwen2-audio", str(folder), dtype=opts.dtype),
                                        lora=LoraOptions(rank=opts.lora_rank, scope="text"), aspects=ASPECTS,
                                        objective="fa+reg", head=head))
    return model.to(device).eval()


def release(model, device) -> None:
    """Drop the model's LoRA from the shared base and free what it held."""
    import gc

    import torch

    from grader.merge import merge_adapters

    merge_adapters(model.backbone.model, merge=False)
    vars(model.backbone.model).pop("peft_config", None)  # peft's record of the adapters just dropped
    del model
    gc.collect()
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()


def sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device) -> float:
    import torch

    if str(device).startswith("cuda"):
        return round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # process peak RSS


def clips(n: int, seconds: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Speech-level noise with a syllable-rate envelope: the weights are random, so only the length matters."""
    t = np.arange(int(seconds * 16000)) / 16000
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return [(0.1 * envelope * rng.standard_normal(len(t))).astype(np.float32) for _ in range(n)]


def grading(model, device, batch: int, opts: GpuBench, rng) -> dict:
    import torch

    from grader.inference import encode_audios, score_states

    audios = clips(batch, opts.clip_seconds, rng)
    prompts = [PROMPT] * batch

    def once() -> dict:
        t0 = time.perf_counter()
        features = model.backbone.features(audios)  # CPU: the log-mel extractor
        t1 = time.perf_counter()
        with torch.inference_mode():
            encoded = model.backbone.encode(features)
            sync(device)
            t2 = time.perf_counter()
            states = encoded.unbatch()
            score_states(model, states, prompts, batch_size=batch)
            sync(device)
        t3 = time.perf_counter()
        return {"features_s": t1 - t0, "encode_s": t2 - t1, "score_s": t3 - t2, "total_s": t3 - t0}

    try:
        reset_peak(device)
        encode_audios(model, audios[:1])  # warm-up (kernels, allocator)
        once()
        runs = [once() for _ in range(opts.repeats)]
    except torch.OutOfMemoryError as error:
        return {"batch": batch, "error": f"out of memory: {str(error).splitlines()[0]}"}
    median = {k: round(float(np.median([r[k] for r in runs])), 4) for k in runs[0]}
    return {"batch": batch, "clip_s": opts.clip_seconds, "repeats": len(runs), **median,
            "latency_s": median["total_s"], "responses_per_s": round(batch / median["total_s"], 2),
            "responses_per_s_model_only": round(batch / (median["encode_s"] + median["score_s"]), 2),
            "peak_gib": peak_gib(device)}


def training_step(model, device, opts: GpuBench, rng) -> dict:
    import torch

    from grader.backbones import AudioStates
    from grader.inference import encode_audios
    from grader.train import train_step

    audios = clips(opts.train_batch, opts.clip_seconds, rng)
    model.eval()
    states = [s.to(torch.float16 if str(device).startswith("cuda") else torch.float32)
              for s in encode_audios(model, audios, batch_size=opts.train_batch)]  # the cache grader.train keeps
    targets = torch.full((opts.train_batch, 4), 7.0, device=device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()

    def step() -> float:
        t0 = time.perf_counter()
        audio = AudioStates.batch([s.float() for s in states]).to(device)
        train_step(model, audio, [PROMPT] * opts.train_batch, targets, optimizer, "fa+reg")
        sync(device)
        return time.perf_counter() - t0

    try:
        reset_peak(device)
        step()
        times = [step() for _ in range(opts.train_steps)]
    except torch.OutOfMemoryError as error:
        return {"batch": opts.train_batch, "error": f"out of memory: {str(error).splitlines()[0]}"}
    finally:
        model.eval()
    median = float(np.median(times))
    return {"batch": opts.train_batch, "clip_s": opts.clip_seconds, "steps": len(times),
            "step_s": round(median, 4), "utterances_per_s": round(opts.train_batch / median, 2),
            "peak_gib": peak_gib(device), "encoder": "frozen, states cached (LoRA scope text)"}


def main(argv: list[str] | None = None) -> dict:
    opts = parse_options(GpuBench, argv)
    import torch

    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        torch.set_num_threads(opts.threads or len(os.sched_getaffinity(0)))
        if not opts.tiny:
            raise SystemExit("the full 7B benchmark needs a CUDA GPU; use --tiny for the CPU smoke run")
    rng = np.random.default_rng(opts.seed)
    before = load1()
    with tempfile.TemporaryDirectory(prefix="bench-qwen2-audio-") as tmp:
        folder = Path(tmp)
        base, info = build_base(opts, device, folder)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
        print(f"{'tiny' if opts.tiny else 'full'} Qwen2-Audio: {info['parameters'] / 1e9:.3f} B parameters on {name}, "
              f"{opts.dtype}, {info['attn_implementation']}; built in {info['build_s']} s; "
              f"weights {peak_gib(device)} GiB")
        batches = [int(b) for b in opts.batches.split(",")]
        runs = {}  # by head type: grading per batch size, the LoRA step, trainable parameters
        for head in opts.heads.split(","):
            model = grader_model(base, folder, opts, head, device)
            run = {"trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                   "grading": [grading(model, device, b, opts, rng) for b in batches]}
            run["training_step"] = training_step(model, device, opts, rng) if opts.train_batch else None
            print(f"{head}: {json.dumps(run)}")
            runs[head] = run
            release(model, device)
        if opts.zero_shot:
            from grader.inference import Grader

            with in_memory(base):
                grader = Grader.zero_shot(str(folder), aspects=ASPECTS, device=str(device), dtype=opts.dtype)
            runs["zero-shot"] = {"trainable_parameters": 0, "training_step": None,
                                 "grading": [grading(grader.model, device, b, opts, rng) for b in batches]}
            print(f"zero-shot: {json.dumps(runs['zero-shot'])}")

    memory = "peak GPU memory (GiB)" if device.type == "cuda" else "peak RSS of the process (GiB)"
    lines = [f"| heads | batch ({opts.clip_seconds:g}-s clips) | latency (s) | responses/s | of which log-mel "
             f"features (s) | {memory} |",
             "|---|---|---|---|---|---|"]
    for head, run in runs.items():
        for g in run["grading"]:
            lines.append(f"| {head} | {g['batch']} | " + ("error: " + g["error"] + " | | | |" if "error" in g else
                         f"{g['latency_s']:.3f} | {g['responses_per_s']:.1f} | {g['features_s']:.3f} | "
                         f"{g['peak_gib']} |"))
        if train := run["training_step"]:
            lines.append(f"| {head} | LoRA step, batch {train['batch']} | " + ("error: " + train["error"] + " | | | |"
                         if "error" in train else f"{train['step_s']:.3f} | {train['utterances_per_s']:.1f} utt/s | "
                         f"- | {train['peak_gib']} |"))
    print()
    print("\n".join(lines))

    targets = {}
    if not opts.tiny and device.type == "cuda":
        for head, run in runs.items():
            by_batch = {g["batch"]: g for g in run["grading"] if "error" not in g}
            if 32 in by_batch:
                value = by_batch[32]["responses_per_s"]
                targets[f"{head}/responses_per_s_batch32_ge_50"] = {"value": value, "met": value >= 50}
            if 1 in by_batch:
                value = by_batch[1]["peak_gib"]
                targets[f"{head}/peak_gib_batch1_le_20"] = {"value": value, "met": value <= 20}
        for k, v in targets.items():
            print(f"target {k}: {v['value']} {'met' if v['met'] else 'NOT met'}")
    else:
        targets["note"] = ("not judged: the targets are for the full 7B model on one H200; this is the --tiny "
                           "smoke run of the same code on CPU")

    results = {
        "benchmark": "gpu", "tiny": opts.tiny, "options": asdict(opts), "model": info,
        "device": {"type": device.type, "name": name, "usable_cpu_cores": len(os.sched_getaffinity(0)),
                   "torch": torch.__version__, "cuda": torch.version.cuda,
                   "load1_before": before, "load1_after": load1(),
                   "note": ("shared machine: other jobs were running; load1 is os.getloadavg()[0]"
                            if device.type == "cpu" else "load1 is os.getloadavg()[0]")},
        "runs": runs, "targets": targets,
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    if device.type == "cpu":
        results["full_run"] = ("needs a CUDA GPU (one H200; on a smaller card the batch-8 LoRA steps may run out "
                               "of memory, reported as such): .venv/bin/python benchmarks/bench_gpu.py writes "
                               "benchmarks/results/gpu.json")
    out = Path(opts.out) if opts.out else REPO / "benchmarks" / "results" / (
        f"gpu-tiny-{device.type}.json" if opts.tiny else "gpu.json")
    write_results(results, out)
    return results


if __name__ == "__main__":
    main()
