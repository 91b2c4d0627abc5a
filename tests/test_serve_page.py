"""The page ``titlecat serve`` shows at ``/``, in a real headless browser: Debian's ``chromium``
(``make test`` installs it), driven by playwright.  A person's steps: open the page, see the
model, type titles, press the button, read each title's categories and probability bars."""

from __future__ import annotations

import shutil

import pytest

from test_serve import server  # noqa: F401  (the module-scoped server fixture, shared)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def page(server):  # noqa: F811
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (make test installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        # --no-sandbox: tests and CI run as root, where Chromium's sandbox cannot start
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            pg = browser.new_page(viewport={"width": 900, "height": 700})
            pg.set_default_timeout(30_000)
            pg.goto(f"http://127.0.0.1:{server.port}/")
            yield pg
        finally:
            browser.close()


def test_the_page_shows_the_model_and_its_scores(page, trained):
    page.wait_for_function("document.getElementById('model').textContent.includes('categories')")
    header = page.inner_text("#model")
    assert "mlp" in header and "4 categories" in header
    assert f"test balanced accuracy {trained.clf.info.test_balanced_accuracy:.4f}" in header


def test_typing_titles_shows_their_categories_with_probability_bars(page, trained, tmp_path):
    titles = ["Casco Moto Integral Negro Talle M", "Celular Samsung Galaxy A20 32gb Libre"]
    page.fill("#titles", "\n".join(titles))
    page.select_option("#k", "3")
    page.click("#go")
    page.wait_for_selector(".prediction")
    cards = page.query_selector_all(".prediction")
    assert len(cards) == 2
    labels, probs = trained.clf.predict(titles, k=3)
    for card, title, labs, ps in zip(cards, titles, labels, probs):
        assert card.query_selector(".title").inner_text() == title
        assert [c.inner_text() for c in card.query_selector_all(".category")] == list(labs)
        assert [c.inner_text() for c in card.query_selector_all(".pct")] == [f"{100 * p:.1f}%" for p in ps]
        widths = [float(f.get_attribute("style").split(":")[1].strip(" %;")) for f in card.query_selector_all(".fill")]
        assert widths == pytest.approx([100 * p for p in ps], abs=0.06)  # each bar as long as its probability
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_ctrl_enter_sends_and_an_empty_box_is_an_error_on_the_page(page):
    page.fill("#titles", "Zapatillas Nike Air Zoom Pegasus Talle 43")
    page.press("#titles", "Control+Enter")
    page.wait_for_function("document.querySelector('.prediction .title')?.textContent.includes('Pegasus')")
    assert page.inner_text(".prediction .category") == "SNEAKERS"
    page.fill("#titles", "   \n ")
    page.click("#go")
    assert page.inner_text("#error") == "Type or paste at least one title."
