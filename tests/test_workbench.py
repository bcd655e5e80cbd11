"""The examiner's workbench as examiners use it: one `python app.py --blind` with login and roles, the shipped grader
(real Whisper tiny.en) on real clips, driven by headless Chromium, one browser context per examiner. The tests run in
file order on the same app: a first mark opened from History, a second mark that disagrees, the adjudication that
becomes final; then screenshots of every tab and the review view into docs/ (1280 px wide)."""

import re
import sqlite3
from pathlib import Path

import pytest
from conftest import launch_app
from gradio_client import Client, handle_file

from grader.inference import DEFAULT_CHECKPOINT

from test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.browser
REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
USERS = {"ann": ("pw-ann-1", "examiner"), "bob": ("pw-bob-1", "examiner"), "cleo": ("pw-cleo-1", "adjudicator"),
         "root": ("pw-root-1", "admin")}
CLIPS = ["000010011.flac", "000360013.flac"]  # "WE CALL IT BEAR", "IT'S JUST SO HARD TO PICTURE"


@pytest.fixture(scope="module")
def app(speechocean_clips, tmp_path_factory):
    """The app under --blind with four logins, and a batch of two real clips graded by the admin into a session that
    marks every response twice (what the tests below mark), plus one clip graded with its evidence."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)")
    folder = tmp_path_factory.mktemp("workbench")
    users = folder / "users.txt"
    users.write_text("".join(f"{u}:{pw}:{role}\n" for u, (pw, role) in USERS.items()))
    with launch_app(DEFAULT_CHECKPOINT, folder, "--blind", "--retention", "keep", "--auth-file", str(users)) as app:
        admin = Client(app.url, auth=("root", USERS["root"][0]), verbose=False)
        files = [handle_file(str(speechocean_clips / "audio" / name)) for name in CLIPS]
        table, _ = admin.predict(files, None, "May 2026", 100, api_name="/grade_batch")
        app.grades = {row[0]: row[3] for row in table["data"]}  # file name -> grade id
        admin.predict(handle_file(str(speechocean_clips / "audio" / "000010063.flac")), "cand-7", "read aloud",
                      "", api_name="/grade")
        admin.predict(api_name="/evidence")
        yield app


@pytest.fixture(scope="module")
def browser(app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def page_as(browser, app, user: str):
    """A page of the app logged in as `user` (its own cookies)."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    assert context.request.post(app.url + "login", form={"username": user, "password": USERS[user][0]}).ok
    page = context.new_page()
    page.goto(app.url)
    page.get_by_role("tab", name="Review").click(timeout=60_000)  # where examiners work
    return page


def marks(app, grade_id: int) -> list[tuple]:
    with sqlite3.connect(app.db) as connection:
        return connection.execute("SELECT examiner, role, phase, final_score, agreement, model_seen, seen "
                                  "FROM overrides "
                                  "WHERE grade_id = ? ORDER BY id", (grade_id,)).fetchall()


def save_mark(page, score: int, agreement: str | None = None) -> None:
    from playwright.sync_api import expect

    form = page.locator("#mark-form")
    form.get_by_label("Final score").fill(str(score))
    if agreement:
        form.get_by_label(agreement).check()
    form.get_by_role("button", name="Save mark").click()
    expect(form.get_by_text("Mark saved")).to_be_visible(timeout=30_000)


def test_login_line_logout_and_tables_that_fit(browser, app):
    """Issue 16's fixes: who is logged in (and in which role) with a logout; History without sideways scrolling at
    1280 px; the empty Batch table with its real headers."""
    from playwright.sync_api import expect

    page = page_as(browser, app, "ann")
    expect(page.locator("#signed-in")).to_contain_text("Logged in as ann (examiner)")
    expect(page.get_by_role("link", name="Log out")).to_have_attribute("href", "/logout")
    page.get_by_role("tab", name="Batch").click()
    expect(page.get_by_role("columnheader", name="total_soft").first).to_be_attached()
    page.get_by_role("tab", name="History").click()
    page.get_by_role("button", name="Show", exact=True).click()
    expect(page.locator("#history .virtual-row")).to_have_count(3, timeout=30_000)
    overflow = page.evaluate("""() => [...document.querySelectorAll('#history *')]
        .filter(e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX))
        .map(e => e.scrollWidth - e.clientWidth)""")
    assert max(overflow, default=0) <= 1 and page.evaluate("document.documentElement.scrollWidth") <= 1280
    page.context.close()


def test_a_blind_first_mark_of_a_response_opened_from_history(browser, app):
    """ann opens a batch response from History: its recording plays, and the model's score, distribution and
    evidence are absent from the page (not hidden: not sent) until her mark is saved; then they appear. The mark is
    stored as a first mark, made without the model, with what was shown."""
    from playwright.sync_api import expect

    grade_id = app.grades[CLIPS[0]]
    page = page_as(browser, app, "ann")
    page.get_by_role("tab", name="History").click()
    page.get_by_role("button", name="Show", exact=True).click()
    grade_cell = page.locator("#history [role=gridcell][data-col='1']")  # the "grade" column
    grade_cell.filter(has_text=re.compile(rf"^\s*{grade_id}\s*$")).click()
    expect(page.locator("#review-head")).to_contain_text(f"#{grade_id}", timeout=30_000)
    expect(page.locator("#review-head")).to_contain_text("May 2026")
    expect(page.locator("#review-head")).to_contain_text(CLIPS[0])
    expect(page.locator("#review-card")).to_contain_text("Model result withheld")
    expect(page.locator("#review-audio audio, #review-audio .waveform-container").first).to_be_attached()
    html = page.content()
    assert 'class="score"' not in html and "About this score" not in html and "class distribution" not in html
    save_mark(page, 4)
    expect(page.locator("#review-card .score")).to_be_visible(timeout=30_000)
    page.context.close()
    [(examiner, role, phase, score, agreement, model_seen, seen)] = marks(app, grade_id)
    assert (examiner, role, phase, score, agreement, model_seen) == ("ann", "examiner", "first", 4.0, None, 0)
    assert seen == '["audio"]'


def test_a_second_mark_that_disagrees_goes_to_the_adjudicator_whose_mark_is_final(browser, app):
    """bob's queue offers the same response for a second mark: he sees neither ann's mark nor the model. His 9 is
    more than one step from her 4, so it goes to cleo's adjudication queue; she sees both marks and the model, and
    her mark becomes the final one."""
    from playwright.sync_api import expect

    grade_id = app.grades[CLIPS[0]]
    page = page_as(browser, app, "bob")
    page.get_by_role("button", name="Show my queue").click()
    page.locator("#queue .virtual-row").filter(has_text="second").filter(has_text=CLIPS[0]).first.locator(
        "[role=gridcell]").first.click(timeout=30_000)
    expect(page.locator("#review-head")).to_contain_text("second mark", timeout=30_000)
    expect(page.locator("#review-marks")).to_contain_text("1 other mark(s) are not shown")
    expect(page.locator("#review-marks")).not_to_contain_text("ann")
    expect(page.locator("#review-card")).to_contain_text("Model result withheld")
    save_mark(page, 9)
    page.context.close()

    page = page_as(browser, app, "cleo")
    page.get_by_role("button", name="Show my queue").click()
    queued = page.locator("#queue .virtual-row").filter(has_text="adjudication")
    queued.first.locator("[role=gridcell]").first.click(timeout=30_000)
    expect(page.locator("#review-head")).to_contain_text("adjudication", timeout=30_000)
    expect(page.locator("#review-marks")).to_contain_text("ann")
    expect(page.locator("#review-marks")).to_contain_text("bob")
    expect(page.locator("#review-marks")).to_contain_text("awaiting adjudication")
    expect(page.locator("#review-card .score")).to_be_visible()
    save_mark(page, 6, agreement="partly")
    expect(page.locator("#review-marks")).to_contain_text("adjudicated: 6", timeout=30_000)
    page.context.close()
    assert [m[:5] for m in marks(app, grade_id)] == [("ann", "examiner", "first", 4.0, None),
                                                     ("bob", "examiner", "second", 9.0, None),
                                                     ("cleo", "adjudicator", "adjudication", 6.0, "partly")]


def test_the_agreement_tab_shows_the_figures_worked_out_by_hand(browser, app):
    """ann also gives the second batch response a first mark (through the API, as a script would); the Agreement
    tab's row for ann then rests on her two marks, 4 and 7, against the model's regression scores: its figures are
    worked out here by hand, and each header names its metric on hover."""
    from playwright.sync_api import expect

    ann = Client(app.url, auth=("ann", USERS["ann"][0]), verbose=False)
    ann.predict(app.grades[CLIPS[1]], "", api_name="/review")
    assert ann.predict(7, None, "", "", "", api_name="/mark")[0].startswith("✓ Mark saved")
    with sqlite3.connect(app.db) as connection:
        model = [connection.execute("SELECT regression FROM grades WHERE id = ?", (app.grades[c],)).fetchone()[0]
                 for c in CLIPS]
    marks_ = [4.0, 7.0]
    bias = round(sum(m - x for m, x in zip(marks_, model)) / 2, 2)
    same = round(100 * sum(m == round(x) for m, x in zip(marks_, model)) / 2, 1)
    within = round(100 * sum(abs(m - round(x)) <= 1 for m, x in zip(marks_, model)) / 2, 1)
    r = 1.0 if (model[1] - model[0]) > 0 else -1.0  # two points: a straight line, rising or falling

    page = page_as(browser, app, "cleo")
    page.get_by_role("tab", name="Agreement").click()
    page.get_by_role("button", name="Compute", exact=True).click()
    table = page.locator("#agreement-vs-model table")
    expect(table).to_be_visible(timeout=30_000)
    headers = table.locator("th")
    assert headers.nth(3).inner_text() == "Correlation" and headers.nth(3).get_attribute("title").startswith(
        "Pearson r:")
    row = table.locator("tr").filter(has=page.locator("td", has_text=re.compile(r"^ann$")))
    cells = row.locator("td").all_inner_texts()
    header_names = headers.all_inner_texts()
    got = dict(zip(header_names, cells))
    assert got["Responses"] == "2" and got["Too few to judge"] == "yes" and float(got["Correlation"]) == r
    assert float(got["Marks higher by"]) == bias and float(got["Same class (%)"]) == same
    assert float(got["Within one class (%)"]) == within
    expect(page.locator("#agreement-summary")).to_contain_text("Fewer than 10 responses")
    expect(page.locator("#drift-plot .js-plotly-plot")).to_be_visible()
    page.context.close()


def test_refusals_have_messages_and_print_no_traceback(app):
    """Issue 16: every validation error (a gr.Error raised on purpose) once printed a traceback to the server log."""
    from gradio_client.exceptions import AppError

    bob = Client(app.url, auth=("bob", USERS["bob"][0]), verbose=False)
    bob.predict(app.grades[CLIPS[1]], "", api_name="/review")
    for score, message in ((6.5, "not a score on the speechocean762 scale"), (11, "between 0 and 10"),
                           ("abc", "a number")):
        with pytest.raises(AppError, match=message):
            bob.predict(score, None, "", "", "", api_name="/mark")
    with pytest.raises(AppError, match="Under blind marking, marks are entered in the Review tab"):
        bob.predict(app.grades[CLIPS[1]], 5, "agree", "", "", "", api_name="/override")
    with pytest.raises(AppError, match="the Agreement figures are for adjudicators and admins"):
        bob.predict("regression", 0, False, "all", api_name="/agreement")
    # the Session filters: the batch's session, made after the page was built, may be chosen by a script too; a
    # value that is no session is refused with a message (once Gradio's own check, with a traceback in the log)
    root = Client(app.url, auth=("root", USERS["root"][0]), verbose=False)
    assert len(root.predict("", "", "", 1, api_name="/history")["data"]) == len(CLIPS)
    for api, args in (("/history", ("", "", "", "May 2026")), ("/work_queue", ("May 2026", "", "", False, "")),
                      ("/agreement", ("regression", "<b>x</b>", False, "all"))):
        with pytest.raises(AppError, match="Choose a session from the list"):
            root.predict(*args, api_name=api)
    assert "Traceback" not in app.log() and "refused" not in app.log().lower()


def test_screenshots_of_every_tab_and_the_review_view(browser, app):
    """docs/: what README's "Using the app" shows, from this run (real clips graded by the shipped grader)."""
    from playwright.sync_api import expect

    DOCS.mkdir(exist_ok=True)
    page = page_as(browser, app, "cleo")
    page.get_by_role("button", name="Show my queue").click()
    expect(page.locator("#queue .virtual-row").first).to_be_visible(timeout=30_000)
    page.screenshot(path=DOCS / "review-queue.png", full_page=True)
    page.locator("#queue .virtual-row").filter(has_text="cand-7").first.locator("[role=gridcell]").first.click()
    expect(page.locator("#review-card")).to_contain_text("withheld", timeout=30_000)
    page.screenshot(path=DOCS / "review-blind.png", full_page=True)
    save_mark(page, 7)
    expect(page.locator("#review-evidence .transcript")).to_be_visible(timeout=30_000)
    page.screenshot(path=DOCS / "review.png", full_page=True)
    for tab, show, shown in (("History", "Show", "#history .virtual-row"),
                             ("Agreement", "Compute", "#drift-plot .js-plotly-plot"), ("Batch", None, None),
                             ("Grade", None, None)):
        page.get_by_role("tab", name=tab).click()
        if show:
            page.get_by_role("button", name=show, exact=True).click()
            expect(page.locator(shown).first).to_be_visible(timeout=30_000)
            page.wait_for_timeout(1000)  # Plotly's and the table's layout settle
        page.screenshot(path=DOCS / f"{tab.lower()}.png", full_page=True)
    page.context.close()
