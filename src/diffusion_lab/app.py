"""diffusion-app: a local web page to play with a trained model (Gradio), offline.

diffusion-app ckpt_path=outputs/train/runs/<datetime>            # http://127.0.0.1:7860
diffusion-app ckpt_path=exports/digits port=7861 host=0.0.0.0    # also an export folder

Generate: one slider per class (a class, a mix; all zero = unconditional), the sampler family and
its options (DDIM, DDPM, DPM-Solver++, EDM's Euler and Heun with churn), guidance, seed and the
number of images; shows the grid, the NFE and seconds, and the denoising GIF, with a progress bar
over the sampler's steps. Edit: a data-set image or an upload (paint on it to inpaint those
pixels), the strength and the target context (the Generate tab's sliders). A picker switches
between the runs under outputs/train/runs (newest first) and relabels the sliders for the picked
model's classes. Nothing is fetched from the network: analytics are off,
there is no share link, the frontend comes from the wheel. The page's logic lives in
:mod:`diffusion_lab.app_logic`; this module only lays it out.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import functools  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from diffusion_lab import CONFIG_DIR  # noqa: E402
from diffusion_lab.app_logic import (  # noqa: E402
    SAMPLER_FAMILIES,
    Models,
    SamplerChoice,
    default_steps_and_eta,
    edit,
    generate,
    list_checkpoints,
)
from diffusion_lab.runs.checkpoints import resolve_device  # noqa: E402
from diffusion_lab.utils.checks import InputError, require_int
from diffusion_lab.utils.cli import input_errors_end_the_command

log = logging.getLogger(__name__)

MIN_CLASS_SLIDERS = 10  # the page has max(this, the first model's classes) class sliders


def page_errors(function):
    """Bad input (ValueError, FileNotFoundError) as a message in the page, not a dead page. The
    signature stays the function's (Gradio reads its gr.Progress argument from it)."""

    @functools.wraps(function)
    def wrapped(*args):
        try:
            return function(*args)
        except (ValueError, FileNotFoundError) as error:
            raise gr.Error(str(error)) from None

    return wrapped


def progress_steps(progress: gr.Progress, what: str):
    """A sampler's ``on_step(i, n, t, x)`` that moves the page's progress bar."""

    def on_step(index: int, total: int, t_prev: float, x: object) -> None:
        progress((index, total), desc=f"{what}: t={t_prev:g}", unit="steps")

    return on_step


def class_names_of(module) -> list[str]:
    return module.class_names or [str(i) for i in range(module.num_classes)]


def slider_settings(class_names: list[str], slots: int) -> list[dict]:
    """The settings of each class slider: the first ``len(class_names)`` shown with the class
    names (the first at 1, a class to start from), the others hidden at 0."""
    return [
        {
            "visible": i < len(class_names),
            "label": class_names[i] if i < len(class_names) else f"unused {i}",
            "value": 1.0 if i == 0 else 0.0,
        }
        for i in range(slots)
    ]


def build_page(models: Models, ckpt_path: str, runs_dir: Path) -> gr.Blocks:
    """The page for the checkpoint ``ckpt_path``; the picker switches to another run's model and
    relabels the class sliders (up to max(10, this model's classes) of them)."""
    module = models.get(ckpt_path)
    class_names = class_names_of(module)
    slots = max(MIN_CLASS_SLIDERS, len(class_names))
    out_dir = Path(tempfile.mkdtemp(prefix="diffusion-app-"))
    choices = list_checkpoints(runs_dir)
    if ckpt_path not in choices:
        choices.insert(0, ckpt_path)

    with gr.Blocks(title="diffusion-lab") as page:
        gr.Markdown("## diffusion-lab: play with a trained model")
        with gr.Row():
            picker = gr.Dropdown(choices, value=ckpt_path, label="checkpoint", scale=3)
            loaded = gr.Textbox(label="loaded", value=str(models.checkpoint), interactive=False)
        with gr.Row():
            family = gr.Radio(list(SAMPLER_FAMILIES), value="ddim", label="sampler")
            total = module.schedule.timesteps
            first_steps, first_eta = default_steps_and_eta(module)
            steps = gr.Slider(1, total, value=first_steps, step=1, label="steps (not DDPM)")
            eta = gr.Slider(0.0, 1.0, value=first_eta, step=0.05, label="eta (DDIM)")
            order = gr.Radio([1, 2, 3], value=2, label="order (DPM-Solver)")
            churn = gr.Slider(0.0, 80.0, value=0.0, step=1.0, label="churn (Euler, Heun)")
        with gr.Row():
            guidance = gr.Slider(0.0, 8.0, value=0.0, step=0.5, label="guidance")
            seed = gr.Number(0, precision=0, label="seed")
            count = gr.Slider(1, 16, value=8, step=1, label="images")
        with gr.Accordion("context: one weight per class", open=True), gr.Row():
            sliders = [
                gr.Slider(0.0, 1.0, step=0.05, **update)
                for update in slider_settings(class_names, slots)
            ]
        options = [family, steps, eta, order, churn, guidance, seed, count]

        with gr.Tab("Generate"):
            generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Row():
                grid = gr.Image(label="samples", type="pil", format="png", elem_id="samples")
                animation = gr.Image(label="denoising", type="filepath", elem_id="animation")
            info = gr.Textbox(label="NFE and seconds", elem_id="info")
        with gr.Tab("Edit"):
            with gr.Row():
                index = gr.Number(0, precision=0, label="data-set index")
                strength = gr.Slider(0.05, 1.0, value=0.6, step=0.05, label="strength")
            upload = gr.ImageEditor(
                label="or upload an image (paint the pixels to redraw: inpainting)",
                type="pil",
                image_mode="RGBA",
            )
            edit_button = gr.Button("Edit", variant="primary", elem_id="edit")
            edited = gr.Image(label="before / after", type="pil", format="png", elem_id="edited")
            edit_info = gr.Textbox(label="edit", elem_id="edit_info")

        def pick(path: str) -> list:
            module = models.get(path)
            names = class_names_of(module)
            if len(names) > slots:
                raise InputError(
                    f"{path} has {len(names)} classes; this page has {slots} class sliders: "
                    f"start diffusion-app ckpt_path={path}"
                )
            first_steps, first_eta = default_steps_and_eta(module)
            return [
                str(models.checkpoint),
                gr.update(maximum=module.schedule.timesteps, value=first_steps),
                gr.update(value=first_eta),
                *(gr.update(**u) for u in slider_settings(names, slots)),
            ]

        def weights_of(module, weights: tuple) -> tuple:
            return weights[: module.num_classes]

        def run_generate(progress=gr.Progress(), *values):  # noqa: B008 (Gradio reads it)
            path, family, steps, eta, order, churn, guidance, seed, count, *weights = values
            module = models.get(path)
            choice = SamplerChoice(family, steps, eta, order, churn)
            result = generate(
                module, weights_of(module, weights), choice, guidance, seed, count, out_dir,
                on_step=progress_steps(progress, "sampling"),
            )  # fmt: skip
            return result.grid, str(result.animation), result.info

        def run_edit(progress=gr.Progress(), *values):  # noqa: B008 (Gradio reads it)
            path, index, upload, strength, family, steps, eta, order, churn, *rest = values
            guidance, seed, count, *weights = rest
            module = models.get(path)
            choice = SamplerChoice(family, steps, eta, order, churn)
            return edit(
                models, index, upload, strength, weights_of(module, weights), choice, guidance,
                seed, count, on_step=progress_steps(progress, "editing"),
            )  # fmt: skip

        picker.change(page_errors(pick), picker, [loaded, steps, eta, *sliders], api_name="load")
        generate_button.click(
            page_errors(run_generate),
            [picker, *options, *sliders],
            [grid, animation, info],
            api_name="generate",
        )
        edit_button.click(
            page_errors(run_edit),
            [picker, index, upload, strength, *options, *sliders],
            [edited, edit_info],
            api_name="edit",
        )
    page.out_dir = out_dir
    return page


def launch(page: gr.Blocks, host: str, port: int, block: bool = True) -> None:
    """Serve the page on host:port, offline (no share link, no server-side rendering)."""
    page.queue().launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,
        inbrowser=False,
        prevent_thread_lock=not block,
        allowed_paths=[str(page.out_dir)],
        show_error=True,
    )


def check_address(host: object, port: object) -> tuple[str, int]:
    if not isinstance(host, str) or not host:
        raise InputError(f"host must be an address such as 127.0.0.1, got {host!r}")
    return host, require_int("port", port, minimum=1, maximum=65535)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="app")
@input_errors_end_the_command("diffusion-app")
def main(cfg: DictConfig) -> None:
    host, port = check_address(cfg.host, cfg.port)
    models = Models(resolve_device(cfg.device), precision=cfg.get("precision"))
    page = build_page(models, str(cfg.ckpt_path), Path(cfg.runs_dir))
    log.info("diffusion-app for %s on http://%s:%d", models.checkpoint, host, port)
    launch(page, host, port)


if __name__ == "__main__":
    main()
