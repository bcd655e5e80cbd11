"""Scored responses: manifests, the Speak & Improve 2025 layout, speaker splits and length batches."""

import csv
import math
import random
from dataclasses import dataclass, field, replace
from pathlib import Path


class ManifestError(ValueError):
    """A manifest that cannot be used, with the file and row at fault."""


@dataclass
class Response:
    utt_id: str
    audio: Path
    scores: dict[str, float] = field(default_factory=dict)
    speaker: str | None = None
    text: str | None = None  # prompt or reference text (read-aloud)
    part: str | None = None  # test part, e.g. "P3"
    duration: float | None = None  # seconds, where the manifest says


# Each manifest field and the column names that may hold it, first the preferred one. The training CLI and the
# app's Batch tab read the same format through read_manifest.
COLUMNS = {"audio": ("audio", "file"), "utt_id": ("utt_id",), "speaker": ("speaker", "candidate", "candidate_id"),
           "text": ("text", "prompt"), "part": ("part", "task_part"), "duration_s": ("duration_s",)}


def read_manifest(path: str | Path, targets: list[str] | None = None, check_audio: bool = True,
                  resolve: bool = True) -> list[Response]:
    """Read a TSV/CSV manifest: an `audio` (or `file`) column, absolute or relative to the manifest's folder, and
    score columns; optional `utt_id`, `speaker` (or `candidate`, `candidate_id`), `text` (or `prompt`), `part`
    (or `task_part`), `duration_s`.

    `targets` are the score columns that must be present and numeric; None reads no scores (prediction).
    `resolve` False leaves each audio path as written (the app matches it against uploaded files by name).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ManifestError(f"{path.name} is not UTF-8 text: save the manifest as UTF-8 CSV or TSV") from None
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise ManifestError(f"{path.name} is empty: it needs a header row with an audio column, then one row per file")
    delimiter = "\t" if "\t" in lines[0] else "," if "," in lines[0] else ";" if ";" in lines[0] else "\t"
    reader = csv.DictReader(lines, delimiter=delimiter)
    columns = {name.strip(): name for name in reader.fieldnames or []}
    found = {key: next((columns[n] for n in names if n in columns), None) for key, names in COLUMNS.items()}
    missing = [c for c in targets or [] if c not in columns]
    if found["audio"] is None or missing:
        needed = ", ".join((["audio"] if found["audio"] is None else []) + missing)
        raise ManifestError(f"{path.name} lacks column(s) {needed}; it has {', '.join(sorted(columns)) or 'none'}")
    responses = []
    for line, row in enumerate(reader, start=2):
        field_of = {key: (row.get(column) or "").strip() if column else "" for key, column in found.items()}
        if not field_of["audio"]:
            raise ManifestError(f"{path.name}:{line}: no audio file named")
        audio = Path(field_of["audio"])
        if resolve and not audio.is_absolute():
            audio = path.parent / audio
        if resolve and check_audio and not audio.is_file():
            raise ManifestError(f"{path}:{line}: audio file not found: {audio}")
        scores = {}
        for target in targets or []:
            try:
                scores[target] = float(row[columns[target]])
            except (TypeError, ValueError):
                raise ManifestError(f"{path}:{line}: {target} score {row[columns[target]]!r} is not a number") from None
            if not math.isfinite(scores[target]):
                raise ManifestError(f"{path}:{line}: {target} score {row[columns[target]]!r} is not a finite number")
        try:
            duration = float(field_of["duration_s"]) if field_of["duration_s"] else None
        except ValueError:
            raise ManifestError(f"{path}:{line}: duration {field_of['duration_s']!r} is not a number") from None
        responses.append(Response(
            utt_id=field_of["utt_id"] or audio.stem, audio=audio, scores=scores, speaker=field_of["speaker"] or None,
            text=field_of["text"] or None, part=field_of["part"] or None, duration=duration))
    if not responses:
        raise ManifestError(f"{path} has no rows")
    return responses


def read_speak_and_improve(root: str | Path, split: str = "train", parts: tuple[str, ...] = ("P1", "P3", "P4", "P5"),
                           target: str = "total") -> list[Response]:
    """Read the Speak & Improve Corpus 2025 release (licence-gated; not shipped here).

    `root` holds `reference-materials/flists.flac/{split}-sla-{part}.tsv` (response id, audio path relative
    to root) and `reference-materials/sla-marks/{split}-sla-{part}.tsv` (submission id, holistic score).
    """
    root = Path(root)
    responses = []
    for part in parts:
        flist = root / "reference-materials" / "flists.flac" / f"{split}-sla-{part}.tsv"
        marks = root / "reference-materials" / "sla-marks" / f"{split}-sla-{part}.tsv"
        for file in (flist, marks):
            if not file.is_file():
                raise ManifestError(f"Speak & Improve file not found: {file}")
        scores = dict(line.split()[:2] for line in marks.read_text().splitlines() if line.strip())
        for line in flist.read_text().splitlines():
            if not line.strip():
                continue
            utt_id, audio = line.split()[:2]
            submission = "-".join(utt_id.split("-")[:2])
            if submission not in scores:
                continue  # responses without a holistic mark are not scored in the challenge either
            responses.append(Response(utt_id, root / audio, {target: float(scores[submission])},
                                      speaker=utt_id.split("-")[0], part=part))
    if not responses:
        raise ManifestError(f"no scored responses for split {split!r}, parts {parts} under {root}")
    return responses


def read_rater_means(path: str | Path, targets: list[str]) -> dict[str, dict[str, float]]:
    """Each response's mean over its raters (a TSV of utt_id, rater and score columns): the "fair average"
    that the FA objective is meant to see, where a manifest's label is a rounded median."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"rater scores not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    missing = [c for c in ["utt_id", *targets] if rows and c not in rows[0]]
    if not rows or missing:
        raise ManifestError(f"{path} has no rows or lacks column(s) {', '.join(missing)}")
    by_response: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_response.setdefault(row["utt_id"], []).append(row)
    return {utt_id: {t: sum(float(r[t]) for r in group) / len(group) for t in targets}
            for utt_id, group in by_response.items()}


def rater_mean_scores(path: str | Path, responses: list[Response], targets: list[str]) -> list[Response]:
    """The responses with their raters' mean (`read_rater_means`) as their `targets` scores, the others kept; every
    one must have raters."""
    means = read_rater_means(path, targets)
    unrated = [r.utt_id for r in responses if r.utt_id not in means]
    if unrated:
        raise ManifestError(f"{path} has no scores for {len(unrated)} responses, e.g. {unrated[0]}")
    return [replace(r, scores={**r.scores, **means[r.utt_id]}) for r in responses]


def split_by_speaker(responses: list[Response], dev_speakers: int,
                     seed: int = 0) -> tuple[list[Response], list[Response]]:
    """Hold out whole speakers, so dev figures measure unseen voices."""
    speakers = sorted({r.speaker or r.utt_id for r in responses})
    if not 0 < dev_speakers < len(speakers):
        raise ValueError(f"cannot hold out {dev_speakers} of {len(speakers)} speakers")
    held_out = set(random.Random(seed).sample(speakers, dev_speakers))
    train = [r for r in responses if (r.speaker or r.utt_id) not in held_out]
    dev = [r for r in responses if (r.speaker or r.utt_id) in held_out]
    return train, dev


def length_batches(lengths: list[float], batch_size: int, shuffle: bool = False, seed: int = 0) -> list[list[int]]:
    """Indices grouped into batches of similar length, so little compute goes to padding.

    With shuffle, lengths are jittered before sorting and the batch order is random, so each epoch sees
    different neighbours while keeping padding small.
    """
    rng = random.Random(seed)
    keys = [length * (1 + rng.uniform(-0.1, 0.1)) if shuffle else length for length in lengths]
    order = sorted(range(len(lengths)), key=keys.__getitem__)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches


def speaker_folds(responses: list[Response], folds: int, seed: int = 0, target: str | None = None) -> list[int]:
    """Each response's fold (0..folds-1) for k-fold cross-validation by speaker: a speaker's responses share one
    fold, so every out-of-fold prediction is of an unseen voice. With `target`, speakers are dealt to folds in
    order of their mean score (shuffled within each round), so each fold holds weak and strong speakers alike."""
    by_speaker: dict[str, list[int]] = {}
    for i, r in enumerate(responses):
        by_speaker.setdefault(r.speaker or r.utt_id, []).append(i)
    if not 1 < folds <= len(by_speaker):
        raise ValueError(f"cannot make {folds} folds of {len(by_speaker)} speakers")
    rng = random.Random(seed)
    speakers = sorted(by_speaker)
    rng.shuffle(speakers)
    if target:
        speakers.sort(key=lambda s: sum(responses[i].scores[target] for i in by_speaker[s]) / len(by_speaker[s]))
    fold_of = [0] * len(responses)
    for start in range(0, len(speakers), folds):
        chunk = list(range(folds))
        rng.shuffle(chunk)
        for speaker, fold in zip(speakers[start : start + folds], chunk):
            for i in by_speaker[speaker]:
                fold_of[i] = fold
    return fold_of


@dataclass
class WordScores:
    """The experts' scores of each word of a response's reference text, in text order."""

    words: list[str]
    scores: dict[str, list[float]]  # aspect -> one score per word


def read_word_scores(path: str | Path, aspects: list[str]) -> dict[str, WordScores]:
    """words.tsv (utt_id, word_index, word, and one column per aspect, e.g. accuracy, total) -> by utt_id."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"word scores not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    missing = [c for c in ["utt_id", "word_index", "word", *aspects] if rows and c not in rows[0]]
    if not rows or missing:
        raise ManifestError(f"{path} has no rows or lacks column(s) {', '.join(missing)}")
    grouped: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        grouped.setdefault(row["utt_id"], []).append(row)
    out = {}
    for utt_id, group in grouped.items():
        group.sort(key=lambda r: int(r["word_index"]))
        out[utt_id] = WordScores([r["word"] for r in group], {a: [float(r[a]) for r in group] for a in aspects})
    return out
