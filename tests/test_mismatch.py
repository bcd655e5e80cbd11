"""Mismatched-reference training (`grader.train --mismatch`): some answers are read with another answer's text and
taught the scale's floor on accuracy and total (fluency and prosody keep the answer's own labels, and the word heads
learn nothing from such a row), so the grader learns that reading another sentence is not the task. The rows
without a text, and every row with --mismatch 0, train exactly as before."""

import json
import random

import torch

from grader.train import DELIVERY, mismatched
from grader.train import main as train_main

TEXTS = ["WE CALL IT BEAR", "ZERO THREE FIVE ONE", "I LIKE APPLES"]


def test_mismatched_rows_read_another_text_and_score_the_floor():
    prompts = ["WE CALL IT BEAR", None, "I LIKE APPLES"]
    words = [torch.full((4, 2), 9.0), torch.full((4, 2), 7.0), torch.full((3, 2), 8.0)]
    targets = torch.tensor([[8.0, 7.0, 9.0], [6.0, 6.0, 6.0], [9.0, 9.0, 5.0]])  # total, accuracy, fluency
    floored = torch.tensor([True, True, False])  # fluency (DELIVERY) keeps the answer's own label
    out_prompts, out_words, out_targets = mismatched(prompts, words, targets, TEXTS, floored, 0.0, 1.0,
                                                     random.Random(0))
    # a row without a text is not touched
    assert out_prompts[1] is None and out_words[1] is words[1] and out_targets[1].tolist() == [6.0, 6.0, 6.0]
    for row, fluency in ((0, 9.0), (2, 5.0)):
        assert out_prompts[row] in TEXTS and out_prompts[row] != prompts[row]
        assert out_targets[row].tolist() == [0.0, 0.0, fluency]
        assert out_words[row] is None  # the word heads are not taught on it
    assert targets[0].tolist() == [8.0, 7.0, 9.0] and prompts[0] == "WE CALL IT BEAR"  # the inputs are not changed

    kept = mismatched(prompts, words, targets, TEXTS, floored, 0.0, 0.0, random.Random(0))
    assert kept[0] == prompts and kept[1] == words and torch.equal(kept[2], targets)
    assert DELIVERY == ("fluency", "prosodic")


def test_training_with_mismatch_and_word_heads_runs(tiny_whisper, speechocean_clips, tmp_path):
    out = tmp_path / "run"
    train_main(["--manifest", str(speechocean_clips / "labels.tsv"), "--model", tiny_whisper, "--limit", "12",
                "--dev-speakers", "1", "--epochs", "1", "--batch-size", "4", "--target", "total,accuracy,fluency",
                "--word-scores", str(speechocean_clips / "words.tsv"), "--word-target", "accuracy,total",
                "--augment-views", "1", "--consistency", "1", "--mismatch", "0.5", "--text-dropout", "0",
                "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    info = json.loads((out / "grader.json").read_text())
    assert info["training"]["mismatch"] == 0.5 and info["dev_metrics"]["word/accuracy"]["n"] > 0
