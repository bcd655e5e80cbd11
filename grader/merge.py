"""Merge a checkpoint's LoRA adapters into its base weights, for serving: a plain model without adapter layers
(no LoRA matmuls and dropout per projection, one weight per layer to cast, shard or compile).

    python -m grader.merge CHECKPOINT OUT

OUT is a grader checkpoint like any other (grader.json; the heads in weights.safetensors) plus `backbone/`, the
merged transformers folder, which `GraderModel.load` uses in place of the base model; `Grader.load(OUT)` grades as
CHECKPOINT does, to float rounding. `backbone/` is a full copy of the base weights (Whisper tiny.en 150 MB,
Qwen2-Audio-7B 16 GB in bf16). A merged Whisper has no adapters left to switch off, so its evidence transcript
comes from the adapted decoder; serve the unmerged checkpoint where the transcript matters.
"""

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from .model import GraderModel, LoraOptions, read_checkpoint_info
from .options import parse_options


def merge_adapters(module: nn.Module, merge: bool = True) -> int:
    """Fold every LoRA layer of `module` into its base layer and put the base layer in its place; the count.
    `merge` False drops the adapters instead (benchmarks/bench_gpu.py reuses one base model for several heads)."""
    from peft.tuners.lora import LoraLayer

    layers = [(name, layer) for name, layer in module.named_modules() if isinstance(layer, LoraLayer)]
    for name, layer in layers:
        if merge:
            layer.merge(safe_merge=True)  # refuses weights that would turn non-finite
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent), child, layer.get_base_layer())
    return len(layers)


def merge(checkpoint: str | Path, out: str | Path) -> Path:
    out = Path(out)
    model = GraderModel.load(checkpoint)
    merged = merge_adapters(model.backbone.model)
    backbone = model.backbone
    backbone.model.save_pretrained(out / "backbone")
    (getattr(backbone, "processor", None) or backbone.tokenizer).save_pretrained(out / "backbone")
    model.config.lora = LoraOptions(rank=0)
    model.config.backbone.model = "backbone"  # GraderModel.load finds it beside grader.json
    info = read_checkpoint_info(checkpoint)
    kept = {k: v for k, v in info.items() if k not in ("format", "model", "scale_spec")}
    model.save(out, **kept, merged_from={"checkpoint": str(checkpoint), "lora_layers": merged})
    print(f"{merged} LoRA layers merged into {out / 'backbone'}; grader checkpoint {out}")
    return out


@dataclass
class MergeOptions:
    """Merge a grader checkpoint's LoRA adapters into its base weights, for serving."""

    paths: list[str] = field(default_factory=list, metadata={"help": "CHECKPOINT OUT"})


def main(argv: list[str] | None = None) -> None:
    options = parse_options(MergeOptions, argv, positional="paths")
    if len(options.paths) != 2:
        raise SystemExit("usage: python -m grader.merge CHECKPOINT OUT")
    if "members" in read_checkpoint_info(options.paths[0]):
        raise SystemExit(f"{options.paths[0]} is an ensemble (grader.ensemble): merge each member folder in it on "
                         "its own")
    merge(*options.paths)


if __name__ == "__main__":
    main()
