"""Agreement metrics on marks worked out by hand (and Gwet's AC1 on his own worked example), their edge cases, and
the tables built from a real database: each response counted once, plain headers with the metric on hover, CSV."""

import csv
import math
from datetime import UTC, datetime

import numpy as np
import pytest

from grader.scale import SCALES
from storage import Database
from storage.agreement import (MIN_N, agreement, distributions, drift, examiners_vs_examiners, examiners_vs_model,
                               gwet_ac1)

SO = SCALES["speechocean762"]  # 0-10, step 1: 11 classes
EXAMINER = [6.0, 7.0, 8.0, 5.0, 9.0]
MODEL = [6.0, 8.0, 8.0, 7.0, 9.0]


def test_metrics_by_hand():
    m = agreement(EXAMINER, MODEL, SO)
    # differences 0, -1, 0, -2, 0
    assert m["n"] == 5 and m["too_small"]
    assert m["bias"] == pytest.approx(-3 / 5)
    assert (m["exact"], m["adjacent"]) == (pytest.approx(3 / 5), pytest.approx(4 / 5))
    # deviations from the means (7 and 7.6): (-1, 0, 1, -2, 2) and (-1.6, .4, .4, -.6, 1.4): r = 6 / sqrt(10 * 5.2)
    r = 6 / math.sqrt(10 * 5.2)
    assert m["pearson"] == pytest.approx(r)
    z, half = math.atanh(r), 1.959964 / math.sqrt(5 - 3)  # Fisher z, se 1/sqrt(n - 3)
    assert (m["pearson_low"], m["pearson_high"]) == (pytest.approx(math.tanh(z - half), abs=1e-5),
                                                     pytest.approx(math.tanh(z + half), abs=1e-5))
    # quadratic kappa = 1 - observed / expected squared differences: observed 0+1+0+4+0 = 5; expected over all 25
    # pairings / n = (5 * 255 + 5 * 294 - 2 * 35 * 38) / 5 = 17 (sums of squares 255, 294; sums 35, 38)
    assert m["qwk"] == pytest.approx(1 - 5 / 17)
    # AC1: pa = 3/5; pi over classes 5..9 = .1, .2, .2, .3, .2; pe = sum pi (1 - pi) / (11 - 1) = .78 / 10
    assert m["ac1"] == pytest.approx((0.6 - 0.078) / (1 - 0.078))


def test_ac1_on_gwets_worked_example():
    """Gwet (2014), Handbook of Inter-Rater Reliability: 100 pregnancies classified by two abstractors into 3 types
    (irrCAC's cont3x3abstractors); AC1 = 0.849 there. Rows: abstractor 1, columns: abstractor 2."""
    table = [[13, 0, 0], [0, 20, 7], [0, 4, 56]]
    a = np.array([i for i, row in enumerate(table) for j, count in enumerate(row) for _ in range(count)])
    b = np.array([j for i, row in enumerate(table) for j, count in enumerate(row) for _ in range(count)])
    assert round(gwet_ac1(a, b, 3), 3) == 0.849


def test_edge_cases():
    empty = agreement([], [], SO)
    assert empty["n"] == 0 and empty["too_small"]
    assert all(empty[k] is None for k in ("pearson", "pearson_low", "qwk", "ac1", "exact", "adjacent", "bias"))
    one = agreement([6.0], [6.0], SO)
    assert (one["pearson"], one["qwk"], one["ac1"], one["exact"], one["bias"]) == (None, None, 1.0, 1.0, 0.0)
    same = agreement([7.0] * 12, [7.0] * 12, SO)  # kappa is 0/0; AC1 sees perfect agreement
    assert (same["too_small"], same["pearson"], same["qwk"], same["ac1"], same["exact"]) == (False, None, None, 1.0,
                                                                                           1.0)
    flat = agreement([7.0] * 4, [6.0, 7.0, 8.0, 7.0], SO)  # one side constant: no correlation; kappa at chance
    assert flat["pearson"] is None and flat["qwk"] == pytest.approx(0.0)
    assert agreement([1.0] * (MIN_N - 1), [1.0] * (MIN_N - 1), SO)["too_small"]
    assert not agreement([1.0] * MIN_N, [1.0] * MIN_N, SO)["too_small"]
    assert agreement([6.5, 2.0], [6.0, 2.0], SO)["exact"] == 1.0  # 6.5 rounds to its nearest class (6: half to even)
    with pytest.raises(ValueError, match="paired"):
        agreement([1.0], [], SO)


def graded(db: Database, regression: float, session_id: int | None = None) -> int:
    response = db.add_response(audio_sha256="ab" * 32, duration_s=3.0, session_id=session_id)
    return db.add_grade(response, checkpoint_id="ck", scale_name="speechocean762", latency_s=0.1,
                        scores={"total": {"regression": regression, "soft": regression, "hard": round(regression)}},
                        scorable=True)


def test_tables_from_the_database(tmp_path):
    with Database.open(tmp_path / "grades.db") as db:
        session = db.add_session("May", double_marking=1.0)
        g = [graded(db, model, session) for model in MODEL[:4]]  # the model: 6, 8, 8, 7
        marks = [(g[0], "alice", 6.0), (g[0], "bob", 7.0),  # agreed: final 6.5
                 (g[1], "alice", 5.0), (g[1], "alice", 7.0),  # alice corrects herself: 7 in force
                 (g[2], "=cmd", 8.0), (g[3], "bob", 5.0)]
        for grade_id, examiner, score in marks:
            db.add_override(grade_id, examiner=examiner, final_score=score, agreement="agree")
        grades = db.marked("speechocean762")
        assert [x["grade_id"] for x in grades] == g and db.marked("sandi") == []

        table = examiners_vs_model(grades, SO)
        assert table.headers[:3] == ["Examiner", "Responses", "Too few to judge"]
        assert table.columns[7][:2] == ("Same-class agreement", "Gwet's AC1")
        assert all(len(column) == 3 for column in table.columns)  # (header, metric, help)
        rows = {row[0]: row for row in table.rows}
        # every response once, with its final mark: 6.5 (two marks agreed), 7, 8, 5 against 6, 8, 8, 7
        overall = rows["All examiners (final marks)"]
        assert overall[1:3] == [4, "yes"] and overall[-1] == round((0.5 - 1 + 0 - 2) / 4, 2)
        assert rows["alice"][1] == 2 and rows["alice"][-1] == round(((6 - 6) + (7 - 8)) / 2, 2)
        assert rows["bob"][1] == 2 and rows["bob"][-1] == round(((7 - 6) + (5 - 7)) / 2, 2)
        assert rows["=cmd"][1] == 1 and rows["=cmd"][8] == 100.0  # exact agreement, %
        assert examiners_vs_model(grades, SO, independent=True).rows[0][1] == 0  # every mark saw the model

        pairs = {row[0]: row for row in examiners_vs_examiners(grades, SO).rows}
        assert pairs["All double-marked responses (first − second)"][1] == 1  # only g[0] has two markers
        assert pairs["alice"][-1] == -1.0 and pairs["bob"][-1] == 1.0

        shares = {row[0]: row for row in distributions(grades, SO).rows}
        assert shares["alice"][1:4] == [2, 6.5, round(float(np.std([6, 7], ddof=1)), 2)]
        assert shares["alice"][4 + 6] == 50.0 and shares["alice"][4 + 7] == 50.0  # half at 6, half at 7
        assert shares["Model (hard)"][1] == 4

        week = datetime.now(UTC)
        weekly = drift(grades, SO).rows
        assert {row[0] for row in weekly} == {"alice", "bob", "=cmd"} and all(row[1] <= week.date().isoformat()
                                                                               for row in weekly)

        path = tmp_path / "agreement.csv"
        assert table.write_csv(path) == 4
        with open(path, newline="", encoding="utf-8") as f:
            written = list(csv.reader(f))
        assert written[0] == table.headers and "'=cmd" in [row[0] for row in written]  # spreadsheet-safe
