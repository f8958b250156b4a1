"""``ciml serve`` as a person uses it: a real headless Chromium against a real server.

Debian's ``chromium`` (``.ci/run`` installs it) driven by Playwright for
Python, never a browser Playwright downloads itself.  The server runs in
its own process on a free loopback port over the watched history of
:func:`serve_helpers.watched_history`.

Screenshots of every step are saved under the test's temporary folder
(the path is printed with ``-s``); with
``CIML_DOC_SCREENSHOTS=doc/source/_static`` the ones the user guide shows
are written there too, from a larger history (see the ``watched`` fixture).
"""

import json
import os
import pathlib
import shutil

import pytest
from conftest import skip_or_fail
from serve_helpers import DATASET, EXPERIMENT, SCRIPT, WATCHED, run_ciml, serving

pytestmark = pytest.mark.slow

TOKEN = "browser-test-token-0123456789"
#: The screenshots the user guide's dashboard page shows: the step, its file,
#: and what is scrolled to the top of the window first (None: the page's top).
DOC_SHOTS = {
    "home": ("dashboard-home.png", None),
    "run": ("dashboard-run.png", "h2:text-is('Predictions')"),
    "run-labelled": ("dashboard-label.png", "#labels"),
    "model": ("dashboard-model.png", "h2:text-is('Plots')"),
}


def _chromium_path():
    for candidate in (os.environ.get("CIML_CHROMIUM"), shutil.which("chromium"),
                      "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("Playwright for Python is not installed (pip install -e '.[test]')")
    path = _chromium_path()
    if path is None:
        skip_or_fail("no Chromium: apt-get install chromium (or set CIML_CHROMIUM)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def dashboard(watched, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with serving(watched.data_path, env={"CIML_SERVE_TOKEN": TOKEN}, log=log) as url:
        yield url


class Shots:
    """Screenshots of the steps, in the test's folder (and the docs' where asked)."""

    def __init__(self, folder):
        self.folder = pathlib.Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        docs = os.environ.get("CIML_DOC_SCREENSHOTS")
        self.docs = pathlib.Path(docs) if docs else None
        print(f"screenshots in {self.folder}")

    def take(self, page, name):
        # A full-page picture does not scroll: lazy images would be blank boxes.
        images = page.locator("img")
        for k in range(images.count()):
            _image_loaded(images.nth(k))
        page.evaluate("window.scrollTo(0, 0)")
        path = self.folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if self.docs is not None and name in DOC_SHOTS:
            filename, top = DOC_SHOTS[name]
            self.docs.mkdir(parents=True, exist_ok=True)
            if top:
                page.locator(top).first.evaluate("e => e.scrollIntoView()")
            # One window's worth, as a reader sees it, not 3000 pixels of page.
            page.screenshot(path=str(self.docs / filename), full_page=False)
            page.evaluate("window.scrollTo(0, 0)")
        return path


@pytest.fixture
def page(browser, tmp_path):
    """A fresh browser context (no cookies) whose dialogs and errors are recorded."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.dialogs, page.errors = [], []

    def on_dialog(dialog):
        page.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    # A failed request (a missing stylesheet, a plot that would not draw) by URL.
    page.on("response", lambda resp: page.errors.append(f"{resp.status} {resp.url}")
            if resp.status >= 400 and not resp.url.endswith("/labels") else None)
    page.on("console", lambda msg: page.errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None)
    page.shots = Shots(tmp_path / "screenshots")
    yield page
    context.close()


def _rows(page):
    return page.locator("section.job table.predictions tbody tr")


def _image_loaded(image):
    """Whether the browser fetched and decoded ``image`` (a locator of an ``<img>``).

    The pages load their plots lazily: scrolled into view, as a reader would,
    the browser fetches the image; then wait until it is decoded or failed.
    """
    image.scroll_into_view_if_needed()
    image.evaluate("img => img.complete ? null : new Promise(done => {"
                   " img.addEventListener('load', done); img.addEventListener('error', done);"
                   "})")
    return image.evaluate("img => img.complete && img.naturalWidth > 0")


def test_a_person_filters_opens_a_run_corrects_its_label_and_sees_it(page, dashboard,
                                                                     watched):
    predicted = {r["run_id"]: r["predicted"] for r in watched.records}
    page.goto(dashboard + "/")
    assert page.locator("h1").inner_text() == "Recent predictions"
    assert _rows(page).count() == WATCHED
    page.shots.take(page, "home")

    # Filter by one predicted class, through the form as a person does.
    wanted = max(set(predicted.values()), key=list(predicted.values()).count)
    page.select_option("form.filters select[name=class]", wanted)
    with page.expect_navigation():
        page.click("form.filters button[type=submit]")
    assert f"class={wanted}" in page.url
    rows = _rows(page)
    assert rows.count() == sum(v == wanted for v in predicted.values())
    assert set(rows.locator("td.cls").all_inner_texts()) == {wanted}
    page.shots.take(page, "home-filtered")

    # Open the first run shown.
    link = rows.first.locator("td a").first
    run_id = link.inner_text().strip()
    assert run_id in predicted
    with page.expect_navigation():
        link.click()
    assert page.url.endswith(f"/runs/{run_id}")
    assert run_id in page.locator("h1").inner_text()

    # Its plot: an SVG the browser decoded, drawn for this run and model.
    plot = page.locator("img[src*='/runs/'][src*='plot.svg']")
    assert plot.count() == 1
    assert _image_loaded(plot)
    assert f"model={DATASET}/{EXPERIMENT}" in plot.get_attribute("src").replace("%2F", "/")
    page.shots.take(page, "run")

    # Correct its label through the form (the token is asked once).
    actual = next(r for r in watched.records if r["run_id"] == run_id)["status"]
    corrected = "passed" if actual == "failed" else "failed"
    form = page.locator("form.label-form")
    form.locator("input[name=key]").fill("status")
    form.locator("input[name=value]").fill(corrected)
    form.locator("input[name=who]").fill("browser-test")
    form.locator("input[name=token]").fill(TOKEN)
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    assert page.url.split("#")[0].split("?")[0].endswith(f"/runs/{run_id}")
    label = page.locator("td.label-status")
    assert label.inner_text().strip() == corrected
    assert "browser-test" in page.locator("#labels ~ table").first.inner_text()
    page.shots.take(page, "run-labelled")

    # The page again, fresh: the label is stored, not just echoed.
    page.reload()
    assert page.locator("td.label-status").inner_text().strip() == corrected

    # And the command line sees the same label.
    rc, out, err = run_ciml("--data-path", watched.data_path.root, "run", "show", run_id,
                            "-f", "json")
    assert rc == 0, err
    human = json.loads(out)["human_labels"]
    assert "status" in str(human) and corrected in str(human), human

    assert page.dialogs == [] and page.errors == [], (page.dialogs, page.errors)


def test_a_label_without_the_token_is_refused_and_not_stored(page, dashboard, watched):
    run_id = watched.records[0]["run_id"]
    page.goto(f"{dashboard}/runs/{run_id}")
    form = page.locator("form.label-form")
    form.locator("input[name=key]").fill("cause")
    form.locator("input[name=value]").fill("oom")
    form.locator("input[name=token]").fill("not-the-token")
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    page.shots.take(page, "label-refused")
    page.goto(f"{dashboard}/runs/{run_id}")
    assert page.locator("td.label-cause").count() == 0
    rc, out, err = run_ciml("--data-path", watched.data_path.root, "run", "show", run_id,
                            "-f", "json")
    assert rc == 0, err
    assert "oom" not in str(json.loads(out).get("human_labels"))


def test_a_script_in_run_metadata_shows_as_text_and_never_runs(page, dashboard, watched):
    page.goto(f"{dashboard}/runs/{watched.script_run}")
    page.get_by_text(SCRIPT, exact=True).wait_for()
    page.shots.take(page, "run-script-metadata")
    assert page.evaluate("window.__ciml_xss") is None
    assert page.dialogs == []
    # The home page lists the run too, and runs nothing either.
    page.goto(dashboard + "/")
    assert page.evaluate("window.__ciml_xss") is None
    assert page.dialogs == [] and page.errors == [], (page.dialogs, page.errors)


def test_the_model_page_shows_its_plots(page, dashboard):
    page.goto(f"{dashboard}/models/{DATASET}/{EXPERIMENT}")
    images = page.locator("img[src$='.svg']")
    srcs = images.evaluate_all("imgs => imgs.map(i => i.getAttribute('src'))")
    assert {s.rsplit("/", 1)[-1] for s in srcs} >= {
        "confusion.svg", "pr.svg", "reliability.svg", "importance.svg"}, srcs
    for k in range(images.count()):
        assert _image_loaded(images.nth(k)), srcs[k]
    page.shots.take(page, "model")
    assert page.errors == [], page.errors
