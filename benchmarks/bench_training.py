"""Training throughput on CPU (utterances/s) for the default recipe: Whisper tiny.en, LoRA rank 8, fa+reg, the four
speechocean762 aspects, batch 16; the step is grader.train's (forward, score_loss, backward, clip, AdamW).

Variants, each timed over one pass of --utterances real clips after one untimed warm-up step:
    encode-every-step  LoRA scope "text" but the frozen encoder is run on every batch (the path without a cache)
    lora-all           --lora-scope all: LoRA in the encoder too, so the encoder runs forward and backward each step
    cached             LoRA scope "text" with the frozen encoder's outputs computed once (float16, as grader.train
                       keeps them) and each step reading them; the one-off encoding time is reported apart and
                       amortised over --epochs

    .venv/bin/python benchmarks/bench_training.py                      # 64 utterances, whisper tiny.en
    .venv/bin/python benchmarks/bench_training.py --model base --out benchmarks/results/training-base.json
    .venv/bin/python benchmarks/bench_training.py --utterances 32 --variants cached

The 1-minute load average is recorded: on a shared machine the figures move with it. Nothing is asserted.
"""

import json
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.common import load1, resolve, write_results  # noqa: E402
from grader.options import parse_options  # noqa: E402


@dataclass
class TrainingBench:
    """Training throughput on CPU: encoder every step vs LoRA in the encoder vs cached encoder outputs."""

    manifest: str = field(default="../shared/data/speechocean762-train/labels.tsv", metadata={
        "help": "a scored manifest, relative to the repo or absolute"})
    model: str = field(default="tiny.en", metadata={
        "help": "Whisper weights (alias, folder or hub id); tiny.en is the shipped grader's"})
    target: str = "total,accuracy,fluency,prosodic"
    objective: str = "fa+reg"
    lora_rank: int = 8
    utterances: int = field(default=64, metadata={"help": "clips per timed pass (the first N of the manifest)"})
    batch_size: int = 16
    epochs: int = field(default=6, metadata={"help": "epochs to amortise the cached variant's one-off encoding over"})
    threads: int = field(default=0, metadata={"help": "torch threads; 0: usable cores"})
    variants: str = "encode-every-step,lora-all,cached"
    seed: int = 0
    out: str = field(default="benchmarks/results/training.json", metadata={"help": "results file ('' : none)"})


def run_variant(name: str, opts: TrainingBench, responses, audios) -> dict:
    import torch

    from grader.backbones import BackboneConfig
    from grader.data import length_batches
    from grader.inference import encode_audios
    from grader.model import GraderModel, LoraOptions, ModelConfig
    from grader.train import batch_audio, train_step

    before = load1()
    torch.manual_seed(opts.seed)
    config = ModelConfig(BackboneConfig(model=opts.model), LoraOptions(rank=opts.lora_rank,
                         scope="all" if name == "lora-all" else "text"),
                         aspects=opts.target.split(","), objective=opts.objective)
    t0 = time.perf_counter()
    model = GraderModel(config)
    build_s = time.perf_counter() - t0
    aspects = opts.target.split(",")
    targets = torch.tensor([[r.scores[a] for a in aspects] for r in responses])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.01)
    prompts = [r.text for r in responses]

    cache_s, states = None, None
    if name == "cached":
        model.eval()
        t0 = time.perf_counter()
        states = [s.to(torch.float16) for s in encode_audios(model, audios)]
        cache_s = time.perf_counter() - t0

    def step(batch: list[int]) -> float:
        inputs = states or audios
        return train_step(model, batch_audio(model, [inputs[i] for i in batch]), [prompts[i] for i in batch],
                          targets[batch], optimizer, opts.objective)

    model.train()
    batches = length_batches([len(a) for a in audios], opts.batch_size, shuffle=True, seed=opts.seed)
    step(batches[0])  # warm-up: allocator, first-call overheads
    cpu, t0 = time.process_time(), time.perf_counter()
    step_times = []
    for batch in batches:
        s = time.perf_counter()
        step(batch)
        step_times.append(time.perf_counter() - s)
    epoch_s = time.perf_counter() - t0
    cpu_s = time.process_time() - cpu
    n = len(audios)
    result = {"variant": name, "lora_scope": config.lora.scope,
              "trainable_params": sum(p.numel() for p in trainable),
              "encoder_trained": model.audio_encoder_trainable, "model_build_s": round(build_s, 2),
              "steps": len(batches), "utterances": n, "epoch_s": round(epoch_s, 2),
              "step_s_median": round(sorted(step_times)[len(step_times) // 2], 3),
              "utterances_per_s": round(n / epoch_s, 2), "cpu_s": round(cpu_s, 2),
              "load1_before": before, "load1_after": load1()}
    if cache_s is not None:
        total = cache_s + opts.epochs * epoch_s
        result |= {"cache_build_s": round(cache_s, 2),
                   "utterances_per_s_first_epoch": round(n / (cache_s + epoch_s), 2),
                   f"utterances_per_s_over_{opts.epochs}_epochs": round(opts.epochs * n / total, 2)}
    return result


def main(argv: list[str] | None = None) -> dict:
    opts = parse_options(TrainingBench, argv)
    import torch

    from grader.audio import SAMPLE_RATE, load_audio
    from grader.data import read_manifest

    torch.set_num_threads(opts.threads or len(os.sched_getaffinity(0)))
    random.seed(opts.seed)
    responses = read_manifest(resolve(opts.manifest), opts.target.split(","))[: opts.utterances]
    audios = [load_audio(r.audio) for r in responses]
    audio_s = sum(map(len, audios)) / SAMPLE_RATE
    print(f"{len(audios)} utterances, {audio_s:.0f} s of audio (mean {audio_s / len(audios):.1f} s), "
          f"{torch.get_num_threads()} threads, load avg {load1()}")
    variants = {}
    for name in opts.variants.split(","):
        variants[name] = run_variant(name, opts, responses, audios)
        print(f"{name}: {json.dumps(variants[name])}")

    names = list(variants)
    rows = [("trainable parameters", lambda v: f"{v['trainable_params']:,}"),
            ("encoder trained", lambda v: str(v["encoder_trained"])),
            ("steps (batch %d)" % opts.batch_size, lambda v: str(v["steps"])),
            ("median step (s)", lambda v: f"{v['step_s_median']:.2f}"),
            ("utterances/s (steady epoch)", lambda v: f"{v['utterances_per_s']:.2f}"),
            ("one-off encoding (s)", lambda v: f"{v['cache_build_s']:.1f}" if "cache_build_s" in v else "-"),
            (f"utterances/s over {opts.epochs} epochs", lambda v: str(
                v.get(f"utterances_per_s_over_{opts.epochs}_epochs", v["utterances_per_s"]))),
            ("load avg 1 min (before/after)", lambda v: f"{v['load1_before']} / {v['load1_after']}")]
    lines = ["| figure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += ["| " + label + " | " + " | ".join(fn(variants[n]) for n in names) + " |" for label, fn in rows]
    print()
    print("\n".join(lines))
    if "cached" in variants and "encode-every-step" in variants:
        speedup = variants["cached"]["utterances_per_s"] / variants["encode-every-step"]["utterances_per_s"]
        print(f"\ncached vs encode-every-step: {speedup:.1f}x per epoch after the one-off encoding")
    results = {
        "benchmark": "training", "options": asdict(opts),
        "data": {"utterances": len(audios), "audio_s": round(audio_s, 1)},
        "machine": {"platform": platform.platform(), "usable_cores": len(os.sched_getaffinity(0)),
                    "threads": torch.get_num_threads(), "python": platform.python_version(),
                    "load1_at_end": load1(),
                    "note": "shared machine: other jobs were running; load1 is os.getloadavg()[0]"},
        "variants": variants, "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    if opts.out:
        write_results(results, resolve(opts.out))
    return results


if __name__ == "__main__":
    main()
