"""Access to the running app with login on: every route that reads or writes examiner data refuses an anonymous
client, an override's examiner is the login whatever the client sends, the data folder is never served, and
uploads live in a private temp folder that is gone after the app stops."""

import signal
import sqlite3
import stat

import httpx
import pytest
from conftest import launch_app
from gradio_client import Client, handle_file

from storage import outbox_path

USERS = {"ann": "correct horse", "bob": "battery staple"}
DATA_EVENTS = ["grade", "evidence", "word_audio", "override", "history", "export_history", "agreement", "grade_batch"]


@pytest.fixture(scope="module")
def app(tiny_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("auth-app")
    auth = ",".join(f"{user}:{password}" for user, password in USERS.items())
    with launch_app(tiny_checkpoint, folder, "--retention", "keep", env={"GRADER_AUTH": auth}) as running:
        yield running


def logged_in(app, user: str = "ann") -> httpx.Client:
    client = httpx.Client(base_url=app.url, timeout=30)
    response = client.post("login", data={"username": user, "password": USERS[user]})
    assert response.status_code == 200 and response.json() == {"success": True}
    return client


def test_anonymous_clients_reach_nothing(app):
    anonymous = httpx.Client(base_url=app.url, timeout=30)
    for event in DATA_EVENTS:
        assert anonymous.post(f"gradio_api/call/{event}", json={"data": []}).status_code == 401, event
    for path in ["gradio_api/queue/join", "gradio_api/upload"]:
        assert anonymous.post(path, json={}).status_code == 401, path
    for path in ["config", "gradio_api/info", f"gradio_api/file={app.db}"]:
        assert anonymous.get(path).status_code == 401, path
    assert "Examiner login" in anonymous.get("").text  # the page itself is the login form
    with pytest.raises(Exception):
        Client(app.url, verbose=False)


def test_wrong_password_is_refused(app):
    response = httpx.post(app.url + "login", data={"username": "ann", "password": "battery staple"})
    assert response.status_code == 400


def test_override_examiner_is_the_login_not_the_client_field(app, speech_clip):
    client = Client(app.url, auth=("bob", USERS["bob"]), verbose=False)
    grade_id = client.predict(handle_file(str(speech_clip)), "cand-auth", "", "", api_name="/grade")[3]
    evidence = client.predict(api_name="/evidence")[-1]  # of the grade this session just made
    assert evidence["version"] == 1 and evidence["measures"]["span_s"] > 1  # the tiny model has no transcript
    message = client.predict(grade_id, 4.0, "disagree", "", "typed as someone else", "mallory", api_name="/override")
    assert message.startswith("✓") and "by bob" in message
    with sqlite3.connect(app.db) as connection:
        stored = connection.execute("SELECT examiner FROM overrides WHERE comment = 'typed as someone else'").fetchall()
    assert stored == [("bob",)]
    rows = client.predict("cand-auth", "", "", api_name="/history")
    assert any("bob" in row for row in rows["data"])


def test_data_folder_and_database_are_never_served(app, speech_clip):
    Client(app.url, auth=("ann", USERS["ann"]), verbose=False).predict(
        handle_file(str(speech_clip)), "cand-keep", "", "", api_name="/grade")
    kept = list((app.folder / "data" / "audio").glob("*.flac"))  # --retention keep stored the upload here
    assert kept
    session = logged_in(app)
    for path in [app.db, kept[0], outbox_path(app.db), app.folder / "app.log"]:
        assert session.get(f"gradio_api/file={path}").status_code in (403, 404), path


def test_uploads_are_private_limited_and_removed_when_the_app_stops(tiny_checkpoint, speech_clip, tmp_path):
    with launch_app(tiny_checkpoint, tmp_path, "--max-upload-mb", "1") as running:
        Client(running.url, verbose=False).predict(handle_file(str(speech_clip)), "", "", "", api_name="/grade")
        too_big = httpx.post(running.url + "gradio_api/upload", files={"files": ("big.wav", b"\0" * 2**21)})
        assert too_big.status_code == 413 and "maximum allowed size" in too_big.text
        (uploads,) = (tmp_path / "tmp").glob("grader-uploads-*")
        assert stat.S_IMODE(uploads.stat().st_mode) == 0o700
        assert any(p.suffix == ".flac" for p in uploads.rglob("*"))
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(timeout=60) == 0, running.log()
    assert not uploads.exists()
