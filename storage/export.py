"""History rows as the CSV export writes them: every stored column, each aspect's scores, the evidence's key figures
and word scores, and the evidence."""

import csv
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from .models import Grade, Override, Response

# The evidence's key figures as columns, and all of it as JSON in the last column.
EVIDENCE_MEASURES = ["speech_rate_wpm", "speech_rate_sps", "articulation_rate_sps", "pauses", "mean_pause_s",
                     "longest_pause_s", "phonation_ratio"]
HISTORY_COLUMNS = ["graded_at", "response_id", "session_id", "candidate_id", "file_name", "part", "prompt_text",
                   "duration_s", "audio_sha256",
                   "grade_id", "checkpoint_id", "scale_name", "headline", "regression", "soft", "hard", "scorable",
                   "gate_reason", "latency_s", "override_id", "examiner", "final_score", "agreement", "reason_code",
                   "comment", "overridden_at", "transcript", *EVIDENCE_MEASURES, "evidence"]
ASPECT_COLUMNS = ("regression", "soft")  # per aspect, after the headline's columns, as Batch's CSV has them
WORD_ASPECTS = ("accuracy", "total")  # word scores as columns: "WE 9.6; CALL 7.1; ..."
DIGITS = 3  # floats in a CSV: enough for any scale's step, without binary noise (6.300000000000001)


CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0 (but tab and line ends), DEL, C1
FORMULA = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet runs a cell starting with these as a formula


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as the text it is: control characters (NUL, ESC...) removed, and text
    that would start a formula (=HYPERLINK(...), +, -, @, tab, CR) prefixed with an apostrophe. Numbers stay numbers;
    every CSV the app writes goes through here."""
    if not isinstance(value, str):
        return value
    value = CONTROL.sub("", value)
    return "'" + value if value.startswith(FORMULA) else value


def csv_value(value: Any) -> Any:
    """A history value as a CSV cell: times in ISO 8601, floats to DIGITS decimals, the evidence as compact JSON,
    text spreadsheet-safe."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, DIGITS)
    if isinstance(value, dict):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return spreadsheet_safe(value)


def history_row(response: Response, grade: Grade, override: Override | None) -> dict[str, Any]:
    o = override or Override()  # no override: every field None
    return {"graded_at": grade.created_at, "response_id": response.id, "session_id": response.session_id,
            "candidate_id": response.candidate_id, "file_name": response.file_name,
            "part": response.part, "prompt_text": response.prompt_text, "duration_s": response.duration_s,
            "audio_sha256": response.audio_sha256, "grade_id": grade.id, "checkpoint_id": grade.checkpoint_id,
            "scale_name": grade.scale_name, "headline": grade.headline, "regression": grade.regression,
            "soft": grade.soft, "hard": grade.hard, "scorable": grade.scorable, "gate_reason": grade.gate_reason,
            "latency_s": grade.latency_s, "override_id": o.id, "examiner": o.examiner, "final_score": o.final_score,
            "agreement": o.agreement, "reason_code": o.reason_code, "comment": o.comment, "overridden_at": o.created_at,
            **aspect_columns(grade.scores or {}), **evidence_columns(grade.evidence)}


def aspect_columns(scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each aspect's regression and soft score as "<aspect>_regression", "<aspect>_soft"."""
    return {f"{aspect}_{head}": s.get(head) for aspect, s in scores.items() for head in ASPECT_COLUMNS}


def word_columns(words: list[dict[str, Any]] | None) -> dict[str, str]:
    """A prediction's word scores as one cell per word aspect, "WE 9.6; CALL 7.1" ("" where there are none)."""
    return {f"word_{a}": "; ".join(f'{w["word"]} {w[a]:.1f}' for w in words or [] if a in w) for a in WORD_ASPECTS}


def evidence_columns(evidence: dict[str, Any] | None) -> dict[str, Any]:
    """The transcript, key measures and the whole evidence of a grade (all None where it has none yet)."""
    evidence = evidence or {}
    measures = evidence.get("measures", {})
    return {"transcript": evidence.get("transcript", {}).get("text"),
            **{k: measures.get(k) for k in EVIDENCE_MEASURES},
            **word_columns(evidence.get("word_scores", {}).get("words")), "evidence": evidence or None}


def write_history_csv(rows: list[dict[str, Any]], path: str | Path) -> int:
    """Write history rows as CSV, each aspect's scores after the headline's (the aspects of every row, in order
    of appearance); returns the number of rows."""
    aspects = list(dict.fromkeys(k for r in rows for k in r if k.endswith(tuple(f"_{h}" for h in ASPECT_COLUMNS))))
    at = HISTORY_COLUMNS.index("scorable")
    words = [f"word_{a}" for a in WORD_ASPECTS]
    columns = [*HISTORY_COLUMNS[:at], *aspects, *HISTORY_COLUMNS[at:-1], *words, HISTORY_COLUMNS[-1]]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: csv_value(v) for k, v in r.items()} for r in rows)
    return len(rows)
