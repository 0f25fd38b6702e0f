"""diffusion-app on a checkpoint trained once for real (conftest's tiny_run): the page's logic in
process, every endpoint through Gradio's Python client against the real server, and a real
headless Chromium (Debian's chromium + chromium-driver) that moves a slider and clicks Generate."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("gradio", reason="the app extra is not installed (pip install -e .[app])")
from gradio_client import Client, handle_file  # noqa: E402

from diffusion_lab.app_logic import (  # noqa: E402
    SamplerChoice,
    context_label,
    contexts_from_sliders,
    list_checkpoints,
    picture_from_editor,
)
from diffusion_lab.utils.images import LINE_HEIGHT  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))  # the browser helpers
from app_browser import (  # noqa: E402
    CHROMEDRIVER,
    CHROMIUM,
    OFFLINE,
    free_port,
    headless_chromium,
    set_number,
    start_app,
    wait_for,
)

ONE_HOT_3 = [0.0, 0.0, 0.0, 1.0] + [0.0] * 6
# family, steps, eta, order, churn, guidance, seed, images
OPTIONS = ["ddim", 5, 0.0, 2, 0.0, 1.0, 3, 4]


# --- the logic, in process --------------------------------------------------------------------
def test_sliders_give_contexts_and_labels():
    contexts = contexts_from_sliders([1, 0, 0.6], 2)
    torch.testing.assert_close(contexts, torch.tensor([[1.0, 0.0, 0.6]] * 2))
    assert contexts_from_sliders([0, 0, 0], 5) is None
    assert context_label([1, 0, 0.6], ["hero", "non-hero", "food"]) == "hero:1, food:0.6"
    assert context_label([0, 0], ["a", "b"]) == "unconditional"
    with pytest.raises(ValueError, match="context weights must be finite numbers"):
        contexts_from_sliders([float("nan"), 1], 1)


def test_sampler_options_reach_the_config():
    ddim = SamplerChoice("ddim", 7.0, 0.5, 3, 20.0).config()
    assert ddim == SamplerChoice("ddim", 7, 0.5, 1, 0.0).config()  # order, churn: not DDIM's
    assert (ddim["steps"], ddim["eta"], ddim["_partial_"]) == (7, 0.5, True)
    dpm = SamplerChoice("dpmpp", 9, 0.5, 3).config()
    assert (dpm["steps"], dpm["order"]) == (9, 3) and "eta" not in dpm
    assert "steps" not in SamplerChoice("ddpm", 9, 0.5, 3).config()
    for family in ("euler", "heun"):
        edm = SamplerChoice(family, 6, 0.5, 3, 30.0).config()
        assert (edm["steps"], edm["churn"], "eta" in edm, "order" in edm) == (6, 30.0, False, False)
    accepted = "accepted: ddim, ddpm, dpmpp, euler, heun"
    with pytest.raises(ValueError, match=rf"unknown sampler 'lms'; {accepted}"):
        SamplerChoice("lms", 5).config()


def test_checkpoint_picker_lists_runs_newest_first(tmp_path):
    for i, name in enumerate(["b", "a", "c"]):
        folder = tmp_path / name / "checkpoints"
        folder.mkdir(parents=True)
        (folder / "last.ckpt").touch()
        os.utime(folder / "last.ckpt", (1000 + i, 1000 + i))
    (tmp_path / "empty").mkdir()
    assert list_checkpoints(tmp_path) == [str(tmp_path / n) for n in ("c", "a", "b")]


def test_painted_layers_become_the_redraw_mask():
    background = Image.new("RGB", (4, 4), (10, 20, 30))
    layer = np.zeros((4, 4, 4), dtype=np.uint8)
    layer[2:, :, 3] = 255  # painted bottom half
    picture, mask = picture_from_editor({"background": background, "layers": [layer]})
    assert picture is background
    np.testing.assert_array_equal(np.asarray(mask), (layer[..., 3] > 0) * 255)
    empty = {"background": background, "layers": [np.zeros((4, 4, 4), dtype=np.uint8)]}
    assert picture_from_editor(empty) == (background, None)
    assert picture_from_editor(None) == (None, None)


# --- the real server --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tiny_run, tmp_path_factory) -> Path:
    """A runs folder for the picker, holding the tiny run as ``older``."""
    runs = tmp_path_factory.mktemp("runs")
    (runs / "older").symlink_to(tiny_run)
    return runs


@pytest.fixture(scope="module")
def app_url(tiny_run, runs, tmp_path_factory):
    """The real command serving the tiny run, with a picker over ``runs``."""
    run_dir = tmp_path_factory.mktemp("app")
    process, url = start_app(
        str(tiny_run), free_port(), f"runs_dir={runs}", f"hydra.run.dir={run_dir}", capture=True
    )
    try:
        wait_for(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def client(app_url):
    os.environ.update(OFFLINE)
    return Client(app_url, verbose=False)


def grid_rows(path: str) -> np.ndarray:
    """The grid's pixels below its title (the title holds the seconds)."""
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"))[LINE_HEIGHT + 4 :]


def test_generate_endpoint_gives_grid_gif_and_nfe(client, tiny_run):
    grid, gif, info = client.predict(str(tiny_run), *OPTIONS, *ONE_HOT_3, api_name="/generate")
    assert info.startswith("DDIM, 5 NFE, ") and info.endswith(" s, guidance 1")
    with Image.open(grid) as picture:
        assert picture.format == "PNG" and picture.width > 4 * 16 * 4  # 4 images, scale 4
    with Image.open(gif) as animation:
        assert animation.format == "GIF" and animation.n_frames == 1 + 5
    same, _, _ = client.predict(str(tiny_run), *OPTIONS, *ONE_HOT_3, api_name="/generate")
    np.testing.assert_array_equal(grid_rows(same), grid_rows(grid))
    options = [*OPTIONS[:6], 4, OPTIONS[7]]  # another seed
    other, _, _ = client.predict(str(tiny_run), *options, *ONE_HOT_3, api_name="/generate")
    assert not np.array_equal(grid_rows(other), grid_rows(grid))
    dpm = ["dpmpp", 4, 0.0, 3, 0.0, 0.0, 3, 2]
    _, _, info = client.predict(str(tiny_run), *dpm, *([0.0] * 10), api_name="/generate")
    assert info.startswith("DPMSolver, 4 NFE")  # unconditional, guidance 0
    heun = ["heun", 4, 0.0, 2, 40.0, 0.0, 3, 2]  # churn: noise re-added, 2 x 4 - 1 NFE
    _, _, info = client.predict(str(tiny_run), *heun, *ONE_HOT_3, api_name="/generate")
    assert info.startswith("Heun") and ", 7 NFE, " in info


def test_edit_endpoint_with_an_index_and_with_a_painted_upload(client, tiny_run, tmp_path):
    grid, info = client.predict(
        str(tiny_run), 12, None, 0.6, *OPTIONS, *ONE_HOT_3, api_name="/edit"
    )
    assert info.startswith("SDEdit, strength 0.6 (t0=12), DDIM, 3 NFE")
    with Image.open(grid) as picture:
        assert picture.width > (1 + 4) * 16 * 4
    upload = tmp_path / "upload.png"
    Image.new("L", (16, 16), 200).save(upload)
    layer = np.zeros((16, 16, 4), dtype=np.uint8)
    layer[8:, :, 3] = 255
    Image.fromarray(layer, mode="RGBA").save(tmp_path / "layer.png")
    editor = {
        "background": handle_file(str(upload)),
        "layers": [handle_file(str(tmp_path / "layer.png"))],
        "composite": None,
        "id": None,
    }
    _, info = client.predict(str(tiny_run), 0, editor, 1.0, *OPTIONS, *ONE_HOT_3, api_name="/edit")
    assert info.startswith("RePaint, strength 1 (t0=20), DDIM, 5 NFE")


def test_bad_input_is_a_message_in_the_page(client, tiny_run, tmp_path):
    zero = [0.0] * 10
    with pytest.raises(Exception, match="guidance > 0 needs a context"):
        client.predict(str(tiny_run), *OPTIONS, *zero, api_name="/generate")
    with pytest.raises(Exception, match=r"image index 5000 is out of range"):
        client.predict(str(tiny_run), 5000, None, 0.6, *OPTIONS, *ONE_HOT_3, api_name="/edit")
    big = tmp_path / "big.png"
    Image.new("L", (32, 32), 0).save(big)
    editor = {"background": handle_file(str(big)), "layers": [], "composite": None, "id": None}
    with pytest.raises(Exception, match=r"the upload is 32x32 .* this model takes 16x16"):
        client.predict(str(tiny_run), 0, editor, 0.6, *OPTIONS, *ONE_HOT_3, api_name="/edit")
    # the page still works after the errors
    _, _, info = client.predict(str(tiny_run), *OPTIONS, *ONE_HOT_3, api_name="/generate")
    assert "5 NFE" in info


def test_load_endpoint_switches_checkpoints_and_relabels_the_sliders(client, runs):
    loaded, steps, eta, *sliders = client.predict(str(runs / "older"), api_name="/load")
    assert loaded.endswith(".ckpt") and "older" in loaded
    # the page's controls set for the picked model: steps up to its T and its run's default
    # sampler (DDIM, sampler.steps=5, eta 1 by default), a slider per class
    assert (steps["maximum"], steps["value"], eta["value"]) == (20, 5, 1.0)
    assert [(s["label"], s["visible"], s["value"]) for s in sliders] == [
        (str(digit), True, 1.0 if digit == 0 else 0.0) for digit in range(10)
    ]


# --- a real browser ---------------------------------------------------------------------------
@pytest.fixture
def browser():
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER})")
    pytest.importorskip("selenium.webdriver", reason="needs selenium (the app extra)")
    driver = headless_chromium()
    yield driver
    driver.quit()


def test_a_browser_moves_a_slider_clicks_generate_and_sees_the_image_change(
    browser, app_url, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(app_url)
    wait = WebDriverWait(browser, 180)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#generate"))

    def image_src() -> str | None:
        images = browser.find_elements(By.CSS_SELECTOR, "#samples img")
        return images[0].get_attribute("src") if images else None

    set_number(browser, "steps (not DDPM)", 5)
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    wait.until(lambda d: image_src())
    first = image_src()
    set_number(browser, "0", 0)
    set_number(browser, "7", 1)
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    wait.until(lambda d: image_src() not in (None, first))
    info = browser.find_element(By.CSS_SELECTOR, "#info textarea").get_attribute("value")
    assert "5 NFE" in info
    shot = tmp_path / "app.png"
    browser.save_screenshot(str(shot))
    with Image.open(shot) as picture:
        assert picture.width >= 1000
