"""The score probe: what the members' sentence scores miss, read off every layer of the audio encoder and off what
the reference text tells.

Each member grades from the encoder's last layer, through its decoder. A ridge regression on the mean and spread
over time of every encoder layer (the lower ones less shaped for Whisper's decoder than the last) predicts every
aspect too, less well alone but with other errors. It is fitted on the experts' mean scores (`--rater-scores`: the
label, their median, is rounded and noisier), and its penalty is chosen on speakers it does not see
(`choose_penalties`), as the speakers it grades are. The reference text tells more (`ScoreProbe.text_terms`): the
members' word heads, trained on the experts' word scores, see each word where the sentence heads see the whole
answer, and the lowest and the mean of their word accuracies tell of the one badly spoken word that a sentence score
averages away; the reference check (grader.reference) gives each word's gain, how clearly the stock Whisper hears it
(a pronunciation measure no label here trained), and the share of words found. Out of fold, the members' score
blended with the probe's and with those text terms, each aspect's weights fitted by least squares, agrees with the
experts better on every aspect and scores weak answers closer to the experts (model card, "The score probe"). It
costs next to nothing on the grading path: the encoder runs anyway, its summary (`AudioStates.summary`) is a mean
over frames, and the word scores and the reference check are made anyway.

A response without text terms (no reference text; or, at grading, an answer the check finds does not read it) gets a
second blend, of the members' score and the probe's only.

The blend moves the class distribution with the score, as the stretch does: for each response the map sends class
value v to `members * v + (the blend's other terms)`, each class's probability split between the two nearest
classes, so the soft score is still the distribution's expectation (but for mass sent past the scale's end, which
stays there).

    python -m grader.probe CHECKPOINT RUN [RUN ...] --manifest labels.tsv --out runs/cv-probe

fits the ridge on every response of the manifest (with --rater-scores raters.tsv, on its raters' mean) and its
training views (grader.train `--augment-views 3`: noise, a room, a telephone band, each taught its clean twin's
labels, so the probe learns what the channel does not move), with each fold of the RUNs (`grader.train --folds` runs
of CHECKPOINT's members' recipes) predicted by a ridge fitted on the other folds; checks every response against its
text with the stock Whisper, as grading does; fits the blends on the RUNs' mean out-of-fold scores (sentence and
word) and the checks, writes `probe.json` into CHECKPOINT, and writes the blended out-of-fold predictions to --out, a
run `grader.report` and `grader.stretch` read as any other. The stretch fitted before is removed (it was fitted on
unblended scores): refit it on --out.
"""

import csv
import json
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from .model import Decoded
from .options import comma_list, parse_options
from .reference import ReferenceMatch
from .scale import ScoreScale

PROBE_FILE = "probe.json"
# a blend's weights: the members' and the probe's scores, the answer's text terms (`ScoreProbe.text_terms`), a constant
BLEND_INPUTS = ("members", "probe", "lowest word accuracy", "mean word accuracy", "mean word gain", "lowest word gain",
                "share of words found", "constant")
TEXT_TERMS = len(BLEND_INPUTS) - 3
TEXT_COLUMNS = [name.replace(" ", "_") for name in BLEND_INPUTS[2: 2 + TEXT_TERMS]]  # in a blended run's oof.tsv
WORD_ASPECT = "accuracy"  # the members' word score the blend reads
GAIN_RANGE = (-5.0, 15.0)  # nats per token: beyond it a word is plainly missing, or plainly there
ALPHAS = tuple(float(a) for a in np.logspace(1, 6, 21))  # ridge penalties tried


@dataclass(frozen=True)
class ScoreProbe:
    """Standardised summaries -> one score per aspect (ridge), and per aspect the blend of the members' score with
    it and with the text terms (`text_terms`): weights on `BLEND_INPUTS`."""

    aspects: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[list[float]]  # (aspects, features)
    intercept: list[float]
    blend: list[list[float]]  # (aspects, BLEND_INPUTS): a response with text terms (its reference text's)
    blend_without_words: list[list[float]]  # the same, the text terms' weights 0: a response without
    word_aspects: list[str] = field(default_factory=list)  # the members' word scores the blend was fitted on
    report: dict = field(default_factory=dict)  # out-of-fold figures, data, and the command's options

    @cached_property
    def _arrays(self) -> tuple[np.ndarray, ...]:
        """The fields as arrays, made once (the file holds lists; every grade reads them)."""
        return tuple(np.asarray(x) for x in (self.mean, self.scale, self.coef, self.intercept))

    def blend_for(self, words: torch.Tensor | None, reference: ReferenceMatch | None) -> list[list[float]]:
        """The blend for a response with these word scores and this reference check (None: without)."""
        return self._blend(self.text_terms(words, reference))

    def _blend(self, terms: list[float] | None) -> list[list[float]]:
        return self.blend_without_words if terms is None else self.blend

    def blended_aspects(self, words: torch.Tensor | None, reference: ReferenceMatch | None) -> list[str]:
        """The aspects whose score the probe moves for such a response (the others keep the members' score)."""
        keep = [1.0] + [0.0] * (len(BLEND_INPUTS) - 1)
        return [a for a, w in zip(self.aspects, self.blend_for(words, reference)) if w != keep]

    def reads_text(self, words: torch.Tensor | None, reference: ReferenceMatch | None) -> bool:
        """Whether the blend of such a response weighs its text terms."""
        return any(any(w[2: 2 + TEXT_TERMS]) for w in self.blend_for(words, reference))

    def predict(self, summaries: np.ndarray) -> np.ndarray:
        """(rows, features) of `AudioStates.summary` -> (rows, aspects), the probe's own scores."""
        mean, scale, coef, intercept = self._arrays
        return ((summaries - mean) / scale) @ coef.T + intercept

    def blended(self, decoded: Decoded, summaries: list[torch.Tensor], scale: ScoreScale,
                references: list[ReferenceMatch | None]) -> Decoded:
        """The members' scores blended with the probe's and the text terms': the regression through each response's
        map, clamped to the scale, and the distribution moved class by class (`ScoreScale.fair_average_target`).
        Word scores are left as they are."""
        probe = self.predict(torch.stack(summaries).numpy())  # (rows, aspects)
        terms = [self.text_terms(w, r) for w, r in zip(decoded.words or [None] * len(probe), references)]
        weights = np.array([self._blend(t) for t in terms])  # (rows, aspects, BLEND_INPUTS)
        text = np.array([t or [0.0] * TEXT_TERMS for t in terms])  # a blend without them weighs them 0
        offset = torch.as_tensor(np.stack([  # each aspect's blend but for the members' term
            (blend_design(np.zeros(len(probe)), probe[:, a], text) * weights[:, a]).sum(-1)
            for a in range(len(self.aspects))], -1), dtype=torch.float32)  # (rows, aspects)
        members = torch.as_tensor(weights[..., 0], dtype=torch.float32)
        values = scale.values.float()
        moves = scale.fair_average_target(members[..., None] * values + offset[..., None])  # (rows, a, c, c)
        probs = torch.einsum("rac,racd->rad", decoded.probs.float().cpu(), moves).to(decoded.probs)
        regression = (members * decoded.regression.float().cpu() + offset).to(decoded.regression)
        values = values.to(probs.device)
        return Decoded(scale.clamp(regression), probs, values[probs.argmax(-1)], (probs * values).sum(-1),
                       decoded.words)

    def text_terms(self, words: torch.Tensor | np.ndarray | list | None,
                   reference: ReferenceMatch | None) -> list[float] | None:
        """What a response's reference text tells beside its sentence scores: the lowest and mean word accuracy of its
        (words, word aspects) scores, and the mean and lowest gain of its words in the reference check (how clearly
        the audio says each, clipped to GAIN_RANGE) and the share of them found; None without word scores or without
        a reference check."""
        if words is None or not len(words) or WORD_ASPECT not in self.word_aspects or not reference \
                or not reference.gains:
            return None
        accuracy = np.asarray(words, dtype=np.float64)[:, self.word_aspects.index(WORD_ASPECT)]
        gains = np.clip(reference.gains, *GAIN_RANGE)
        return [float(accuracy.min()), float(accuracy.mean()), float(gains.mean()), float(gains.min()), reference.share]

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / PROBE_FILE
        path.write_text(json.dumps(asdict(self)) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path, aspects: list[str], word_aspects: list[str]) -> "ScoreProbe | None":
        """The checkpoint's probe; None where it has none (then the members' scores are the grade)."""
        path = Path(folder) / PROBE_FILE
        if not path.is_file():
            return None
        probe = cls(**json.loads(path.read_text()))
        if probe.aspects != aspects:
            raise ValueError(f"{path} scores {probe.aspects}, the checkpoint {aspects}")
        if probe.word_aspects and probe.word_aspects != word_aspects:
            raise ValueError(f"{path} reads word scores {probe.word_aspects}, the checkpoint gives {word_aspects}")
        return probe


def fit_ridge(aspects: list[str], features: np.ndarray, targets: np.ndarray, clean: np.ndarray, groups: np.ndarray,
              word_aspects: list[str]) -> tuple[ScoreProbe, list[float]]:
    """Ridge on standardised features (a probe that does not blend yet) and each aspect's penalty
    (`choose_penalties`)."""
    from sklearn.linear_model import Ridge

    alphas = choose_penalties(features, targets, clean, groups)
    mean, scale = features.mean(0), features.std(0) + 1e-6
    ridge = Ridge(alpha=alphas).fit((features - mean) / scale, targets)
    keep = [[1.0] + [0.0] * (len(BLEND_INPUTS) - 1)] * len(aspects)
    return ScoreProbe(aspects, mean.tolist(), scale.tolist(), ridge.coef_.tolist(), ridge.intercept_.tolist(),
                      keep, keep, word_aspects), alphas.tolist()


def choose_penalties(features: np.ndarray, targets: np.ndarray, clean: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Each aspect's ridge penalty, of ALPHAS: the one with the least squared error on held-out speakers' `clean` rows,
    each of `groups` (folds of speakers) predicted by ridges fitted on the others' rows, every penalty from one
    eigendecomposition. Leave-one-out over rows would keep the speaker's other answers, and the row's views, in the
    fit, and choose too weak a penalty for unseen speakers (model card, "The score probe")."""
    errors = np.zeros((len(ALPHAS), targets.shape[1]))
    for g in np.unique(groups):
        fit, test = groups != g, (groups == g) & clean
        x, y = features[fit], targets[fit]  # each a copy: made once
        mean, scale, centre = x.mean(0), x.std(0) + 1e-6, y.mean(0)
        x = (x - mean) / scale
        values, vectors = np.linalg.eigh(x.T @ x)
        projected = vectors.T @ (x.T @ (y - centre))  # (features, aspects)
        rotated = ((features[test] - mean) / scale) @ vectors
        for i, alpha in enumerate(ALPHAS):
            errors[i] += ((rotated @ (projected / (values[:, None] + alpha)) + centre - targets[test]) ** 2).sum(0)
    return np.array(ALPHAS)[errors.argmin(0)]


def blend_design(members: np.ndarray, probe: np.ndarray, text: np.ndarray | None) -> np.ndarray:
    """(rows, BLEND_INPUTS) for one aspect: the members' and the probe's scores, the text terms
    (`ScoreProbe.text_terms`, rows by TEXT_TERMS; None: zeros, a blend without them) and the constant."""
    text = np.zeros((len(members), TEXT_TERMS)) if text is None else text
    return np.column_stack([members, probe, text, np.ones(len(members))])


def fit_blend(members: np.ndarray, probe: np.ndarray, human: np.ndarray, text: np.ndarray | None) -> list[float]:
    """Least squares: human ~ the `blend_design` by the weights, for one aspect; without text terms, their weights
    0."""
    design = blend_design(members, probe, text)
    used = np.arange(len(BLEND_INPUTS)) if text is not None else np.array([0, 1, len(BLEND_INPUTS) - 1])
    weights = np.zeros(len(BLEND_INPUTS))
    weights[used] = np.linalg.lstsq(design[:, used], human, rcond=None)[0]
    return weights.tolist()


@dataclass
class ProbeConfig:
    """Fit a checkpoint's score probe and its blend out of fold, and write the blended out-of-fold predictions."""

    paths: list[str] = field(default_factory=list, metadata={
        "help": "CHECKPOINT RUN [RUN ...]: the grader, then `grader.train --folds` runs of its members' recipes"})
    manifest: str = field(default="", metadata={"help": "the manifest the runs were trained on (labels.tsv)"})
    out: str = field(default="", metadata={"help": "write the blended out-of-fold predictions here (a run folder)"})
    augment_views: int = field(default=3, metadata={
        "help": "training views of each clip (grader.train --augment-views): the ridge learns from them too, and "
                "the report says how far each moves the blend"})
    fit_views: bool = field(default=True, metadata={"help": "--no-fit-views: fit the ridge on the clean clips alone"})
    aspects: list[str] = field(default_factory=list, metadata={
        "parse": comma_list, "help": "blend only these aspects (comma-separated); the others keep the members' "
                                     "scores; empty: all"})
    aspects_without_words: list[str] | None = field(default=None, metadata={
        "parse": comma_list, "help": "the aspects the blend for a response without text terms (no reference text) "
                                     "moves, of --aspects; unset: all of them. Out of fold, the probe without the "
                                     "text terms moves total and accuracy toward the middle (the model card)"})
    exclude_fold: int = field(default=-1, metadata={
        "help": "fit the probe.json written without the RUNs' fold K (its speakers' out-of-fold rows still come "
                "out), for a held-out measure on those speakers (benchmarks/bench_robustness.py); -1: every fold"})
    rater_scores: str | None = field(default=None, metadata={
        "help": "raters.tsv: fit the ridge on each response's mean rater score (the experts' scores, less noisy than "
                "their rounded median); the blends are still fitted on the labels, the scores a grade is measured "
                "against"})
    seed: int = field(default=0, metadata={"help": "grader.train's --seed: which views the cache holds"})
    cache_dir: str = "runs/cache"

    def __post_init__(self):
        if len(self.paths) < 2 or not self.manifest or not self.out:
            raise ValueError("name the checkpoint and at least one cross-validated run, --manifest and --out")
        if self.aspects and set(self.aspects_without_words or []) - set(self.aspects):
            raise ValueError("--aspects-without-words must be among --aspects")


def read_responses(checkpoint: Path, config: ProbeConfig,
                   responses) -> tuple[np.ndarray, list[ReferenceMatch | None]]:
    """(responses, 1 + views, features): each response's summary, clean then its training views, cached; and each
    response's reference check, as grading makes it (None: a backbone without Whisper's decoder)."""
    from .backbones import WhisperBackbone
    from .backbones.whisper import adapters_off
    from .model import GraderModel, read_checkpoint_info
    from .reference import check_texts, checkable
    from .train import TrainConfig, augmented_views, cached_encodings, recording_names, trimmed_audio

    info = read_checkpoint_info(checkpoint)
    model = GraderModel.load(checkpoint / info["members"][0] if info.get("members") else checkpoint, "cpu")
    if model.audio_encoder_trainable:
        raise SystemExit("the probe reads the frozen encoder's layers: this checkpoint trains its encoder (LoRA)")
    audio = trimmed_audio(responses)
    names = recording_names(responses, audio)
    clean = cached_encodings(model, names, audio.__getitem__, config.cache_dir, summaries=True)
    if clean[0] is None:
        raise SystemExit(f"the {model.config.backbone.name} backbone gives no summary of its encoder's layers")
    views = augmented_views(TrainConfig(manifest=config.manifest, augment_views=config.augment_views,
                                        seed=config.seed, cache_dir=config.cache_dir), model, responses, names,
                            summaries=True)
    texts = [r.text for r in responses]
    references: list[ReferenceMatch | None] = [None] * len(responses)
    checked = checkable(texts)
    if checked and isinstance(model.backbone, WhisperBackbone):  # the stock Whisper on the cached encoder outputs
        states = cached_encodings(model, [names[i] for i in checked], lambda k: audio[checked[k]], config.cache_dir)
        with torch.inference_mode(), adapters_off(model.backbone.model):
            references = check_texts(model.backbone, {i: s.float() for i, s in zip(checked, states)}, texts)
    return np.stack([torch.stack([c, *v]).numpy() for c, v in zip(clean, views)]), references


def blended_run(out: Path, report: dict, rows: list[dict], words: list[dict], columns: dict[str, np.ndarray],
                text: np.ndarray | None, runs: list[str]) -> None:
    """The blended out-of-fold predictions as a run `grader.report` and `grader.stretch` read: oof.tsv with the blended
    scores (and, per aspect, the members' and the probe's; per response, its text terms, `TEXT_COLUMNS`), the
    members' word scores, and cv.json."""
    from .report import oof_figures, row_review_codes
    from .scale import get_scale

    aspects, scale = report["training"]["model"]["aspects"], get_scale(report["training"]["model"]["scale"])
    out.mkdir(parents=True, exist_ok=True)
    table = [{k: v for k, v in r.items() if not k.endswith("_hard")} for r in rows]  # moved classes: no one hard
    for i, row in enumerate(table):
        for a, aspect in enumerate(aspects):
            for name in ("soft", "regression"):
                row[f"{aspect}_{name}"] = str(float(np.clip(columns[name][i, a], scale.min, scale.max)))
            for name in ("members", "probe"):
                row[f"{aspect}_{name}"] = str(columns[name][i, a])
        row |= {} if text is None else {c: str(x) for c, x in zip(TEXT_COLUMNS, text[i])}
        row["review"] = "; ".join(row_review_codes(row, aspects, scale))
    write_rows(out / "oof.tsv", table)
    if words:
        write_rows(out / "oof_words.tsv", words)
    figures = oof_figures(report, table, words, ["regression", "soft"])
    (out / "cv.json").write_text(json.dumps(report | figures | {
        "run": out.name, "review_rule": "today's rule, on the blended scores", "blend_of": runs}, indent=2))


def main(argv: list[str] | None = None) -> ScoreProbe:
    from .data import rater_mean_scores, read_manifest
    from .model import read_checkpoint_info
    from .report import ensemble, load_run

    config = parse_options(ProbeConfig, argv, positional="paths")
    checkpoint, runs = Path(config.paths[0]), config.paths[1:]
    loaded = [load_run(run) for run in runs]
    report, rows, words = ensemble(loaded) if len(loaded) > 1 else loaded[0]
    aspects = report["training"]["model"]["aspects"]
    unknown = (set(config.aspects) | set(config.aspects_without_words or [])) - set(aspects)
    if unknown:
        raise SystemExit(f"the runs score {', '.join(aspects)}, not {', '.join(sorted(unknown))}")
    try:
        by_utt = {r.utt_id: r for r in read_manifest(config.manifest, aspects)}
        if {r["utt_id"] for r in rows} != set(by_utt):
            raise SystemExit("the runs' out-of-fold rows must cover the manifest's responses, every one")
        responses = [by_utt[r["utt_id"]] for r in rows]
        rated = rater_mean_scores(config.rater_scores, responses, aspects) if config.rater_scores else responses
        read_checkpoint_info(checkpoint)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"cannot fit the probe: {e}")
    fold = np.array([int(r["fold"]) for r in rows])
    fitted = fold != config.exclude_fold  # the rows the written probe is fitted on
    if len(np.unique(fold)) < 3 or len(np.unique(fold[fitted])) < 2:
        raise SystemExit("the probe chooses its penalty on folds held out within the folds it is fitted on: give runs "
                         "of three folds or more (grader.train --folds)")
    human = np.array([[r.scores[a] for a in aspects] for r in responses])
    ridge_targets = np.array([[r.scores[a] for a in aspects] for r in rated])
    members, regression = (np.array([[float(r[f"{a}_{d}"]) for a in aspects] for r in rows])
                           for d in ("soft", "regression"))

    features, references = read_responses(checkpoint, config, responses)  # (responses, 1 + views, features)
    per_clip, fitted_views = features.shape[1], features.shape[1] if config.fit_views else 1

    def ridge_on(clips: np.ndarray) -> tuple[ScoreProbe, list[float]]:  # the clips of mask `clips` (and their views)
        return fit_ridge(aspects, features[clips, :fitted_views].reshape(-1, features.shape[-1]),
                         np.repeat(ridge_targets[clips], fitted_views, axis=0),
                         np.tile(np.arange(fitted_views) == 0, int(clips.sum())),
                         np.repeat(fold[clips], fitted_views), report["training"]["model"].get("word_aspects") or [])

    probe_views, fold_alphas = np.zeros((len(rows), per_clip, len(aspects))), []
    for k in np.unique(fold):  # each fold's clips and views scored by a ridge fitted on the other folds
        ridge, alphas = ridge_on(fold != k)
        probe_views[fold == k] = np.stack([ridge.predict(features[fold == k, v]) for v in range(per_clip)], 1)
        fold_alphas.append(alphas)
    probe_oof = probe_views[:, 0]
    text_terms = text_summaries(ridge, rows, words, references)  # (responses, TEXT_TERMS), out of fold; or None

    def blend_on(clips: np.ndarray, a: int, text: np.ndarray | None) -> list[float]:
        chosen = config.aspects if text is not None or config.aspects_without_words is None \
            else config.aspects_without_words
        if chosen and aspects[a] not in chosen:
            return [1.0] + [0.0] * (len(BLEND_INPUTS) - 1)  # the members' score as it is
        return fit_blend(members[clips, a], probe_oof[clips, a], human[clips, a],
                         None if text is None else text[clips])

    columns = {"members": members, "probe": probe_oof, "soft": np.zeros_like(members),
               "regression": np.zeros_like(members)}
    for k in np.unique(fold):  # each fold's blend fitted on the other folds' out-of-fold scores
        test = fold == k
        for a in range(len(aspects)):
            w = blend_on(fold != k, a, text_terms)
            for name, score in (("soft", members), ("regression", regression)):
                columns[name][test, a] = blend_design(score[test, a], probe_oof[test, a],
                                                      None if text_terms is None else text_terms[test]) @ w
    blended_run(Path(config.out), report, rows, words, columns, text_terms, [str(r) for r in runs])

    def pcc(x, y):
        return float(np.corrcoef(x, y)[0, 1])

    figures = {a: {name: pcc(columns[name][:, k], human[:, k]) for name in ("members", "probe", "soft")}
               | {"folds": {name: [pcc(columns[name][fold == f, k], human[fold == f, k]) for f in np.unique(fold)]
                            for name in ("members", "soft")}}
               for k, a in enumerate(aspects)}
    ridge, alphas = ridge_on(fitted)
    blend = [blend_on(fitted, a, text_terms) for a in range(len(aspects))]
    without_words = [blend_on(fitted, a, None) for a in range(len(aspects))]
    # how far the probe's part of the blend moves when a recording goes through each training view, out of fold
    moved = {f"view {v}": {a: float(np.mean(np.abs(blend[k][1] * (probe_views[:, v, k] - probe_oof[:, k]))))
                           for k, a in enumerate(aspects)} for v in range(1, per_clip)}
    probe = replace(ridge, blend=blend, blend_without_words=without_words, report={
        "responses": int(fitted.sum()), "rows": int(fitted.sum()) * fitted_views, "alphas": alphas,
        "fold_alphas": fold_alphas,
        "word_scores": text_terms is not None, "out_of_fold_pcc": figures, "views_move_blend_by": moved,
        "runs": [str(r) for r in runs], "options": asdict(config)})
    probe.save(checkpoint)
    unprobed(checkpoint, text_terms is not None)
    if text_terms is None:
        print(f"the runs give no word {WORD_ASPECT}, or the backbone no reference check, for every response: the "
              "blend reads no text terms")
    for a, f in figures.items():
        print(f"{a}: out of fold PCC, members {f['members']:.3f}, probe {f['probe']:.3f}, blended {f['soft']:.3f} "
              "(per fold, blended minus members: " + ", ".join(
                  f"{s - m:+.3f}" for s, m in zip(f["folds"]["soft"], f["folds"]["members"])) + "); the probe's "
              "part moves by " + ", ".join(f"{m[a]:.2f}" for m in moved.values()) + " under views "
              + ", ".join(str(v) for v in range(1, per_clip)))
    print(f"wrote {checkpoint / PROBE_FILE} and the blended out-of-fold predictions to {config.out}; now refit the "
          f"stretch: python -m grader.stretch {checkpoint} {config.out}")
    return probe


def text_summaries(probe: ScoreProbe, rows: list[dict], words: list[dict],
                   references: list[ReferenceMatch | None]) -> np.ndarray | None:
    """(responses, TEXT_TERMS): each response's `ScoreProbe.text_terms` of its out-of-fold word scores (the runs' word
    rows) and its reference check; None unless every response has them."""
    scores: dict[str, list[list[float]]] = {}
    for w in words:
        scores.setdefault(w["utt_id"], []).append([float(w[f"{a}_predicted"]) for a in probe.word_aspects])
    terms = [probe.text_terms(scores.get(r["utt_id"]), ref) for r, ref in zip(rows, references)]
    return None if any(t is None for t in terms) else np.array(terms)


def unprobed(checkpoint: Path, text: bool) -> None:
    """Name the checkpoint's new scores (stored with every grade: `+probe`, `+probe-text` where the blend reads the
    text terms) and drop its stretch, fitted on the old ones."""
    path = checkpoint / "grader.json"
    info = json.loads(path.read_text())
    base = info.pop("stretch", {}).get("of", info.get("checkpoint_id", checkpoint.name))
    base = base.removesuffix("+probe-text").removesuffix("+probe")
    info["checkpoint_id"] = f"{base}+probe" + ("-text" if text else "")
    path.write_text(json.dumps(info, indent=2))


def write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
