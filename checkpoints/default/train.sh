#!/usr/bin/env bash
# Retrain the shipped default grader (MODEL_CARD.md, "Reproduce"): two graders with word heads on all 2,500
# utterances of the speechocean762 train split, trimmed to their speech as the app grades, 6 epochs each, the second
# with label-density re-weighting (--reweight 0.5); then their ensemble in this folder.
#   bash checkpoints/default/train.sh        (DATA=... for another copy of the corpus; about 20 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/data/speechocean762-train}
PYTHON=${PYTHON:-.venv/bin/python}
recipe=(--manifest "$DATA/labels.tsv" --target total,accuracy,fluency,prosodic --model tiny.en --objective fa+reg
        --word-scores "$DATA/words.tsv" --word-target accuracy,total --epochs 6 --dev-speakers 0)
"$PYTHON" -m grader.train "${recipe[@]}" --out runs/speechocean762-tiny.en-fa-reg-words
"$PYTHON" -m grader.train "${recipe[@]}" --reweight 0.5 --out runs/speechocean762-tiny.en-fa-reg-words-rw
"$PYTHON" -m grader.ensemble checkpoints/default runs/speechocean762-tiny.en-fa-reg-words \
    runs/speechocean762-tiny.en-fa-reg-words-rw
