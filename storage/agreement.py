"""How far examiners agree with the model and with each other, in figures an examiner can read.

Metrics (`agreement`) are plain functions of paired scores on one scale: Pearson's r with its 95 % interval (Fisher z,
scipy), quadratic weighted kappa (scikit-learn) and Gwet's AC1 on the scale's classes, exact and adjacent
(within one class) agreement, the mean difference (bias) and n. Below MIN_N pairs a figure says little (a 95 %
interval of r from 9 pairs spans about ±0.6 around 0.5), so every row says `too_small` there.

Tables over the database (Database.marked), each a Table of plain-language columns with the metric's name and a
help line for a hover title, and rows ready for CSV:
- examiners_vs_model: each examiner's latest mark of each scorable response against the model; the first row, all
  examiners, takes each response's final mark (storage.marking), so each response counts once;
- examiners_vs_examiners: double-marked responses, the first mark in force against the second; per examiner, their
  mark against the other's;
- distributions: the share of each examiner's marks (their latest per response) in each class, and the model's;
- drift: per examiner and week, their latest marks against the model.
"""

import csv
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from sklearn.metrics import cohen_kappa_score

from grader.scale import ScoreScale

from .export import spreadsheet_safe
from .marking import Marking

MIN_N = 10  # fewer pairs than this: too few to mean anything
HEADS = ("regression", "soft", "hard")  # which of the model's headline scores to compare with


def classes(scores: list[float], scale: ScoreScale) -> np.ndarray:
    """The index of each score's nearest class on the scale (a mean of two marks may fall between two)."""
    return scale.nearest_class(torch.tensor(scores, dtype=torch.float64)).numpy()


def pearson(a: list[float], b: list[float]) -> tuple[float | None, float | None, float | None]:
    """(r, low, high): Pearson's r and its 95 % interval (Fisher z); None where undefined (under 2 pairs, or a
    constant side; the interval needs 4 pairs)."""
    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return None, None, None
    result = stats.pearsonr(a, b)
    if len(a) < 4:
        return float(result.statistic), None, None
    interval = result.confidence_interval(0.95)
    return float(result.statistic), float(interval.low), float(interval.high)


def weighted_kappa(a: np.ndarray, b: np.ndarray, num_classes: int) -> float | None:
    """Cohen's kappa with quadratic weights over the scale's classes; None where chance alone explains every pair
    (both sides constant: 0/0)."""
    if len(a) == 0:
        return None
    with warnings.catch_warnings():  # undefined is answered below, not warned about
        warnings.simplefilter("ignore")
        kappa = cohen_kappa_score(a, b, labels=list(range(num_classes)), weights="quadratic")
    return None if math.isnan(kappa) else float(kappa)


def gwet_ac1(a: np.ndarray, b: np.ndarray, num_classes: int) -> float | None:
    """Gwet's AC1 (Gwet 2008): (pa - pe) / (1 - pe), with pe = sum_k pi_k (1 - pi_k) / (q - 1), pi_k the mean of
    the two sides' shares of class k over the scale's q classes. Unlike kappa it stays high when most marks fall in
    a few classes, as on this scale."""
    if len(a) == 0 or num_classes < 2:
        return None
    pa = float(np.mean(a == b))
    pi = (np.bincount(a, minlength=num_classes) + np.bincount(b, minlength=num_classes)) / (2 * len(a))
    pe = float(np.sum(pi * (1 - pi)) / (num_classes - 1))
    return (pa - pe) / (1 - pe)


def agreement(a: list[float], b: list[float], scale: ScoreScale) -> dict[str, Any]:
    """Every metric of `a` against `b` (paired scores on `scale`; bias is a minus b)."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} scores against {len(b)}: the two sides must be paired")
    r, low, high = pearson(a, b)
    ca, cb = classes(a, scale), classes(b, scale)
    steps = np.abs(ca - cb)
    return {"n": len(a), "too_small": len(a) < MIN_N, "pearson": r, "pearson_low": low, "pearson_high": high,
            "qwk": weighted_kappa(ca, cb, scale.num_classes), "ac1": gwet_ac1(ca, cb, scale.num_classes),
            "exact": float(np.mean(steps == 0)) if len(a) else None,
            "adjacent": float(np.mean(steps <= 1)) if len(a) else None,
            "bias": float(np.mean(np.subtract(a, b))) if len(a) else None}


@dataclass
class Table:
    """`columns`: (plain header, metric name, help) each; `rows`: one list of CSV-ready values a row (numbers
    rounded, text as stored); `note`: what the table counts, to state beside it."""

    columns: list[tuple[str, str, str]]
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""

    @property
    def headers(self) -> list[str]:
        return [header for header, _, _ in self.columns]

    def write_csv(self, path: str | Path) -> int:
        """Write the table as CSV (plain headers, spreadsheet-safe text); returns the number of rows."""
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(self.headers)
            writer.writerows([spreadsheet_safe(v) for v in row] for row in self.rows)
        return len(self.rows)


def metric_columns(other: str) -> list[tuple[str, str, str]]:
    """The metric columns of a comparison with `other` (the model, or the other examiner)."""
    return [
        ("Responses", "n", "how many responses the figures rest on"),
        ("Too few to judge", "n < %d" % MIN_N, f"under {MIN_N} responses the figures below say little"),
        ("Correlation", "Pearson r", f"how closely the examiner's marks rise and fall with {other}'s: 1 perfectly, "
                                     "0 not at all"),
        ("Correlation, at least", "Pearson r, 95 % CI low", "the correlation is this or higher, 19 times in 20 "
                                                           "(Fisher z interval)"),
        ("Correlation, at most", "Pearson r, 95 % CI high", "the correlation is this or lower, 19 times in 20"),
        ("Agreement on the scale", "quadratic weighted kappa", f"agreement with {other} beyond chance, on the "
                                                               "scale's classes, a far miss counting more than a "
                                                               "near one: 1 identical, 0 no better than chance"),
        ("Same-class agreement", "Gwet's AC1", f"agreement with {other} on the exact class beyond chance, robust "
                                               "when most marks fall in a few classes: 1 identical, 0 chance"),
        ("Same class (%)", "exact agreement", f"share of responses given the same class as {other}"),
        ("Within one class (%)", "adjacent agreement", f"share of responses at most one class step from {other}"),
        ("Marks higher by", "mean bias", f"the examiner's mark minus {other}'s, on average, in score points: "
                                         "above 0 the examiner marks higher"),
    ]


def metric_row(m: dict[str, Any]) -> list[Any]:
    percent = [None if m[k] is None else round(100 * m[k], 1) for k in ("exact", "adjacent")]
    return [m["n"], "yes" if m["too_small"] else "no",
            *(None if m[k] is None else round(m[k], 3) for k in ("pearson", "pearson_low", "pearson_high", "qwk",
                                                                  "ac1")),
            *percent, None if m["bias"] is None else round(m["bias"], 2)]


def latest_marks(grade: dict[str, Any], independent: bool = False) -> dict[str, dict[str, Any]]:
    """{examiner: their newest mark of this grade}; `independent`: only marks made before the model was seen."""
    latest = {}
    for mark in grade["marks"]:  # oldest first: the newest wins
        if not independent or not mark["model_seen"]:
            latest[mark["examiner"]] = mark
    return latest


def examiners_vs_model(grades: list[dict[str, Any]], scale: ScoreScale, head: str = "regression",
                       independent: bool = False) -> Table:
    """Each examiner's latest mark of each scorable response against the model's `head` score; first row: every
    response's final mark. `independent`: only marks entered before the model's result was shown (blind)."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
    scored = [g for g in grades if g["scorable"] and g[head] is not None]
    pairs: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for grade in scored:
        for examiner, mark in latest_marks(grade, independent).items():
            pairs[examiner][0].append(mark["final_score"])
            pairs[examiner][1].append(grade[head])
        final = grade["final"]
        by_id = {m["id"]: m for m in grade["marks"]}
        if final["score"] is not None and not (independent and any(by_id[i]["model_seen"] for i in final["marks"])):
            pairs[None][0].append(final["score"])
            pairs[None][1].append(grade[head])
    rows = [["All examiners (final marks)", *metric_row(agreement(*pairs.get(None, ([], [])), scale))]]
    rows += [[examiner, *metric_row(agreement(*pairs[examiner], scale))] for examiner in sorted(pairs, key=str)
             if examiner is not None]
    kind = "marks entered before the model's result was shown" if independent else "marks"
    return Table([("Examiner", "examiner", "who marked"), *metric_columns("the model")], rows,
                 f"Each examiner's latest {kind} of each scored response against the model's {head} score; the "
                 "first row takes each response's final mark once. Under "
                 f"{MIN_N} responses a figure says little.")


def examiners_vs_examiners(grades: list[dict[str, Any]], scale: ScoreScale) -> Table:
    """Double-marked responses: the first mark in force against the second (first row); per examiner, their mark
    against the other marker's (bias: theirs minus the other's)."""
    pairs: dict[str | None, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for grade in grades:
        marking = Marking(grade["marks"])
        first, second = marking.in_force("first"), marking.in_force("second")
        if not (first and second):
            continue
        pairs[None][0].append(first["final_score"])
        pairs[None][1].append(second["final_score"])
        for mine, theirs in ((first, second), (second, first)):
            pairs[mine["examiner"]][0].append(mine["final_score"])
            pairs[mine["examiner"]][1].append(theirs["final_score"])
    rows = [["All double-marked responses (first − second)", *metric_row(agreement(*pairs.get(None, ([], [])),
                                                                                    scale))]]
    rows += [[examiner, *metric_row(agreement(*pairs[examiner], scale))] for examiner in sorted(pairs, key=str)
             if examiner is not None]
    return Table([("Examiner", "examiner", "who marked"), *metric_columns("the other marker")], rows,
                 "Double-marked responses: the first mark in force against the second; per examiner, their mark "
                 f"against the other marker's. Under {MIN_N} responses a figure says little.")


def distributions(grades: list[dict[str, Any]], scale: ScoreScale, head: str = "hard") -> Table:
    """The share of each examiner's marks (their latest per response) in each of the scale's classes, with mean
    and spread; last row: the model's `head` scores of the same scored responses."""
    values = scale.values.tolist()
    columns = [("Examiner", "examiner", "who marked"), ("Marks", "n", "how many responses they marked"),
               ("Average", "mean", "their average mark"), ("Spread", "standard deviation", "how widely their marks "
                                                                                      "vary (sample sd)")]
    columns += [(f"{v:g} (%)", f"share at {v:g}", f"share of their marks at {v:g} (nearest class)") for v in values]
    marks: dict[str, list[float]] = defaultdict(list)
    for grade in grades:
        for examiner, mark in latest_marks(grade).items():
            marks[examiner].append(mark["final_score"])
    model = [g[head] for g in grades if g["scorable"] and g[head] is not None]

    def row(name: str, scores: list[float]) -> list[Any]:
        counts = np.bincount(classes(scores, scale), minlength=scale.num_classes) if scores else np.zeros(len(values))
        sd = float(np.std(scores, ddof=1)) if len(scores) > 1 else None
        return [name, len(scores), round(float(np.mean(scores)), 2) if scores else None,
                None if sd is None else round(sd, 2),
                *(round(100 * c / len(scores), 1) if scores else None for c in counts)]

    rows = [row(examiner, marks[examiner]) for examiner in sorted(marks)] + [row(f"Model ({head})", model)]
    return Table(columns, rows, f"Each examiner's latest mark of each response, by class; the model's {head} "
                                "score of the scored responses marked.")


def week_of(when: datetime) -> str:
    """The ISO week's Monday, as a date (2026-11-30)."""
    return (when - timedelta(days=when.weekday())).date().isoformat()


def drift(grades: list[dict[str, Any]], scale: ScoreScale, head: str = "regression") -> Table:
    """Per examiner and week (of the mark), their latest marks of scored responses against the model: does an
    examiner's bias move over time?"""
    pairs: dict[tuple[str, str], tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for grade in grades:
        if not grade["scorable"] or grade[head] is None:
            continue
        for examiner, mark in latest_marks(grade).items():
            pairs[examiner, week_of(mark["created_at"])][0].append(mark["final_score"])
            pairs[examiner, week_of(mark["created_at"])][1].append(grade[head])
    columns = [("Examiner", "examiner", "who marked"), ("Week of", "ISO week (Monday)", "the week the marks were "
                                                                                      "entered"),
               *(c for c in metric_columns("the model") if c[1] in ("n", "n < %d" % MIN_N, "exact agreement",
                                                                    "mean bias"))]
    rows = []
    for (examiner, week), (a, b) in sorted(pairs.items()):
        m = agreement(a, b, scale)
        rows.append([examiner, week, m["n"], "yes" if m["too_small"] else "no", round(100 * m["exact"], 1),
                     round(m["bias"], 2)])
    return Table(columns, rows, f"Each examiner's latest marks, by the week they were entered, against the model's "
                                f"{head} score. Under {MIN_N} responses in a week a figure says little.")
