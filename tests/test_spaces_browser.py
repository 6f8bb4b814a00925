"""The Hugging Face Spaces app (spaces/app.py) in a real browser: headless Chromium sends a message, reads the reply.

Chromium comes from Debian's packages (/usr/bin/chromium): when it is missing and the tests run as
root with apt-get (CI), it is installed here; elsewhere the browser test is skipped with the reason
(or fails, with TUNELAB_REQUIRE_BROWSER=1).
Playwright drives it through `executable_path` (Playwright's own browser download is never used).
The app serves the tiny chat run's merged model on 127.0.0.1 only, and the page may load nothing
but that address: any other request is blocked and fails the test.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tunelab.chat.serve import generate_reply, load_model_folder

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "spaces" / "app.py"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
MESSAGE = "What is the capital of Sweden?"
MAX_NEW_TOKENS = 6


def no_browser(reason: str):
    """Skip, or fail where a browser is required (TUNELAB_REQUIRE_BROWSER=1, as in CI)."""
    if os.environ.get("TUNELAB_REQUIRE_BROWSER") == "1":
        pytest.fail(f"TUNELAB_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def find_or_install_chromium() -> str:
    """A Chromium executable; installed with apt-get when missing and allowed (root, apt-get present)."""
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        no_browser("no Chromium found and it cannot be installed here (needs root and apt-get): "
                   "apt-get install -y chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    output = ""
    for command in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "chromium"]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        output = result.stdout[-1500:] + result.stderr[-1500:]
        if command[1] == "install" and result.returncode == 0 and shutil.which("chromium"):
            return shutil.which("chromium")
    no_browser(f"Chromium could not be installed with apt-get: {output.strip().splitlines()[-1:]}")


@pytest.fixture(scope="module")
def chromium():
    return find_or_install_chromium()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def app_url(tiny_chat_run, tmp_path):
    """spaces/app.py serving the merged tiny model on 127.0.0.1, greedy, stopped after the test."""
    port = free_port()
    env = {**os.environ, "TUNELAB_CHAT_MODEL": str(tiny_chat_run / "merged"), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "TUNELAB_MAX_NEW_TOKENS": str(MAX_NEW_TOKENS), "TUNELAB_TEMPERATURE": "0",
           "TUNELAB_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    log_path = tmp_path / "app.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, str(APP)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                pytest.fail(f"the app exited with {server.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not answer on {url} within 180 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def comparable(text: str) -> str:
    """Text without whitespace and Markdown punctuation (the chat renders replies as Markdown)."""
    return re.sub(r"[\s*_`#>~|\[\]()!\\-]", "", text)


def test_space_app_answers_in_a_real_browser(chromium, app_url, tiny_chat_run, tmp_path):
    from playwright.sync_api import sync_playwright

    model, tokenizer = load_model_folder(tiny_chat_run / "merged")
    expected = generate_reply(model, tokenizer, [{"role": "user", "content": MESSAGE}], MAX_NEW_TOKENS)["reply"]
    assert comparable(expected)
    outside = []

    def local_only(route):
        url = urlparse(route.request.url)
        if url.scheme in ("data", "blob") or url.hostname in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
                                             timeout=120_000)
        try:
            context = browser.new_context()
            context.route("**/*", local_only)
            page = context.new_page()
            page.set_default_timeout(120_000)
            page.goto(app_url, wait_until="load")
            box = page.locator("textarea").first
            box.wait_for()
            box.fill(MESSAGE)
            box.press("Enter")
            page.locator('[data-testid="user"]').last.wait_for()
            assert MESSAGE in page.locator('[data-testid="user"]').last.inner_text()
            bot = page.locator('[data-testid="bot"]').last
            bot.wait_for()
            deadline, shown = time.monotonic() + 120, ""
            while time.monotonic() < deadline:
                shown = bot.inner_text()
                if comparable(shown) == comparable(expected):
                    break
                page.wait_for_timeout(250)
            page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)
        finally:
            browser.close()
    assert comparable(shown) == comparable(expected), f"the page shows {shown!r}, the model's reply is {expected!r}"
    assert outside == [], "the page asked for something outside 127.0.0.1"


def test_space_app_streams_partial_replies(tiny_chat_run, monkeypatch):
    """The app's respond() yields the growing reply, token by token (what Gradio streams to the page)."""
    import runpy

    monkeypatch.setenv("TUNELAB_CHAT_MODEL", str(tiny_chat_run / "merged"))
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    app = runpy.run_path(str(APP), run_name="spaces_app")
    history = [{"role": "user", "content": [{"type": "text", "text": "What is the capital of Peru?"}]},
               {"role": "assistant", "content": "The capital of Peru is Lima."}]
    partials = list(app["respond"]("And Chile?", history, 0.0, 8))
    assert len(partials) > 1 and partials[-1].strip()
    assert all(later.startswith(earlier) for earlier, later in zip(partials, partials[1:]))
    assert app["to_messages"]("Next", history)[0] == {"role": "user", "content": "What is the capital of Peru?"}
