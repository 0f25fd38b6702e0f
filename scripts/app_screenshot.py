"""Screenshot diffusion-app on a trained run in a real headless Chromium (the README's docs/app.png).

Starts ``diffusion-app`` on the checkpoint, opens the page with Debian's chromium + chromium-driver
through Selenium (as tests/test_app.py does), sets the class sliders to ``--mix`` (label:weight,
...) and, with --steps, the steps; clicks Generate, waits for the grid and saves the window.

    python scripts/app_screenshot.py outputs/train/runs/<run> --out docs/app.png --mix 3:1,8:0.6
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
OFFLINE = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(ckpt_path: str, port: int, run_dir: str) -> subprocess.Popen:
    """The real command, on 127.0.0.1:port, once it answers."""
    command = [sys.executable, "-m", "diffusion_lab.app", f"ckpt_path={ckpt_path}"]
    command += ["device=cpu", f"port={port}", f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(command, env={**os.environ, **OFFLINE})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"diffusion-app exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
                return process
        except OSError:
            time.sleep(1)
    process.terminate()
    sys.exit("diffusion-app did not answer within 240 s")


def set_number(driver: webdriver.Chrome, label: str, value: float) -> None:
    """A Gradio slider is a range input with a number box: set the box and dispatch the events."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt_path")
    parser.add_argument("--out", type=Path, default=Path("docs/app.png"))
    parser.add_argument("--mix", default="3:1,8:0.6", help="class label:weight, comma-separated")
    parser.add_argument("--classes", type=int, default=10, help="sliders to reset to 0 first")
    parser.add_argument("--steps", type=int, help="default: the page's (the run's sampler's)")
    parser.add_argument("--size", default="1400,1300", help="window width,height")
    args = parser.parse_args()
    weights = dict(item.split(":") for item in args.mix.split(","))

    port = free_port()
    with tempfile.TemporaryDirectory() as run_dir:
        app = serve(args.ckpt_path, port, run_dir)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
            options.add_argument(flag)
        options.add_argument(f"--window-size={args.size}")
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            driver.get(f"http://127.0.0.1:{port}/")
            wait = WebDriverWait(driver, 300)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#generate"))
            for label in range(args.classes):
                set_number(driver, str(label), float(weights.get(str(label), 0.0)))
            if args.steps is not None:
                set_number(driver, "steps (not DDPM)", args.steps)
            driver.find_element(By.CSS_SELECTOR, "#generate").click()
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#samples img"))
            time.sleep(2)  # let the GIF and the info box render
            args.out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out))
            print(f"wrote {args.out}")
        finally:
            driver.quit()
            app.terminate()
            app.wait(timeout=30)


if __name__ == "__main__":
    main()
