"""The app's callbacks on real audio, a real tiny checkpoint and a real SQLite file: no browser needed."""

import csv
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf

from grader.inference import Grader
from storage import Database
from ui import callbacks as cb
from ui.cards import result_card
from ui.app import build_app
from ui.charts import distribution_figure
from ui.config import AppConfig, check_login, read_users, roles

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def grader(tiny_checkpoint) -> Grader:
    return Grader.load(tiny_checkpoint, device="cpu")


@pytest.fixture
def services(grader, tmp_path) -> cb.Services:
    config = AppConfig(data_dir=str(tmp_path / "data"), db=str(tmp_path / "grades.db"))
    db = Database.open(config.database_url)
    yield cb.Services(config, grader, db, workdir=tmp_path / "work")
    db.close()


@pytest.fixture
def silent_wav(tmp_path) -> Path:
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(3 * 16_000, dtype=np.float32), 16_000)
    return path


@pytest.fixture(autouse=True)
def _workdir(tmp_path):
    (tmp_path / "work").mkdir()


def test_grade_stores_response_and_grade(services, speech_clip):
    graded = cb.grade_file(services, speech_clip, "cand-1", "part 1", "WE CALL IT BEAR")
    stored = services.db.grade(graded.grade_id)
    assert stored["scorable"] and stored["response"]["candidate_id"] == "cand-1"
    assert stored["response"]["part"] == "part 1" and len(stored["response"]["audio_sha256"]) == 64
    assert stored["response"]["audio_path"] is None  # default retention keeps only hash + metadata
    assert set(stored["scores"]) == set(services.grader.aspects)
    assert stored["regression"] == pytest.approx(graded.prediction.scores["total"].regression)
    card = result_card(graded)
    for aspect in services.grader.aspects:
        assert f'<th scope="row">{aspect}</th>' in card
    assert f'<span class="score">{graded.prediction.scores["total"].soft:.1f}</span>' in card
    assert cb.result_json(graded)["grade_id"] == graded.grade_id


def test_retention_keep_stores_the_audio(services, speech_clip):
    services.config.retention = "keep"
    graded = cb.grade_file(services, speech_clip)
    kept = Path(services.db.grade(graded.grade_id)["response"]["audio_path"])
    assert kept.read_bytes() == speech_clip.read_bytes() and kept.is_relative_to(services.config.data_dir)


def test_silent_file_is_stored_non_scorable_without_a_score(services, silent_wav):
    graded = cb.grade_file(services, silent_wav)
    assert graded.prediction is None and cb.figure(graded) is None
    stored = services.db.grade(graded.grade_id)
    assert not stored["scorable"] and stored["regression"] is None and stored["scores"] == {}
    assert stored["gate_reason"] == graded.gate.reason and stored["gate_measures"]["gate_code"] == "silent"
    card = result_card(graded)
    assert "Not scored" in card and "silent" in card and "regression" not in card


def test_unreadable_file_is_refused_and_stored(services, tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 100)
    graded = cb.grade_file(services, junk)
    assert graded.prediction is None and graded.gate.code == "unreadable"
    assert not services.db.grade(graded.grade_id)["scorable"]


def test_100_kb_prompt_is_refused_before_anything_is_stored(services, speech_clip):
    pasted = "THE QUICK BROWN FOX " * 5_000  # 100 kB, e.g. a file pasted by mistake
    with pytest.raises(gr.Error, match="reference text is 100,000 characters long; at most 2,000"):
        cb.grade_file(services, speech_clip, prompt=pasted)
    with pytest.raises(gr.Error, match="000010011.flac: The reference text is 100,000"):
        cb.grade_many(services, [(speech_clip, "", "", "WE CALL IT BEAR"), (speech_clip, "", "", pasted)])
    assert services.db.history() == []
    assert cb.grade_file(services, speech_clip, prompt="WE CALL IT BEAR").prediction is not None


def test_no_checkpoint_refuses_to_grade(services, speech_clip):
    services.grader = None
    with pytest.raises(gr.Error, match="checkpoint"):
        cb.grade_file(services, speech_clip)


def test_page_says_when_no_checkpoint_is_loaded(services):
    services.grader = None
    demo = build_app(services)
    banners = [b.value for b in demo.blocks.values() if isinstance(b, gr.HTML) and b.value]
    assert any("No checkpoint loaded" in v and "python -m grader.train" in v for v in banners)
    assert not next(b for b in demo.blocks.values() if isinstance(b, gr.Button) and b.value == "Grade").interactive


def test_override_saved_and_found(services, speech_clip):
    graded = cb.grade_file(services, speech_clip)
    message = cb.save_override(services, graded.grade_id, 6.0, "partly", "fluency", " hesitant ", "ann")
    assert message.startswith("✓")
    [override] = services.db.grade(graded.grade_id)["overrides"]
    assert (override["examiner"], override["final_score"], override["agreement"], override["reason_code"],
            override["comment"]) == ("ann", 6.0, "partly", "fluency", "hesitant")


@pytest.mark.parametrize("score, agreement, message", [(None, "agree", "final score"), (11.0, "agree", "between"),
                                                       (5.0, None, "agree, partly")])
def test_override_rejects_bad_input(services, speech_clip, score, agreement, message):
    graded = cb.grade_file(services, speech_clip)
    with pytest.raises(gr.Error, match=message):
        cb.save_override(services, graded.grade_id, score, agreement, "", "", "ann")


def test_override_off_the_scale_steps_or_of_an_unscored_response_is_refused(services, speech_clip, silent_wav):
    """Issue 16: 6.5 was accepted on the 0-10 scale of whole points, and a "Not scored" response took a mark."""
    graded = cb.grade_file(services, speech_clip)
    with pytest.raises(gr.Error, match=r"6.5 is not a score on the speechocean762 scale: .* steps of 1"):
        cb.save_override(services, graded.grade_id, 6.5, "partly", "", "", "ann")
    refused = cb.grade_file(services, silent_wav)
    with pytest.raises(gr.Error, match=f"Grade #{refused.grade_id} was not scored"):
        cb.save_override(services, refused.grade_id, 5.0, "disagree", "", "", "ann")
    with pytest.raises(gr.Error, match="There is no grade #999"):
        cb.save_override(services, 999, 5.0, "agree", "", "", "ann")
    assert services.db.grade(graded.grade_id)["overrides"] == services.db.grade(refused.grade_id)["overrides"] == []
    assert cb.save_override(services, graded.grade_id, 7, "partly", "", "", "ann").startswith("✓")


def test_override_on_read_only_database_is_kept_for_retry(services, speech_clip, tmp_path):
    graded = cb.grade_file(services, speech_clip)
    services.db.close()
    db_file = tmp_path / "grades.db"
    services.db = Database.open(f"sqlite:///file:{db_file}?mode=ro&uri=true", outbox=tmp_path / "outbox.jsonl")
    message = cb.save_override(services, graded.grade_id, 5.0, "disagree", "", "", "ann")
    assert "outbox" in message and "read-only" in message
    services.db.close()
    services.db = Database.open(db_file, outbox=tmp_path / "outbox.jsonl")  # writable again: the outbox replays
    assert [o["final_score"] for o in services.db.grade(graded.grade_id)["overrides"]] == [5.0]


def test_examiner_is_the_login_when_auth_is_on():
    assert cb.examiner_id("alice", "mallory") == "alice"
    assert cb.examiner_id(None, " bob ") == "bob"
    with pytest.raises(gr.Error):
        cb.examiner_id(None, "  ")


def test_auth_session_wins_over_client_name_in_the_app(services, speech_clip):
    """The app's override event, called as Gradio calls it, under auth: the typed name is ignored."""
    graded = cb.grade_file(services, speech_clip)
    demo = build_app(services, auth=True)
    override = next(fn for fn in demo.fns.values() if fn.api_name == "override").fn
    request = gr.Request(username="alice")
    override(graded.grade_id, 7.0, "agree", "", "", "mallory", request)
    assert services.db.grade(graded.grade_id)["overrides"][0]["examiner"] == "alice"


def test_auth_users_from_file_and_env(tmp_path, monkeypatch):
    users_file = tmp_path / "users.txt"
    users_file.write_text("# examiners\nalice:s3cret:with:colons:examiner\n\nbob:pw:adjudicator\n")
    monkeypatch.setenv("GRADER_AUTH", "carol:x")
    config = AppConfig(auth_file=str(users_file))
    users = read_users(config)
    assert users == {"alice": "s3cret:with:colons", "bob": "pw", "carol": "x"}
    assert roles(config) == {"alice": "examiner", "bob": "adjudicator", "carol": "examiner"}
    with pytest.raises(ValueError, match="unknown role 'colons'"):  # a password with ':' must end with its role
        users_file.write_text("alice:s3cret:with:colons\n")
        read_users(config)
    login = check_login(users)
    assert login("alice", "s3cret:with:colons") and not login("alice", "pw") and not login("eve", "")


def test_history_and_export(services, speech_clip, silent_wav):
    first = cb.grade_file(services, speech_clip, "cand-1", "p1")
    cb.grade_file(services, silent_wav, "cand-2", "p1")
    cb.save_override(services, first.grade_id, 8.0, "agree", "", "", "ann")
    rows = [dict(zip(cb.HISTORY_COLUMNS, r)) for r in cb.history_rows(services)]
    assert [r["candidate (or file)"] for r in rows] == ["cand-2", "cand-1"]
    assert rows[0]["status"].startswith("not scored") and rows[1]["status"] == "marked"
    assert rows[1]["final score"] == 8.0 and rows[1]["grade"] == first.grade_id
    assert [r[2] for r in cb.history_rows(services, candidate="cand-1")] == ["cand-1"]
    assert cb.history_rows(services, examiner="nobody") == []
    with open(cb.export_history(services, task_part="p1")) as f:
        exported = list(csv.DictReader(f))
    assert len(exported) == 2 and exported[1]["examiner"] == "ann" and exported[0]["file_name"] == "silent.wav"


def test_history_names_a_response_without_a_candidate_id_by_its_file(services, speech_clip):
    """Issue 16: batch files uploaded without a manifest have no candidate id; History tells them apart by name."""
    cb.grade_file(services, speech_clip)
    [row] = cb.history_rows(services)
    assert row[cb.HISTORY_COLUMNS.index("candidate (or file)")] == speech_clip.name


def test_agreement_tables_plot_and_csvs(services, speech_clip, silent_wav):
    """Two responses, ann marks both, bob one: the figures of ann's row, worked out here by hand."""
    assert cb.agreement(services).summary.startswith("No marks yet")
    first, second = cb.grade_file(services, speech_clip), cb.grade_file(services, speech_clip)
    cb.grade_file(services, silent_wav)  # not scored: in no table
    for grade, examiner, final in ((first, "ann", 3.0), (second, "ann", 9.0), (first, "bob", 8.0)):
        cb.save_override(services, grade.grade_id, final, "partly", "", "", examiner)
    report = cb.agreement(services, "regression")
    model = [services.db.grade(g.grade_id)["regression"] for g in (first, second)]
    bias = round(((3.0 - model[0]) + (9.0 - model[1])) / 2, 2)
    exact = 100 * sum(abs(m - round(x)) < 0.5 for m, x in zip((3.0, 9.0), model)) / 2
    vs_model = report.tables["Examiners against the model"]
    ann = next(row for row in vs_model.split("<tr") if row.startswith(" class=too-small><td>ann<"))
    cells = [c.split("</td>")[0] for c in ann.split("<td>")[1:]]
    assert cells[1:3] == ["2", "yes"] and cells[-1] == str(bias) and cells[-3] == str(round(exact, 1))
    assert 'title="Pearson r: how closely' in vs_model and "Too few to judge" in vs_model
    assert "Fewer than 10 responses" in report.summary and "**2** marked responses, **3** marks" in report.summary
    assert {t.name for t in report.drift.data} == {"ann", "bob"}
    assert [Path(p).name for p in report.csvs] == ["agreement-vs-model.csv", "agreement-vs-examiners.csv",
                                                   "agreement-distributions.csv", "agreement-drift.csv"]
    with open(report.csvs[0]) as f:
        rows = list(csv.DictReader(f))
    assert [r["Examiner"] for r in rows] == ["All examiners (final marks)", "ann", "bob"]
    assert float(rows[1]["Marks higher by"]) == bias


def test_agreement_filters_answers_that_do_not_read_their_reference_text(tmp_path, speechocean_clips):
    """Issue 15: the grade row keeps the grader's review reasons, and the Agreement tab can compare only the answers
    that read their reference text, or only those flagged as not reading it (a real clip, read against its own
    sentence and against another, by the shipped grader: the check needs real Whisper weights)."""
    config = AppConfig(data_dir=str(tmp_path / "data"), db=str(tmp_path / "grades.db"))
    services = cb.Services(config, Grader.load(REPO / "checkpoints" / "default", device="cpu"),
                           Database.open(config.database_url), workdir=tmp_path / "work")
    answer = speechocean_clips / "audio" / "000360013.flac"
    own = cb.grade_file(services, answer, prompt="IT'S JUST SO HARD TO PICTURE")
    other = cb.grade_file(services, answer, prompt="THE STATION IS CLOSED ON SUNDAYS AND HOLIDAYS")
    mine, theirs = (services.db.grade(g.grade_id)["review"] for g in (own, other))
    assert "reference_mismatch" not in {r["code"] for r in mine["reasons"]}
    assert "reference_mismatch" in {r["code"] for r in theirs["reasons"]}
    assert theirs["reference"]["words"] == 8 and mine["reference"]["found"] >= 3
    for grade in (own, other):
        cb.save_override(services, grade.grade_id, 4.0, "partly", "", "", "ann")
    counts = {which: cb.agreement(services, "soft", reference=which).summary.split("**")[1]
              for which in cb.REFERENCE_FILTERS}
    assert counts == {"all": "2", "matching": "1", "mismatch": "1"}
    with pytest.raises(gr.Error, match="Choose which responses"):
        cb.agreement(services, reference="some")
    services.db.close()


def test_batch_from_zip_and_manifest(services, speech_clip, silent_wav, tmp_path):
    archive = tmp_path / "answers.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(speech_clip, "inner/one.flac")
        z.write(silent_wav, "two.wav")
        z.writestr("notes.txt", "ignored")
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text(f"audio\tcandidate\tprompt\n{speech_clip.name}\tcand-9\tWE CALL IT BEAR\n")
    items = cb.batch_inputs(services, [str(archive)], None) + cb.batch_inputs(services, [str(speech_clip)],
                                                                                 str(manifest))
    header, rows, path = cb.grade_many(services, items)
    assert [r[0] for r in rows] == ["one.flac", "two.wav", speech_clip.name]
    assert [r[header.index("scorable")] for r in rows] == [True, False, True]
    assert rows[2][header.index("candidate")] == "cand-9" and rows[0][header.index("total_regression")] != ""
    with open(path) as f:
        assert len(list(csv.DictReader(f))) == 3
    assert len(services.db.history()) == 3


def test_batch_manifest_never_reaches_server_files(services, speech_clip, tmp_path):
    """A manifest row naming a file on the server (absolute, or ../ out of the upload) matches no upload: the row is
    refused as not found, and the file is neither opened, hashed nor graded."""
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"audio,candidate\n{speech_clip},c1\n../../{speech_clip.name},c2\n/etc/passwd,c3\n")
    items = cb.batch_inputs(services, [], str(manifest))
    header, rows, _ = cb.grade_many(services, items)
    assert [r[header.index("scorable")] for r in rows] == [False, False, False]
    assert all("not found" in r[header.index("reason")] for r in rows)
    assert {r["audio_sha256"] for r in services.db.history()} == {""}


def test_distribution_chart_has_bars_and_both_lines(services, speech_clip):
    prediction = cb.grade_file(services, speech_clip).prediction
    score = prediction.scores["total"]
    fig = distribution_figure(score, prediction.scale)
    bars, *lines = fig.data
    assert bars.type == "bar" and list(bars.y) == pytest.approx(score.probs)
    assert list(bars.x) == prediction.scale.values.tolist()
    assert [(line.name.split()[0], line.x[0]) for line in lines] == [("regression", score.regression),
                                                                     ("soft", score.soft)]


def test_every_event_has_an_api_name(services):
    demo = build_app(services)
    names = {fn.api_name for fn in demo.fns.values() if fn.api_visibility != "private"}
    assert {"grade", "evidence", "word_audio", "override", "history", "export_history", "agreement",
            "grade_batch"} <= names


def test_a_busy_port_is_one_line_naming_the_flag(tmp_path):
    """Issue 16: a port in use gave a raw traceback suggesting `launch(server_port=...)`; now one line, before the
    model loads, naming --port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run([sys.executable, "app.py", "--port", str(port), "--host", "127.0.0.1",
                              "--db", str(tmp_path / "grades.db"), "--data-dir", str(tmp_path / "data")],
                             cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert f"port {port} on 127.0.0.1 is not free" in lines[0] and "--port N" in lines[0]
    assert not (tmp_path / "grades.db").exists()


def test_the_empty_batch_table_shows_its_columns(services):
    """Issue 16: before any batch, the table's headers were "1 2 3"."""
    demo = build_app(services)
    tables = [b for b in demo.blocks.values() if isinstance(b, gr.Dataframe)]
    expected = cb.batch_header(services.grader.aspects)
    assert expected[:7] == ["file", "candidate", "response", "grade", "scorable", "reason", "total_regression"]
    assert any(t.value["headers"] == expected for t in tables)


def test_a_word_is_picked_by_its_index_and_anything_else_has_a_message():
    """The word picker takes an index from a script (its choices are empty until evidence exists)."""
    audio = np.linspace(-0.5, 0.5, 16_000, dtype=np.float32)
    words = [{"text": "bear", "start": 0.2, "end": 0.5, "probability": 0.9, "low_confidence": False}]
    found = cb.Evidence(1, {"transcript": {"words": words}}, audio)
    rate, clip = cb.word_audio(found, 0)
    assert rate == 16_000 and len(clip) == int(0.55 * 16_000) - int(0.15 * 16_000)
    for bad in ("abc", 1, 0.5, -1):
        with pytest.raises(gr.Error, match="Pick a word of the transcript: a number from 0 to 0"):
            cb.word_audio(found, bad)


def test_the_page_says_who_is_logged_in(services):
    shown = cb.signed_in_html("<b>ann</b>", "adjudicator")
    assert "Logged in as <strong>&lt;b&gt;ann&lt;/b&gt;</strong> (adjudicator)" in shown
    demo = build_app(services, auth=True)
    assert any(isinstance(b, gr.Button) and b.link == "/logout" for b in demo.blocks.values())


def test_blind_double_marking_and_adjudication(services, speech_clip):
    """A session that double-marks every response, under blind marking: the first and second markers see neither the
    model's result nor each other's mark before their own is saved; a disagreement reaches the adjudicator's queue,
    whose mark becomes final; what each had seen is stored with the mark."""
    from ui import marking

    services.config.blind = True
    services.roles = {"ann": "examiner", "bob": "examiner", "cleo": "adjudicator"}
    session = cb.batch_session(services, "May 2026", 100)
    [(header, rows)] = list(cb.grade_rows(services, [(speech_clip, "cand-1", "part 1", "")], session_id=session))
    grade_id = rows[0][header.index("grade")]
    assert marking.queue_rows(services, "ann", "examiner", session)[0][:2] == [grade_id, "first"]
    heading, audio, card, chart, evidence, timeline, marks, opened = marking.open_review(services, grade_id, "ann",
                                                                                         "examiner")
    score = f'{services.db.grade(grade_id)["soft"]:.1f}'
    assert "withheld" in card and chart is None and evidence == "" and score not in card + heading + marks
    assert "speechocean" not in heading and "May 2026" in heading and "000010011.flac" in heading
    assert marking.save_mark(services, opened, 4, None, "", "", "ann", "examiner").startswith("✓ Mark saved")
    assert "withheld" not in marking.open_review(services, grade_id, "ann", "examiner")[2]  # revealed once marked

    assert marking.queue_rows(services, "ann", "examiner") == []
    for viewer, role, shown in (("bob", "examiner", ""), ("ann", "examiner", 4.0), ("cleo", "adjudicator", 4.0)):
        [history] = cb.history_rows(services, role=role, viewer=viewer)  # bob does not learn ann's mark here
        assert history[4] == "awaiting second mark" and history[7] == shown and (history[8] == "ann") == bool(shown)
    [row] = marking.queue_rows(services, "bob", "examiner", session)
    assert row[:2] == [grade_id, "second"]
    *_, card, _, _, _, marks, opened = marking.open_review(services, grade_id, "bob", "examiner")
    assert "withheld" in card and "ann" not in marks and "1 other mark(s) are not shown" in marks
    marking.save_mark(services, opened, 8, None, "fluency", "", "bob", "examiner")

    assert marking.queue_rows(services, "bob", "examiner") == []
    [row] = marking.queue_rows(services, "cleo", "adjudicator")
    assert row[:2] == [grade_id, "adjudication"]
    *_, card, _, _, _, marks, opened = marking.open_review(services, grade_id, "cleo", "adjudicator")
    assert "withheld" not in card and "ann" in marks and "bob" in marks and "awaiting adjudication" in marks
    with pytest.raises(gr.Error, match="agree, partly or disagree"):
        marking.save_mark(services, opened, 6, None, "", "", "cleo", "adjudicator")
    marking.save_mark(services, opened, 6, "partly", "", "", "cleo", "adjudicator")
    assert services.db.final_mark(grade_id)["score"] == 6
    assert services.db.final_mark(grade_id)["status"] == "adjudicated"
    stored = {m["examiner"]: m for m in services.db.grade(grade_id)["overrides"]}
    assert [stored[e]["phase"] for e in ("ann", "bob", "cleo")] == ["first", "second", "adjudication"]
    assert (stored["ann"]["model_seen"], stored["ann"]["seen"]) == (False, [])
    assert (stored["cleo"]["model_seen"], stored["cleo"]["seen"]) == (True, ["model", "marks"])
    assert "adjudicated: <strong>6" in marking.open_review(services, grade_id, "ann", "examiner")[6]
    assert cb.history_rows(services, role="examiner", viewer="bob")[0][4:9] == ["adjudicated", "", "", 6.0, "cleo"]


def test_under_blind_marking_lists_show_examiners_no_model_scores(services, speech_clip):
    services.config.blind = True
    [(header, [row])] = list(cb.grade_rows(services, [(speech_clip, "c", "", "")], show_model=False))
    assert row[header.index("total_soft")] == "" and row[header.index("cefr")] == ""
    [shown] = cb.history_rows(services, role="examiner")
    assert shown[cb.HISTORY_COLUMNS.index("model score")] == "" and shown[cb.HISTORY_COLUMNS.index("CEFR")] == ""
    assert cb.history_rows(services, role="adjudicator")[0][cb.HISTORY_COLUMNS.index("model score")] != ""
    with pytest.raises(gr.Error, match="for adjudicators and admins"):
        cb.export_history(services, role="examiner")
    assert Path(cb.export_history(services, role="admin")).is_file()
    graded = cb.grade_file(services, speech_clip)
    assert "withheld" in cb.blind_card(graded) and "soft" not in cb.blind_json(graded)
