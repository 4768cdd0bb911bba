"""End to end in a real browser: Debian's chromium, headless, driven by Playwright, against the served app.

Skipped where chromium or Playwright is missing, unless EXTORTION_GUARD_REQUIRE_BROWSER=1
(as in CI, whose set-up installs both), which turns the skip into a failure.
"""

import json
import logging
import os
import re
import shutil
import socket
import threading
import time

import pytest

from serve.settings import ServeSettings, hash_password

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _require_browser():
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "playwright is not installed"
    if CHROMIUM is None:
        reason = "Debian's chromium is not installed (apt-get install chromium)"
    if reason and os.environ.get("EXTORTION_GUARD_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    if reason:
        pytest.skip(reason)


@pytest.fixture
def served_app(tiny_model_dir, tmp_path):
    import uvicorn

    from serve.server import create_server

    settings = ServeSettings(users={"alice": hash_password("correct horse")}, inbox=tmp_path / "inbox", batch_root=tmp_path / "runs")
    app = create_server(settings, str(tiny_model_dir), precision="fp32", device="cpu")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", settings
    server.should_exit = True
    thread.join(timeout=10)


def log_in(page, url: str, password: str = "correct horse") -> None:
    page.goto(url)
    page.get_by_label("username").fill("alice")
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()


def open_folder(page, url: str, tab: str, refresh: str, picker: str, folder) -> None:
    """Log in, open ``tab``, refresh its folder list and pick ``folder`` in the dropdown labelled ``picker``."""
    log_in(page, url)
    page.get_by_role("tab", name=tab).click()
    page.get_by_role("button", name=refresh).click()
    page.get_by_label(re.compile(picker)).click()
    page.get_by_role("option", name=str(folder)).click()


def test_moderator_logs_in_classifies_a_sellers_message_with_context_and_corrects(served_app, caplog):
    _require_browser()
    from playwright.sync_api import expect, sync_playwright

    url, settings = served_app
    inbox = settings.inbox
    caplog.set_level(logging.DEBUG)  # the app runs in this process: every log record of the session is captured
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        log_in(page, url, "wrong password")
        expect(page.get_by_text("Incorrect Credentials")).to_be_visible(timeout=15_000)
        log_in(page, url)  # the login page clears both fields after a failure

        page.locator("#message textarea").fill("钱已经转了，别再说不给就差评了")
        page.locator("#sender").get_by_text("seller").click()
        for column, value in enumerate(("buyer", "给我800我就把差评删了")):
            cell = page.locator(f'#context [data-testid="cell-0-{column}"]')
            cell.dblclick()
            # Typing before the cell's editor has focus loses the first keys (seen in CI), so fill the editor itself.
            editor = cell.locator("textarea, input").first
            expect(editor).to_be_focused(timeout=10_000)
            editor.fill(value)
            editor.press("Enter")
        page.locator("#classify").click()

        expect(page.locator("#verdict")).to_contain_text("extortion", timeout=30_000)  # every label is listed with its probability
        expect(page.locator("#prepared textarea")).to_have_value(re.compile("不给就差评"), timeout=10_000)
        expect(page.locator("#evidence")).to_contain_text("差评")
        page.locator("#ruling").get_by_text("normal").click()
        page.locator("#send-feedback").click()
        expect(page.locator("#feedback-status")).to_contain_text("saved as", timeout=15_000)
        browser.close()

    lines = [json.loads(line) for path in inbox.glob("*.jsonl") for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 1
    decision = lines[0]
    assert decision["label"] == "normal" and decision["moderator"] == "alice" and decision["text"] == "钱已经转了，别再说不给就差评了"
    assert decision["role"] == "seller"  # the sender chosen in the app reaches the model and the inbox
    assert decision["context"] == [{"role": "buyer", "text": "给我800我就把差评删了"}]
    assert decision["model_label"] in ("extortion", "coercion", "complaint", "normal") and decision["model_version"]
    for text in ("钱已经转了，别再说不给就差评了", "给我800我就把差评删了"):  # no message text reaches any log
        assert text not in caplog.text


def test_moderator_labels_the_review_queue_by_value(served_app, tiny_model_dir):
    _require_browser()
    from playwright.sync_api import expect, sync_playwright

    from serve.batch import BatchConfig, run_local
    from tests.test_batch import chat_rows, write_jsonl

    url, settings = served_app
    log = write_jsonl(settings.batch_root.parent / "log.jsonl", chat_rows(30))
    night = settings.batch_root / "night-1"
    run_local(BatchConfig([str(log)], str(night), model=str(tiny_model_dir), quiet=True, precision="fp32"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        open_folder(page, url, "Review queue", "Refresh list", "Batch output folder", night)
        first = page.locator('#to-label [data-testid="cell-0-3"]')
        expect(first).to_contain_text(re.compile(r"\S"), timeout=30_000)
        first.click()
        page.locator("#queue-ruling").get_by_text("coercion").click()
        page.locator("#queue-save").click()
        expect(page.locator("#queue-status")).to_contain_text("Saved", timeout=15_000)
        browser.close()

    lines = [json.loads(line) for path in settings.inbox.glob("*.jsonl") for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 1 and lines[0]["label"] == "coercion" and lines[0]["moderator"] == "alice"
    assert lines[0]["queue_reason"] in ("uncertain", "keywords disagree", "random")
    assert lines[0]["text"] in {f"{r['text']}" for r in chat_rows(30)}


def test_moderator_opens_a_case_file_from_the_cases_tab(served_app):
    _require_browser()
    import pyarrow as pa
    import pyarrow.parquet as pq
    from playwright.sync_api import expect, sync_playwright

    from serve.batch.outputs import PREDICTION_SCHEMA
    from serve.cases import CaseSettings, run_cases
    from tests.test_cases import row

    url, settings = served_app
    night = settings.batch_root / "night-1"
    night.mkdir(parents=True)
    rows = [row(1, "a1", "shop1", "转600到支付宝 ring@163.com，不然差评"), row(2, "a2", "shop2", "支付宝 ring@163.com，800，不然一星")]
    pq.write_table(pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA), night / "predictions.parquet")
    run_cases(CaseSettings(str(night), str(settings.batch_root / "cases-1")))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        open_folder(page, url, "Cases", "Refresh cases", "Cases folder", settings.batch_root / "cases-1")
        first = page.locator('#case-list [data-testid="cell-0-0"]')
        expect(first).to_contain_text("case-", timeout=30_000)
        first.click()
        expect(page.locator("#case-file")).to_contain_text("ring@163.com", timeout=15_000)  # the case file: ids in full
        expect(page.locator("#case-file")).to_contain_text("Timeline")
        browser.close()
