"""The page at /, in headless Chromium: type a sentence, press Translate, read the translation,
the n-best list and the attention heatmap. Skipped, saying why, without Chromium or Playwright
(`make install-browser` installs Debian's chromium)."""

from __future__ import annotations

import shutil

import pytest

from mtkit.serve.client import ServerProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("browser test: no chromium on PATH (make install-browser, or apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser test: Playwright for Python is missing (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def test_page_translates_and_draws_the_attention(browser, tiny_run):
    with ServerProcess("--model", f"tiny={tiny_run}") as server:
        expected = server.call("/translate", {"text": ["w1 w2 w3 w4"], "beam": 3, "nbest": 3, "attention": True}).json()
        page = browser.new_page()
        page.goto(server.url)
        page.wait_for_selector("#model option[value=tiny]", state="attached")
        assert "tiny" in page.inner_text("#model-info")
        page.fill("#source", "w1 w2 w3 w4")
        page.select_option("#beam", "3")
        page.click("#translate")
        page.wait_for_selector(".result .translation")
        assert page.inner_text(".result .translation") == expected["translations"][0]
        shown = page.locator(".nbest li .score + span").all_inner_texts()
        assert shown == [h["text"] for h in expected["nbest"][0]]
        attention = expected["attention"][0]
        assert page.locator(".heatmap .source-token").all_inner_texts() == attention["source"]
        assert page.locator(".heatmap .target-token").all_inner_texts() == attention["target"]
        cells = page.locator(".heatmap td").evaluate_all("cells => cells.map(c => Number(c.dataset.weight))")
        width = len(attention["source"])
        assert [cells[i : i + width] for i in range(0, len(cells), width)] == attention["weights"]
        assert "error" not in page.get_attribute("#status", "class")
        page.close()


def test_page_behind_an_api_key(browser, tiny_run):
    """With --api-key the browser's login prompt takes the key (as the password); the page's
    own requests then carry it."""
    with ServerProcess("--model", tiny_run, "--api-key", "s3cret") as server:
        assert server.call("/").headers["www-authenticate"].startswith("Basic")
        context = browser.new_context(http_credentials={"username": "me", "password": "s3cret"})
        page = context.new_page()
        assert page.goto(server.url).status == 200
        page.wait_for_selector("#model option", state="attached")
        page.fill("#source", "w5 w6 w7")
        page.click("#translate")
        page.wait_for_selector(".result .translation")
        expected = server.call("/translate", {"text": ["w5 w6 w7"], "beam": 5, "nbest": 5}, headers={"X-API-Key": "s3cret"})
        assert page.inner_text(".result .translation") == expected.json()["translations"][0]
        context.close()
