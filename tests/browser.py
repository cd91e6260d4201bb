"""Drive the chat page in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``) with selenium.

No browser is downloaded: selenium is pointed at the system browser and driver (``find_browser``);
``scripts/setup_env.sh`` installs them with apt where it runs as root. Used by tests/chat/test_chat_web.py and for
the README screenshot (``python -m tests.browser URL OUT.png``).
"""
from __future__ import annotations

import os
import shutil
import sys
import time

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVERS = ("chromedriver",)


def find_browser() -> tuple[str | None, str | None, str]:
    """(browser binary, chromedriver, reason when one is missing)."""
    browser = os.environ.get("MAGIC_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    driver = os.environ.get("MAGIC_CHROMEDRIVER") or next(filter(None, map(shutil.which, DRIVERS)), None)
    missing = [name for name, path in (("a Chromium browser", browser), ("chromedriver", driver)) if not path]
    reason = ""
    if missing:
        reason = (f"no {' and no '.join(missing)} on PATH (install Debian's chromium and chromium-driver: "
                  "apt-get install -y chromium chromium-driver; scripts/setup_env.sh does this as root)")
    return browser, driver, reason


def chrome(browser: str, driver: str, width: int = 1400, height: int = 1250):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")
    opts = Options()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def wait_for(predicate, timeout: float, what: str, poll: float = 0.3):
    end = time.time() + timeout
    while time.time() < end:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 - the page is still rendering
            value = None
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def bot_messages(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#chat [data-testid=bot]")]


def send(driver, text: str, timeout: float = 120) -> str:
    """Type a seeker message, press Enter, wait for the new supporter message; return its text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    before = len(bot_messages(driver))
    box = wait_for(lambda: driver.find_element(By.CSS_SELECTOR, "#seeker-input textarea"), 60, "the seeker box")
    box.send_keys(text + Keys.ENTER)
    msgs = wait_for(lambda: (lambda m: m if len(m) > before and m[-1].strip() else None)(bot_messages(driver)),
                    timeout, f"the reply to {text!r}")
    return msgs[-1]


def force(driver, label: str) -> None:
    """Pick ``label`` in the "force the next turn's strategy" dropdown."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, "#force input").click()
    option = wait_for(lambda: driver.find_element(By.CSS_SELECTOR, f"li[role=option][aria-label='{label}']"), 20,
                      f"the dropdown option {label}")
    option.click()
    wait_for(lambda: driver.find_element(By.CSS_SELECTOR, "#force input").get_attribute("value") == label, 20,
             f"the dropdown to show {label}")


def field(driver, elem_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input").get_attribute("value")


def main(argv=None) -> int:
    """python -m tests.browser URL OUT.png [message ...]: talk to a running page and save a screenshot."""
    argv = sys.argv[1:] if argv is None else argv
    url, out, *messages = argv
    browser, driver_path, reason = find_browser()
    if reason:
        print(reason, file=sys.stderr)
        return 1
    driver = chrome(browser, driver_path)
    try:
        driver.get(url)
        for text in messages or ["Hi, I have been feeling really lonely lately.",
                                 "My best friend moved to another city and I miss her."]:
            print(send(driver, text))
        time.sleep(1)
        driver.save_screenshot(out)
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
