"""The online backup of a live database: consistent while a writer keeps committing, outbox included."""

import subprocess
import sys

from storage import Database
from storage.backup import backup, main
from test_storage import REPO, WRITER, add_graded


def test_backup_while_a_writer_commits(tmp_path):
    path = tmp_path / "grades.db"
    with Database.open(path) as db:
        grade_id = add_graded(db)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(grade_id)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        acknowledged = {writer.stdout.readline().split()[0] for _ in range(200)}
        report = backup(path, tmp_path / "backups" / "grades.db")
    finally:
        writer.kill()
        writer.wait()
    assert report.grades == 1 and report.overrides >= len(acknowledged)
    with Database.open(report.path) as copy:  # a backup opens like the original
        assert {o["override_uuid"] for o in copy.grade(grade_id)["overrides"]} >= acknowledged


def test_backup_copies_pending_outbox_and_refuses_bad_targets(tmp_path, capsys):
    path = tmp_path / "grades.db"
    with Database.open(path) as db:
        add_graded(db)
    (tmp_path / "grades.db.outbox.jsonl").write_text('{"override_uuid": "x"}\n')
    assert main([str(path), str(tmp_path / "copy.db")]) == 0
    assert "1 grades and 0 overrides" in capsys.readouterr().out
    assert (tmp_path / "copy.db.outbox.jsonl").read_text() == '{"override_uuid": "x"}\n'
    assert main([str(path), str(path)]) == 1
    assert main([str(tmp_path / "missing.db"), str(tmp_path / "x.db")]) == 1
    assert "no database at" in capsys.readouterr().err
