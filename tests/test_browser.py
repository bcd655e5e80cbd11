"""The app as people and scripts use it: `python app.py` in a subprocess, driven by headless Chromium and by
gradio_client. Screenshots land in test-output/ (browser-grade.png, evidence-panel.png)."""

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import launch_app

from grader.inference import DEFAULT_CHECKPOINT

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOT = REPO / "test-output" / "browser-grade.png"
EVIDENCE_SCREENSHOT = REPO / "test-output" / "evidence-panel.png"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    """The real entry point on a free port, with the tiny checkpoint and a fresh SQLite file."""
    folder = tmp_path_factory.mktemp("app")
    db, port = folder / "grades.db", free_port()
    env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    env.pop("GRADER_AUTH", None)
    log = open(folder / "app.log", "w")
    process = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--checkpoint", str(tiny_checkpoint),
                                "--db", str(db), "--data-dir", str(folder / "data"), "--port", str(port),
                                "--host", "127.0.0.1"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"app exited ({process.returncode}):\n{(folder / 'app.log').read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        process.terminate()
        pytest.fail(f"app did not start in 120 s:\n{(folder / 'app.log').read_text()[-3000:]}")
    yield url, db
    process.terminate()
    process.wait(timeout=30)
    log.close()


def overrides(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT grade_id, examiner, final_score, agreement, reason_code, comment "
                                  "FROM overrides ORDER BY id").fetchall()


@pytest.mark.browser
def test_grade_and_override_in_the_browser(server, speech_clip):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    url, db = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1250})
        page.goto(url)
        page.locator("#audio-input input[type=file]").set_input_files(str(speech_clip))
        page.get_by_label("Candidate id").fill("cand-browser")
        page.get_by_label("Prompt or reference text").fill("WE CALL IT BEAR")
        page.get_by_role("button", name="Grade", exact=True).click()
        expect(page.locator(".card .score")).to_be_visible(timeout=60_000)
        expect(page.locator(".js-plotly-plot .barlayer")).to_be_visible(timeout=30_000)
        expect(page.locator(".js-plotly-plot").get_by_text("regression", exact=False).first).to_be_visible()
        grade_id = int(page.get_by_label("Grade #").input_value())
        page.get_by_label("Final score").fill("6")
        page.get_by_label("partly").check()
        page.get_by_label("Reason").click()
        page.get_by_role("option", name="fluency").click()
        page.get_by_label("Comment").fill("hesitant in the middle")
        page.get_by_label("Examiner name").fill("ann")
        page.get_by_role("button", name="Save override").click()
        expect(page.get_by_text("Override saved")).to_be_visible(timeout=30_000)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=SCREENSHOT, full_page=True)
        browser.close()
    assert (grade_id, "ann", 6.0, "partly", "fluency", "hesitant in the middle") in overrides(db)


def test_gradio_client_grades_and_overrides(server, speech_clip):
    from gradio_client import Client, handle_file

    url, db = server
    client = Client(url, verbose=False)
    card, chart, result, grade_id, *_ = client.predict(handle_file(str(speech_clip)), "cand-api", "part 2", "",
                                                       api_name="/grade")
    assert result["scorable"] and result["grade_id"] == grade_id and "total" in result["scores"]
    message = client.predict(grade_id, 7.0, "agree", "", "scripted", "script-bot", api_name="/override")
    assert message.startswith("✓")
    assert (grade_id, "script-bot", 7.0, "agree", None, "scripted") in overrides(db)


@pytest.mark.browser
def test_evidence_panel_follows_the_score(speechocean_clips, tmp_path):
    """The shipped grader (real Whisper tiny.en) on a real 6.5-s read-aloud answer with long pauses: the score shows,
    then the evidence panel with transcript, measures, comparison with the reference text and timeline; a word
    picked from the transcript plays back; the evidence is stored with the grade."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    answer = speechocean_clips / "audio" / "096340009.flac"  # a weak reader (accuracy 3), 4 silent pauses
    with launch_app(DEFAULT_CHECKPOINT, tmp_path) as app, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(app.url)
        page.locator("#audio-input input[type=file]").set_input_files(str(answer))
        page.get_by_label("Prompt or reference text").fill("THEY TURNED ALL TO HIM")
        page.get_by_role("button", name="Grade", exact=True).click()
        expect(page.locator(".card .score")).to_be_visible(timeout=60_000)
        panel = page.locator("#evidence-panel").first  # Gradio gives a group's id to two nested elements
        expect(panel.locator(".evidence .transcript")).to_be_visible(timeout=120_000)
        expect(panel.locator(".evidence .reference")).to_contain_text("turned")
        expect(panel.locator(".evidence table.measures")).to_contain_text("words/min")
        expect(panel.locator("#timeline .js-plotly-plot")).to_be_visible(timeout=30_000)
        page.locator("#word-pick input").click()
        page.get_by_role("option").first.click()
        expect(panel.locator("#word-audio audio, #word-audio .waveform-container").first).to_be_attached(
            timeout=30_000)
        grade_id = int(page.get_by_label("Grade #").input_value())
        EVIDENCE_SCREENSHOT.parent.mkdir(exist_ok=True)
        panel.screenshot(path=EVIDENCE_SCREENSHOT)
        page.screenshot(path=EVIDENCE_SCREENSHOT.with_name("evidence-page.png"), full_page=True)
        browser.close()
        with sqlite3.connect(app.db) as connection:
            (stored,) = connection.execute("SELECT evidence FROM grades WHERE id = ?", (grade_id,)).fetchone()
    evidence = json.loads(stored)
    assert evidence["version"] == 1 and evidence["measures"]["pauses"] >= 2 and evidence["reference"]


def test_gradio_client_plays_a_word_back(speechocean_clips, tmp_path):
    """Issue 16: /word_audio refused a script's word index ("not in the list of choices")."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    with launch_app(DEFAULT_CHECKPOINT, tmp_path) as app:
        client = Client(app.url, verbose=False)
        client.predict(handle_file(str(speechocean_clips / "audio" / "000360013.flac")), "", "", "",
                       api_name="/grade")
        words = client.predict(api_name="/evidence")[-1]["transcript"]["words"]
        clip = client.predict(0, api_name="/word_audio")
        with pytest.raises(AppError, match="Pick a word of the transcript: a number from 0"):
            client.predict(len(words), api_name="/word_audio")
    import soundfile as sf
    audio, rate = sf.read(clip)
    assert rate == 16_000 and len(audio) >= int((words[0]["end"] - words[0]["start"]) * rate)


@pytest.mark.browser
def test_an_answer_to_another_text_is_flagged_on_the_card(speechocean_clips, tmp_path):
    """The shipped grader on a real answer ("IT'S JUST SO HARD TO PICTURE") graded against another clip's sentence:
    the card asks for a review because the answer does not match the reference text, and says how many of its words
    were heard; graded against its own sentence, the card makes no such claim."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    answer = speechocean_clips / "audio" / "000360013.flac"
    with launch_app(DEFAULT_CHECKPOINT, tmp_path) as app, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(app.url)
        page.locator("#audio-input input[type=file]").set_input_files(str(answer))
        page.get_by_label("Prompt or reference text").fill("THEY TURNED ALL TO HIM")
        page.get_by_role("button", name="Grade", exact=True).click()
        flag = page.locator(".card .review li.reference_mismatch")
        expect(flag).to_have_text(re.compile(r"[Tt]he answer does not match the reference text \(\d of 5 words\)"),
                                  timeout=60_000)
        expect(page.locator(".card .review")).to_contain_text("Review recommended")
        first = page.get_by_label("Grade #").input_value()
        page.get_by_label("Prompt or reference text").fill("IT'S JUST SO HARD TO PICTURE")
        page.get_by_role("button", name="Grade", exact=True).click()
        expect(page.get_by_label("Grade #")).not_to_have_value(first, timeout=60_000)
        expect(page.locator(".card .score")).to_be_visible()
        expect(flag).to_have_count(0)
        browser.close()


@pytest.mark.browser
def test_the_card_shows_its_headline_and_the_disclosure_opens(speechocean_clips, tmp_path):
    """The shipped grader on a real answer: before any grade the final-score box is empty (not 0); after it, the
    card shows one number and what it is, the regression and most-likely values stay hidden until "About this
    score" is opened, and the evidence panel scores each word of the reference text; the timeline has no heavy
    frame."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    answer = speechocean_clips / "audio" / "000360013.flac"  # "IT'S JUST SO HARD TO PICTURE"
    with launch_app(DEFAULT_CHECKPOINT, tmp_path) as app, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(app.url)
        expect(page.get_by_label("Final score (0–10)", exact=True)).to_have_value("")
        page.locator("#audio-input input[type=file]").set_input_files(str(answer))
        page.get_by_label("Prompt or reference text").fill("IT'S JUST SO HARD TO PICTURE")
        page.get_by_role("button", name="Grade", exact=True).click()
        score = page.locator(".card .score")
        expect(score).to_have_text(re.compile(r"^\d+\.\d$"), timeout=60_000)
        expect(page.locator(".card .what")).to_contain_text("expected total score for this answer")
        expect(page.locator(".card .cefr")).to_have_text(re.compile(r"^band \d+–\d+$"))
        heads = page.locator(".card details.about table.heads")
        expect(heads).to_be_hidden()
        page.locator(".card details.about summary").click()
        expect(heads).to_be_visible()
        expect(heads).to_contain_text("most likely")
        expect(page.locator(".card details.about")).to_contain_text("a second estimate")
        expect(page.locator(".card details.about")).to_contain_text(
            "Total, accuracy, fluency and prosodic also weigh a second reading")
        expect(page.locator(".card details.about")).to_contain_text("lowest and mean word accuracy")
        header = heads.locator("th").nth(1).bounding_box()
        assert header["height"] < 40, header  # one line, not wrapped letter by letter
        panel = page.locator("#evidence-panel").first
        chips = panel.locator(".evidence .word-scores .wscore")  # the shipped grader scores each reference word
        expect(chips).to_have_count(6, timeout=120_000)
        expect(chips.first).to_have_text("IT'S")
        assert re.search(r"accuracy \d+\.\d, total \d+\.\d \(of 10\)", chips.first.get_attribute("title"))
        expect(panel.locator("#timeline .js-plotly-plot")).to_be_visible(timeout=30_000)
        frame = panel.locator("#timeline").evaluate("e => getComputedStyle(e).borderTopWidth")
        assert float(frame.removesuffix("px")) <= 1, frame  # was a 3-px black frame
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=SCREENSHOT.with_name("score-card.png"), full_page=True)
        browser.close()
