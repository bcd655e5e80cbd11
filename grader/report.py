"""Reports on out-of-fold predictions: metrics, the spread across folds, a table per expert band, and how well
the review flag finds the misgraded responses. `grader.train --folds K` writes them; this prints and compares.

    python -m grader.report runs/cv-base runs/cv-reweight      # one row per cross-validated run
    python -m grader.report runs/cv-base --detail              # that run's sentence, band, word and flag tables
    python -m grader.report runs/cv-base runs/cv-new --folds 0,1   # paired: only the folds both runs trained
    python -m grader.report runs/cv-base --stretch 0.5         # and after the stretch (grader.stretch), out of fold
    python -m grader.report runs/cv-base --review              # the review flag's precision and recall, by rule
    python -m grader.report runs/cv-base runs/cv-new --ensemble    # and a row for the mean of the runs' predictions
    python -m grader.report runs/cv-f0+runs/cv-f1234           # one run from runs of disjoint folds (--run-folds)
"""

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import Response
from .metrics import score_metrics
from .model import Decoded, parse_objective
from .options import comma_ints, parse_options
from .scale import ScoreScale

BANDS = ((0, 3), (4, 5), (6, 7), (8, 10))  # expert score bands, inclusive
MISGRADED = 2.0  # |prediction - expert| above this is a misgrade the review flag should catch


def band_table(predicted, human, bands=BANDS) -> list[dict]:
    """Per expert band: n, the experts' and the grader's mean, mean absolute error, % off by more than 2."""
    predicted, human = np.asarray(predicted, float), np.asarray(human, float)
    rows = []
    for low, high in bands:
        rows_in = (human >= low) & (human < high + 1)
        error = np.abs(predicted[rows_in] - human[rows_in])
        n = int(rows_in.sum())
        rows.append({"band": f"{low}–{high}", "n": n, "mean_expert": float(human[rows_in].mean()) if n else None,
                     "mean_prediction": float(predicted[rows_in].mean()) if n else None,
                     "mae": float(error.mean()) if n else None,
                     "off_by_more_than_2": float(100 * (error > MISGRADED).mean()) if n else None})
    return rows


def flag_figures(flagged, predicted, human, threshold: float = MISGRADED) -> dict:
    """Precision and recall of the review flag for |error| > threshold."""
    flagged = np.asarray(flagged, bool)
    wrong = np.abs(np.asarray(predicted, float) - np.asarray(human, float)) > threshold
    hits = int((flagged & wrong).sum())
    return {"n": len(flagged), "flagged": int(flagged.sum()), "misgraded": int(wrong.sum()), "caught": hits,
            "precision": hits / flagged.sum() if flagged.any() else None,
            "recall": hits / wrong.sum() if wrong.any() else None}


def review_flags(oof: Decoded, aspects: list[str], scale: ScoreScale) -> list[list[str]]:
    """The review reasons' codes for each out-of-fold prediction: the rule the examiner sees (grader.review), from
    the scores alone (the reference-text check needs a transcript, which cross-validation does not make)."""
    from .inference import AspectScore, Prediction
    from .review import review_reasons

    return [[r.code for r in review_reasons(Prediction({
        a: AspectScore(float(oof.regression[i, k]), float(oof.soft[i, k]), float(oof.hard[i, k]),
                       oof.probs[i, k].tolist()) for k, a in enumerate(aspects)}, scale, "oof"))]
            for i in range(len(oof.soft))]


def row_review_codes(row: dict, aspects: list[str], scale: ScoreScale) -> list[str]:
    """The review reasons' codes for one oof.tsv row (its regression and soft scores; the hard one where it has it)."""
    from .inference import AspectScore, Prediction
    from .review import review_reasons

    return [r.code for r in review_reasons(Prediction({a: AspectScore(
        float(row[f"{a}_regression"]), float(row[f"{a}_soft"]), float(row.get(f"{a}_hard", "nan")), [])
        for a in aspects}, scale, "oof"))]


def review_table(report: dict, rows: list[dict], budget: float = 0.2) -> str:
    """Markdown: how well the review flag (grader.review) finds |total error| > 2 out of fold, from out-of-fold rows
    (oof.tsv's): the shipped rule per fold and in all, each reason alone, and the rule's thresholds chosen afresh on
    four folds (the most misgrades caught with at most `budget` of the answers flagged) and scored on the fifth."""
    from .review import ReviewRule
    from .scale import get_scale

    aspects, scale = report["training"]["model"]["aspects"], get_scale(report["training"]["model"]["scale"])
    decoding = headline_decoding(report)
    get = lambda key: np.array([float(r[key]) for r in rows])  # noqa: E731
    fold, human, predicted = get("fold").astype(int), get(aspects[0]), get(f"{aspects[0]}_{decoding}")
    soft = get(f"{aspects[0]}_soft")
    gap = np.max([np.abs(get(f"{a}_regression") - get(f"{a}_soft")) for a in aspects], axis=0) / scale.step
    codes = [set(row_review_codes(row, aspects, scale)) for row in rows]
    rule = ReviewRule()
    low = rule.low_score.get(scale.name, -np.inf)
    flagged = np.array([bool(c) for c in codes])
    assert np.array_equal(flagged, (soft < low) | (gap > rule.heads_gap))  # the grid below reads the same rule

    def line(name: str, flags, rows=slice(None)) -> str:
        r = flag_figures(flags[rows], predicted[rows], human[rows])
        return (f"| {name} | {100 * r['flagged'] / r['n']:.1f} % | {r['caught']} of {r['misgraded']} | "
                f"{_f(r['precision'], 2)} | {_f(r['recall'], 2)} |")

    lows, gaps = np.arange(3.0, 8.01, 0.25), np.array([0.5, 0.75, 1.0, 1.25, 1.5, np.inf])
    wrong = np.abs(predicted - human) > MISGRADED
    chosen, nested = [], np.zeros(len(rows), bool)
    for k in np.unique(fold):
        train, test = fold != k, fold == k
        best = max(((((soft[train] < t) | (gap[train] > g)) & wrong[train]).sum(),
                    -((soft[train] < t) | (gap[train] > g)).mean(), t, g)
                   for t in lows for g in gaps if ((soft[train] < t) | (gap[train] > g)).mean() <= budget)
        chosen.append(f"{best[2]:g} / {best[3]:g}")
        nested[test] = (soft[test] < best[2]) | (gap[test] > best[3])
    lines = [f"Review flag against |{aspects[0]} error| > {MISGRADED:g} ({decoding} decoding), out of fold "
             f"(`{report['run']}`: {len(rows)} responses):", "",
             "| rule | flagged | misgraded caught | precision | recall |", "|---|---|---|---|---|",
             line(f"shipped: score under {low:g}, or heads more than {rule.heads_gap:g} step apart", flagged),
             line("reason: low score", np.array(["low_score" in c for c in codes])),
             line("reason: heads disagree", np.array(["heads_disagree" in c for c in codes])),
             *[line(f"shipped, fold {k} alone", flagged, fold == k) for k in np.unique(fold)],
             line(f"thresholds chosen on the other folds (≤ {budget:.0%} flagged; score / step: "
                  f"{', '.join(chosen)})", nested)]
    return "\n".join(lines)


def fold_spread(pcc: list[float]) -> dict:
    """Mean and sample sd of the per-fold PCC (sd None from one fold; NaN where a fold's PCC is undefined)."""
    return {"mean": float(np.mean(pcc)), "sd": float(np.std(pcc, ddof=1)) if len(pcc) > 1 else None}


def decodings(objective: str) -> list[str]:
    parts = set(parse_objective(objective))
    return (["regression"] if "reg" in parts else []) + (["soft", "hard"] if {"ce", "fa"} & parts else [])


def write_crossval(config, responses: list[Response], fold_of: list[int], oof: list[Decoded],
                   words: list[torch.Tensor | None], fold_metrics: list[dict], scale: ScoreScale, out: Path) -> dict:
    """oof.tsv (one row per response), oof_words.tsv (one per scored word) and cv.json (the figures)."""
    from .train import dev_metrics

    aspects, word_aspects = config.model.aspects, config.model.word_aspects
    stacked = Decoded(*(torch.stack([getattr(d, f) for d in oof]) for f in ("regression", "probs", "hard", "soft")),
                      words=[d.words[0] for d in oof] if oof[0].words is not None else None)
    metrics = dev_metrics(stacked, responses, aspects, config.model.objective, words, word_aspects)
    flags = review_flags(stacked, aspects, scale)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "oof.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["utt_id", "speaker", "fold", *[f"{a}{s}" for a in aspects for s in ("", "_regression", "_soft",
                                                                                          "_hard")], "review"])
        for i, r in enumerate(responses):
            w.writerow([r.utt_id, r.speaker, fold_of[i], *[f"{x:.4g}" for k, a in enumerate(aspects) for x in (
                r.scores[a], stacked.regression[i, k], stacked.soft[i, k], stacked.hard[i, k])], "; ".join(flags[i])])
    if stacked.words is not None:
        with open(out / "oof_words.tsv", "w", newline="") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(["utt_id", "fold", "word_index", "word", *word_aspects,
                        *[f"{a}_predicted" for a in word_aspects]])
            for i, r in enumerate(responses):
                if words[i] is None or stacked.words[i] is None:
                    continue
                for j, word in enumerate(r.text.split()):
                    w.writerow([r.utt_id, fold_of[i], j, word, *[f"{x:g}" for x in words[i][j].tolist()],
                                *[f"{x:.3f}" for x in stacked.words[i][j].tolist()]])
    spread = {name: fold_spread([m[name]["pcc"] for m in fold_metrics]) for name in fold_metrics[0]}
    bands = {f"{a}/{d}": band_table(getattr(stacked, d)[:, k].tolist(), [r.scores[a] for r in responses])
             for k, a in enumerate(aspects) for d in decodings(config.model.objective)}
    headline = aspects[0]
    review = {d: flag_figures([bool(x) for x in flags], getattr(stacked, d)[:, 0].tolist(),
                              [r.scores[headline] for r in responses]) for d in decodings(config.model.objective)}
    report = {"run": out.name, "folds": config.folds, "speakers": len({r.speaker for r in responses}),
              "responses": len(responses), "training": asdict(config), "metrics": metrics, "spread": spread,
              "fold_metrics": fold_metrics, "bands": bands, "review": {"aspect": headline, **review}}
    (out / "cv.json").write_text(json.dumps(report, indent=2))
    return report


def read_oof(run: Path, name: str = "oof.tsv") -> list[dict]:
    path = run / name
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def oof_figures(report: dict, rows: list[dict], words: list[dict], decoding_names: list[str]) -> dict:
    """A report's figures (metrics, per-fold spread, bands, review flag) computed from out-of-fold rows as
    oof.tsv / oof_words.tsv hold them."""
    aspects = report["training"]["model"]["aspects"]
    word_aspects = report["training"]["model"]["word_aspects"]
    folds = sorted({int(r["fold"]) for r in rows})
    get = lambda group, key: [float(r[key]) for r in group]  # noqa: E731
    metrics, per_fold, bands, review = {}, {}, {}, {}
    for d in decoding_names:
        for a in aspects:
            name = f"{a}/{d}"
            metrics[name] = score_metrics(get(rows, f"{a}_{d}"), get(rows, a))
            per_fold[name] = [score_metrics(*(get([r for r in rows if int(r["fold"]) == k], key)
                                              for key in (f"{a}_{d}", a)))["pcc"] for k in folds]
            bands[name] = band_table(get(rows, f"{a}_{d}"), get(rows, a))
        review[d] = flag_figures([bool(r["review"]) for r in rows], get(rows, f"{aspects[0]}_{d}"),
                                 get(rows, aspects[0]))
    for a in word_aspects if words else ():
        metrics[f"word/{a}"] = score_metrics(get(words, f"{a}_predicted"), get(words, a))
        per_fold[f"word/{a}"] = [score_metrics(*(get([r for r in words if int(r["fold"]) == k], key)
                                                 for key in (f"{a}_predicted", a)))["pcc"] for k in folds]
    return {"metrics": metrics, "spread": {k: fold_spread(v) for k, v in per_fold.items()}, "bands": bands,
            "responses": len(rows), "speakers": len({r["speaker"] for r in rows}),
            "review": {"aspect": aspects[0], **review}}


def restrict(report: dict, rows: list[dict], words: list[dict], folds: set[int]) -> tuple[dict, list, list]:
    """The report's figures recomputed from its out-of-fold rows on `folds` only, so a run of some folds
    (`train --run-folds`) compares with a full run on the same held-out speakers."""
    rows = [r for r in rows if int(r["fold"]) in folds]
    words = [r for r in words if int(r["fold"]) in folds]
    figures = oof_figures(report, rows, words, decodings(report["training"]["model"]["objective"]))
    return report | figures | {"run": f"{report['run']} (folds {','.join(map(str, sorted(folds)))})"}, rows, words


def run_parts(run: str | Path) -> list[Path]:
    """A run's folders: the run itself, or the parts of `A+B`, runs of disjoint folds of one split to be joined."""
    return [Path(part) for part in str(run).split("+")]


def joined_folds(parts: list[list[dict]], name: str) -> set[int]:
    """The folds of the parts' out-of-fold rows; parts that share a fold cannot be joined."""
    seen: set[int] = set()
    for rows in parts:
        folds = {int(r["fold"]) for r in rows}
        if folds & seen:
            raise ValueError(f"{name}: its parts share folds {sorted(folds & seen)}; join runs of different folds")
        seen |= folds
    return seen


def joined(parts: list[tuple[dict, list, list]], name: str) -> tuple[dict, list, list]:
    """One run from runs of disjoint folds of the same split (`train --folds K --run-folds 0`, then `--run-folds
    1,2,3,4`, say): their out-of-fold rows together, the figures recomputed over all of them."""
    seen = joined_folds([rows for _, rows, _ in parts], name)
    report = parts[0][0]
    rows, words = [r for _, x, _ in parts for r in x], [w for _, _, x in parts for w in x]
    figures = oof_figures(report, rows, words, decodings(report["training"]["model"]["objective"]))
    ran = sorted(seen) if len(seen) < report["folds"] else []  # every fold joined: a whole run
    return report | figures | {"run": name, "training": report["training"] | {"run_folds": ran}}, rows, words


def load_run(run: str | Path) -> tuple[dict, list, list]:
    """A finished `grader.train --folds` run (or `A+B`, runs of disjoint folds joined): its report, out-of-fold
    rows and word rows; a clear exit for a folder that is not one."""
    parts = []
    for part in run_parts(run):
        path = part / "cv.json"
        if not path.is_file():
            raise SystemExit(f"{part} has no cv.json: not a finished `grader.train --folds` run")
        parts.append((json.loads(path.read_text()), read_oof(part), read_oof(part, "oof_words.tsv")))
    try:
        return joined(parts, str(run)) if len(parts) > 1 else parts[0]
    except ValueError as e:
        raise SystemExit(str(e))


def ensemble(runs: list[tuple[dict, list, list]]) -> tuple[dict, list, list]:
    """The out-of-fold figures of the runs' mean prediction (regression and soft, each aspect; each word's scores
    over the runs that have word heads), from each run's (report, rows, word rows). Every run's prediction of a
    response comes from a model that never heard its speaker, so their mean is out of fold too: what an ensemble of
    the recipes, each trained on all speakers, would score on new ones. The review flag is the shipped rule
    (grader.review) on the mean scores."""
    from .scale import get_scale

    reports = [r for r, _, _ in runs]
    aspects = reports[0]["training"]["model"]["aspects"]
    if any(r["training"]["model"]["aspects"] != aspects for r in reports):
        raise SystemExit("--ensemble needs runs that predict the same aspects")
    tables = [{r["utt_id"]: r for r in rows} for _, rows, _ in runs]
    if any(t.keys() != tables[0].keys() for t in tables):
        raise SystemExit("--ensemble needs runs over the same responses (full runs of the same manifest)")
    scale = get_scale(reports[0]["training"]["model"]["scale"])
    rows = []
    for utt, first in tables[0].items():
        row = {k: v for k, v in first.items() if not k.endswith("_hard")}  # a mean has no one most likely class
        for a in aspects:
            for d in ("regression", "soft"):
                row[f"{a}_{d}"] = str(np.mean([float(t[utt][f"{a}_{d}"]) for t in tables]))
        row["review"] = "; ".join(row_review_codes(row, aspects, scale))
        rows.append(row)
    word_tables = [{(r["utt_id"], r["word_index"]): r for r in words} for _, _, words in runs]
    word_tables = [t for t in word_tables if t]
    words = []
    for key, first in (word_tables[0] if word_tables else {}).items():
        words.append(dict(first) | {name: str(np.mean([float(t[key][name]) for t in word_tables]))
                                    for name in first if name.endswith("_predicted")})
    base = next((r for r in reports if r["training"]["model"]["word_aspects"]), reports[0])  # names word aspects
    return base | oof_figures(base, rows, words, ["regression", "soft"]) | {
        "run": "mean of " + " + ".join(r["run"] for r in reports), "review_rule": "today's rule, on the mean scores"
    }, rows, words


def stretched(report: dict, rows: list[dict], words: list[dict], strength: float) -> tuple[dict, list, list]:
    """The figures after the stretch (grader.stretch) of every aspect at `strength`, each fold's maps fitted on the
    other folds' out-of-fold soft scores (so no fold sees its own labels) and applied to its regression and soft
    scores; the review flag is the shipped rule on the stretched scores."""
    from .scale import get_scale
    from .stretch import fit_stretch, stretch_scores

    aspects, scale = report["training"]["model"]["aspects"], get_scale(report["training"]["model"]["scale"])
    fold = np.array([int(r["fold"]) for r in rows])
    out = [{k: v for k, v in r.items() if not k.endswith("_hard")} for r in rows]  # moved classes: no one hard
    for a in aspects:
        soft, human = (np.array([float(r[key]) for r in rows]) for key in (f"{a}_soft", a))
        for k in np.unique(fold):
            stretch = fit_stretch(soft[fold != k], human[fold != k], strength)
            for d in ("regression", "soft"):
                moved = stretch_scores([float(rows[i][f"{a}_{d}"]) for i in np.flatnonzero(fold == k)], stretch, scale)
                for i, x in zip(np.flatnonzero(fold == k), moved):
                    out[i][f"{a}_{d}"] = str(x)
    for row in out:
        row["review"] = "; ".join(row_review_codes(row, aspects, scale))
    return report | oof_figures(report, out, words, ["regression", "soft"]) | {
        "run": f"{report['run']} stretched {strength:g}", "review_rule": "today's rule, on the stretched scores"
    }, out, words


def _f(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def headline_decoding(report: dict) -> str:
    return "soft" if "soft" in decodings(report["training"]["model"]["objective"]) else "regression"


def detail_tables(report: dict) -> str:
    """Markdown: the sentence table (per aspect and decoding), the band table, word-level figures, the flag."""
    ran = report["training"].get("run_folds")
    lines = [f"Out of fold: {report['responses']} responses, {report['speakers']} speakers, {report['folds']} folds "
             f"by speaker{f' (folds {ran} run)' if ran else ''} (`{report['run']}`).", "",
             "| aspect | decoding | PCC | per-fold PCC (mean ± sd) | SRC | RMSE | ≤0.5 % | ≤1.0 % |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in report["metrics"].items():
        if name.startswith("word/"):
            continue
        s = report["spread"].get(name, {})
        lines.append(f"| {name.replace('/', ' | ')} | {_f(m['pcc'])} | {_f(s.get('mean'))} ± {_f(s.get('sd'))} | "
                     f"{_f(m['src'])} | {_f(m['rmse'])} | {m['within_0_5']:.1f} | {m['within_1_0']:.1f} |")
    decoding = headline_decoding(report)
    aspect = report["review"]["aspect"]
    lines += ["", f"Per expert band ({aspect}, {decoding} decoding):", "",
              "| expert band | n | experts' mean | grader's mean | MAE | % off by > 2 |", "|---|---|---|---|---|---|"]
    for row in report["bands"][f"{aspect}/{decoding}"]:
        off = "-" if row["off_by_more_than_2"] is None else f"{row['off_by_more_than_2']:.1f}"
        lines.append(f"| {row['band']} | {row['n']} | {_f(row['mean_expert'], 2)} | {_f(row['mean_prediction'], 2)} | "
                     f"{_f(row['mae'], 2)} | {off} |")
    words = {k: m for k, m in report["metrics"].items() if k.startswith("word/")}
    if words:
        lines += ["", "Word level (every scored reference word, out of fold):", "",
                  "| word aspect | n words | PCC | per-fold PCC (mean ± sd) | SRC | RMSE |",
                  "|---|---|---|---|---|---|"]
        for name, m in words.items():
            s = report["spread"].get(name, {})
            lines.append(f"| {name[5:]} | {m['n']} | {_f(m['pcc'])} | {_f(s.get('mean'))} ± {_f(s.get('sd'))} | "
                         f"{_f(m['src'])} | {_f(m['rmse'])} |")
    r = report["review"][decoding]
    rule = report.get("review_rule", "the rule when this run was trained")
    lines += ["", f"Review flag ({rule}) against |{aspect} error| > {MISGRADED:g} "
              f"({decoding}): {r['flagged']} of {r['n']} flagged, {r['misgraded']} misgraded, {r['caught']} caught: "
              f"precision {_f(r['precision'], 2)}, recall {_f(r['recall'], 2)}; `--review` applies today's rule."]
    return "\n".join(lines)


def comparison_table(reports: list[dict]) -> str:
    """Markdown: one row per cross-validated run (headline decoding), for recipe comparisons."""
    lines = ["| run | total PCC (folds mean ± sd) | RMSE | accuracy | fluency | prosodic | band 0–3 MAE | band 0–3 "
             "mean | word acc. PCC | word total PCC | flag P / R |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rep in reports:
        d, m, s = headline_decoding(rep), rep["metrics"], rep["spread"]
        a = rep["review"]["aspect"]
        low = rep["bands"][f"{a}/{d}"][0]
        pcc = lambda aspect: _f(m.get(f"{aspect}/{d}", {}).get("pcc"))  # noqa: E731
        r = rep["review"][d]
        spread = s.get(f"{a}/{d}", {})
        lines.append(f"| {rep['run']} | {_f(m[f'{a}/{d}']['pcc'])} ({_f(spread.get('mean'))} ± "
                     f"{_f(spread.get('sd'))}) | {_f(m[f'{a}/{d}']['rmse'])} | {pcc('accuracy')} | {pcc('fluency')} | "
                     f"{pcc('prosodic')} | {_f(low['mae'], 2)} | {_f(low['mean_prediction'], 2)} | "
                     f"{_f(m.get('word/accuracy', {}).get('pcc'))} | {_f(m.get('word/total', {}).get('pcc'))} | "
                     f"{_f(r['precision'], 2)} / {_f(r['recall'], 2)} |")
    return "\n".join(lines)


def print_crossval(report: dict) -> None:
    print(detail_tables(report))


@dataclass
class ReportOptions:
    """Out-of-fold figures of `grader.train --folds` runs: one row per run, or a run's tables (--detail)."""

    runs: list[str] = field(default_factory=list, metadata={
        "help": "runs of grader.train --folds (RUN_A+RUN_B joins runs of disjoint folds)"})
    detail: bool = field(default=False, metadata={"help": "each run's sentence, band, word and flag tables"})
    review: bool = field(default=False, metadata={"help": "the review flag's precision and recall, by rule"})
    ensemble: bool = field(default=False, metadata={"help": "and the mean of the runs' predictions"})
    folds: list[int] = field(default_factory=list, metadata={
        "help": "only these folds, e.g. 0,1 (paired: the folds both runs trained); empty: all", "parse": comma_ints})
    stretch: float | None = field(default=None, metadata={
        "help": "and after the stretch of this strength (grader.stretch), each fold's map fitted on the others"})


def main(argv: list[str] | None = None) -> None:
    options = parse_options(ReportOptions, argv, positional="runs")
    loaded = []  # (report, out-of-fold rows, word rows) per run
    for run in options.runs:
        report, rows, words = load_run(run)
        loaded.append(restrict(report, rows, words, set(options.folds)) if options.folds else (report, rows, words))
    if options.ensemble:
        loaded.append(ensemble(loaded))
    if options.stretch is not None:
        loaded += [stretched(*run, options.stretch) for run in (loaded[-1:] if options.ensemble else loaded)]
    if options.review:
        print("\n\n".join(review_table(report, rows) for report, rows, _ in loaded))
    else:
        reports = [report for report, _, _ in loaded]
        print("\n\n".join(detail_tables(r) for r in reports) if options.detail else comparison_table(reports))


if __name__ == "__main__":
    main()
