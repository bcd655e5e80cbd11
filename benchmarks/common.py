"""What every benchmark script shares: the repo root, the load average, writing the results file, and another
answer's sentence for each answer (the reference-text benchmarks)."""

import json
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def load1() -> float:
    """The 1-minute load average, recorded with each figure: this machine is often shared."""
    return round(os.getloadavg()[0], 2)


def resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else (REPO / p).resolve()


def write_results(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")


def other_texts(texts: list[str], rng: np.random.Generator) -> list[str]:
    """For each reference text, the text of another answer that reads a different sentence."""
    out = []
    for text in texts:
        while (other := texts[rng.integers(len(texts))]) == text:
            pass
        out.append(other)
    return out
