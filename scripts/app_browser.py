"""diffusion-app served for real and driven in a real headless Chromium (Debian's chromium and
chromium-driver through Selenium, which then downloads nothing): shared by tests/test_app.py and
scripts/app_screenshot.py.

Selenium is imported only by :func:`headless_chromium` and :func:`set_number`, so a caller can
skip without it (the ``app`` extra).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Any

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
OFFLINE = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(
    ckpt_path: str, port: int, *overrides: str, capture: bool = False
) -> tuple[subprocess.Popen, str]:
    """(the real ``diffusion-app`` on CPU at 127.0.0.1:port, offline, with Hydra ``overrides``;
    its URL). ``capture``: its output goes to a pipe (read by :func:`wait_for` if it dies)."""
    command = [sys.executable, "-m", "diffusion_lab.app", f"ckpt_path={ckpt_path}"]
    command += ["device=cpu", f"port={port}", *overrides]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT} if capture else {}
    process = subprocess.Popen(command, text=True, env={**os.environ, **OFFLINE}, **pipes)
    return process, f"http://127.0.0.1:{port}/"


def wait_for(url: str, process: subprocess.Popen, seconds: float = 240) -> None:
    """Return once ``url`` answers 200; RuntimeError (with the app's output, when captured) if
    the process exits first or nothing answers within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise RuntimeError(f"diffusion-app exited with status {process.returncode}:\n{output}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"diffusion-app did not answer on {url} within {seconds} s")


def headless_chromium(window: str = "1400,1300") -> Any:
    """A Selenium Chrome driver on Debian's chromium + chromium-driver, headless, as root."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={window}")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def set_number(driver: Any, label: str, value: float) -> None:
    """A Gradio slider is a range input with a number box: set the box and dispatch the events."""
    from selenium.webdriver.common.by import By

    box = driver.find_element(
        By.CSS_SELECTOR, f"input[type=number][aria-label='number input for {label}']"
    )
    driver.execute_script(
        "arguments[0].value = arguments[1];"
        "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));"
        "arguments[0].dispatchEvent(new Event('change', {bubbles: true}));",
        box,
        str(value),
    )
