"""chat.py --web in a real headless Chromium: open the page, two seeker messages, two replies each showing a
strategy, a forced strategy that is used, the side panels filled, the dialogue downloadable; a screenshot PNG
is left in the test's temporary folder. Skips (saying why) only where no Chromium + chromedriver or no
selenium can be had; scripts/setup_env.sh installs the browser with apt when it runs as root."""
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.browser import bot_messages, chrome, field, find_browser, force, send, wait_for
from tests.chat_fixtures import REPO, chat_env, make_tiny_checkpoint, make_tiny_llm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page(tmp_path_factory, bart_dir):
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -r requirements.txt)")
    pytest.importorskip("gradio", reason="gradio is not installed (pip install -r requirements.txt)")
    browser, driver, reason = find_browser()
    if reason:
        pytest.skip(reason)
    d = tmp_path_factory.mktemp("chat_web")
    ckpt, llm = make_tiny_checkpoint(d, bart_dir), make_tiny_llm(d)
    port = _free_port()
    log = open(d / "server.log", "w")
    server = subprocess.Popen([sys.executable, str(REPO / "chat.py"), "--model_path", str(ckpt), "--llm_path", llm,
                               "--max_new_tokens", "16", "--web", "--port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, env=chat_env(), cwd=REPO)
    url = f"http://127.0.0.1:{port}/"
    try:
        end = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.time() > end:
                    raise AssertionError("the web app did not come up:\n" + (d / "server.log").read_text())
                time.sleep(0.5)
        drv = chrome(browser, driver)
        try:
            yield drv, url
        finally:
            drv.quit()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_two_turns_forced_strategy_and_screenshot(page, tmp_path):
    from magic.esconv.dialogues import STRATEGIES

    driver, url = page
    driver.get(url)
    replies = [send(driver, "Hi, I feel lonely since my friend moved away."),
               send(driver, "I do not know how to make new friends.")]
    assert len(bot_messages(driver)) == 2
    for reply in replies:  # each reply shows the strategy it was generated with
        assert reply.startswith("["), reply
        assert reply[1:reply.index("]")] in STRATEGIES
    strategy = field(driver, "strategy")
    assert strategy.split("  (")[0] == replies[1][1:replies[1].index("]")]
    assert strategy.endswith("(strategy LLM)")

    force(driver, "Greeting")
    third = send(driver, "Thank you for listening.")
    assert third.startswith("[Greeting] ")
    assert field(driver, "strategy") == "Greeting  (forced)"
    assert field(driver, "force") == "(inferred)"  # forcing applies to one turn

    from selenium.webdriver.common.by import By
    panels = driver.find_element(By.ID, "classifier").text + driver.find_element(By.ID, "memory").text
    assert all(label in panels for label in STRATEGIES)
    assert "Question (3/8)" in driver.find_element(By.ID, "memory").text  # the checkpoint's bank fill levels
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.find_element(By.CSS_SELECTOR, "#download").click()
    saved = wait_for(lambda: [p for p in downloads.glob("*.jsonl")], 30, "the downloaded dialogue")
    dialogue = json.loads(saved[0].read_text(encoding="utf-8"))
    assert [t["speaker"] for t in dialogue["dialog"]] == ["usr", "sys"] * 3
    assert dialogue["dialog"][5]["strategy"] == "Greeting"

    shot = tmp_path / "chat_web.png"
    driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
