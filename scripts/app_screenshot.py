"""Screenshot diffusion-app on a trained run in a real headless Chromium (the README's docs/app.png).

Starts ``diffusion-app`` on the checkpoint, opens the page with Debian's chromium + chromium-driver
through Selenium (scripts/app_browser.py, as tests/test_app.py does), sets the class sliders to
``--mix`` (label:weight, ...) and, with --steps, the steps; clicks Generate, waits for the grid and
saves the window.

    python scripts/app_screenshot.py outputs/train/runs/<run> --out docs/app.png --mix 3:1,8:0.6
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from app_browser import free_port, headless_chromium, set_number, start_app, wait_for
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


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

    with tempfile.TemporaryDirectory() as run_dir:
        app, url = start_app(args.ckpt_path, free_port(), f"hydra.run.dir={run_dir}")
        try:
            wait_for(url, app)
            driver = headless_chromium(args.size)
            try:
                driver.get(url)
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
        finally:
            app.terminate()
            app.wait(timeout=30)


if __name__ == "__main__":
    main()
