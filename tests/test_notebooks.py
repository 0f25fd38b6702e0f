"""The notebooks run top to bottom on a tiny real checkpoint and a tiny real multirun, in a kernel
of this interpreter, and stay committed without outputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from test_train import TINY, run_train

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ONE_EPOCH = ["trainer.max_epochs=1", "logger=csv", "callbacks.samples.animate=false"]
T = 20  # TINY's scheduler.timesteps
PROBE_MARK = "NOTEBOOK-PROBE "
# a tiny net gains nothing from threads, and two processes that each spin two on two cores run
# several times slower: training and the notebook kernels run on one thread each
ONE_THREAD = {"OMP_NUM_THREADS": "1"}

# appended to each notebook under test: report the kernel's interpreter and the notebook's results
PROBE_COMMON = "import json, sys\nprobe = {'prefix': sys.prefix}\n"
PROBES = {
    "01_ddpm_vs_ddim.ipynb": """
probe['ckpt'] = str(CKPT)
probe['nfe'] = table['NFE'].tolist()
probe['promised_nfe'] = [sampler.nfe for sampler in samplers]
probe['eta_changes_images'] = not torch.equal(results[describe(samplers[1])], results[describe(samplers[2])])
probe['frames'] = {name: list(frames.shape) for name, (frames, _) in trajectories.items()}
""",
    "02_context_control.ipynb": """
probe['mixes'] = dict(zip(mix_labels, mix_rows.tolist()))
probe['scales'] = sorted(guided)
probe['w0_is_the_class_grid'] = torch.equal(guided[0.0], class_images)
probe['guidance_changes_images'] = not torch.equal(guided[3.0], class_images)
probe['interpolation'] = line.tolist()
probe['model'] = MODEL
""",
    "03_compare_runs.ipynb": """
probe['labels'] = labels
probe['final'] = json.loads(final.to_json(orient='index'))
probe['grids'] = {name: str(path) for name, path in grids.items()}
probe['group'] = GROUP
""",
}


def test_committed_notebooks_have_no_outputs():
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert [path.name for path in paths] == sorted(PROBES)
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert code, path.name
        for cell in code:
            assert cell.outputs == [] and cell.execution_count is None, (path.name, cell.source)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """last.ckpt of one tiny real epoch on the digits."""
    run_dir = tmp_path_factory.mktemp("notebook-run") / "run"
    with pytest.MonkeyPatch.context() as patch:
        for key, value in ONE_THREAD.items():  # run_train passes on this process's environment
            patch.setenv(key, value)
        run_train(run_dir, *ONE_EPOCH)
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def model_folder(checkpoint, tmp_path_factory) -> Path:
    """diffusion-export's folder for the tiny checkpoint (written in this process)."""
    import torch

    from diffusion_lab.export import write_export
    from diffusion_lab.runs.checkpoints import load_module

    out = tmp_path_factory.mktemp("export") / "digits"
    return write_export(load_module(checkpoint, torch.device("cpu")), checkpoint, out)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A real two-job multirun (linear and cosine noise schedules), one tiny epoch each."""
    sweep_dir = tmp_path_factory.mktemp("notebook-sweep") / "multirun"
    command = [sys.executable, "-m", "diffusion_lab.train", "-m", "scheduler=linear,cosine"]
    command += [f"hydra.sweep.dir={sweep_dir}", *TINY, *ONE_EPOCH]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **ONE_THREAD}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"multirun failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return sweep_dir


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory) -> KernelSpecManager:
    """Kernel specs holding one python3 kernel that runs this interpreter, whatever kernels the
    machine has installed elsewhere (a user-wide python3 may point at another Python)."""
    folder = tmp_path_factory.mktemp("kernels") / "python3"
    folder.mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (diffusion-lab tests)",
        "language": "python",
    }
    (folder / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(folder.parent)])


def execute(
    name: str, kernel_specs: KernelSpecManager, cwd: Path, **variables: str
) -> tuple[nbformat.NotebookNode, dict]:
    """Run a notebook in cwd with only the given DIFFUSION_LAB_* variables; (notebook, probe)."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    probe = PROBE_COMMON + PROBES[name] + f"print({PROBE_MARK!r} + json.dumps(probe))"
    notebook.cells.append(nbformat.v4.new_code_cell(probe))
    env = {key: value for key, value in os.environ.items() if not key.startswith("DIFFUSION_LAB_")}
    env.pop("MPLBACKEND", None)  # the kernel's inline backend must draw the figures
    env |= {"WANDB_MODE": "offline", **ONE_THREAD, **variables}
    kernel = KernelManager(kernel_name="python3", kernel_spec_manager=kernel_specs)
    client = NotebookClient(
        notebook, km=kernel, timeout=300, resources={"metadata": {"path": str(cwd)}}
    )
    client.execute(env=env)
    printed = [
        output.text
        for output in notebook.cells[-1].outputs
        if output.output_type == "stream" and output.text.startswith(PROBE_MARK)
    ]
    assert len(printed) == 1, notebook.cells[-1].outputs
    result = json.loads(printed[0][len(PROBE_MARK) :])
    assert Path(result["prefix"]).resolve() == Path(sys.prefix).resolve()
    return notebook, result


def figures(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )


def fake_repo(root: Path) -> Path:
    """A repository root (pyproject.toml) with a notebooks/ folder; returns the notebooks folder."""
    (root / "notebooks").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "elsewhere"\n')
    return root / "notebooks"


def test_ddpm_vs_ddim_takes_the_newest_checkpoint_and_counts_network_calls(
    checkpoint, kernel_specs, tmp_path
):
    notebooks = fake_repo(tmp_path / "repo")
    runs = tmp_path / "repo" / "outputs" / "train" / "runs"
    older = runs / "2099-01-01_00-00-00-000000" / "checkpoints" / "last.ckpt"
    older.parent.mkdir(parents=True)
    older.write_bytes(b"not a checkpoint: loading it would fail")
    os.utime(older, (1_000_000_000, 1_000_000_000))
    newest = runs / "2024-06-01_12-00-00-000000" / "checkpoints" / "last.ckpt"
    newest.parent.mkdir(parents=True)
    shutil.copy(checkpoint, newest)

    notebook, result = execute("01_ddpm_vs_ddim.ipynb", kernel_specs, notebooks)

    assert result["ckpt"] == str(newest)
    # DDPM visits all T steps; DDIM's 25 and 10 steps are capped at T
    assert result["nfe"] == [T, min(25, T), min(25, T), min(10, T)] == result["promised_nfe"]
    assert result["eta_changes_images"]
    per_frame = [10, 1, 16, 16]  # one image per class
    assert all(shape[1:] == per_frame and shape[0] >= 3 for shape in result["frames"].values())
    assert figures(notebook) == 2  # the grids side by side, the trajectories


def test_ddpm_vs_ddim_says_what_to_run_when_there_is_no_checkpoint(kernel_specs, tmp_path):
    notebooks = fake_repo(tmp_path / "repo")
    with pytest.raises(CellExecutionError) as raised:
        execute("01_ddpm_vs_ddim.ipynb", kernel_specs, notebooks)
    message = str(raised.value)
    assert "FileNotFoundError" in message and "diffusion-train" in message
    assert "DIFFUSION_LAB_CKPT" in message


def test_context_control_draws_classes_mixes_interpolation_and_guidance(
    model_folder, kernel_specs, tmp_path
):
    """On an export folder (load_pretrained); notebook 01's test covers loading a checkpoint."""
    notebook, result = execute(
        "02_context_control.ipynb",
        kernel_specs,
        tmp_path,
        DIFFUSION_LAB_MODEL=str(model_folder),
        DIFFUSION_LAB_MIXES="3:1,8:0.6;2:0.5,5:0.5",
    )

    assert result["model"] == str(model_folder)
    assert list(result["mixes"]) == ["3:1,8:0.6", "2:0.5,5:0.5"]
    three_and_eight = [0, 0, 0, 1, 0, 0, 0, 0, 0.6, 0]
    assert result["mixes"]["3:1,8:0.6"] == pytest.approx(three_and_eight)
    assert result["mixes"]["2:0.5,5:0.5"] == pytest.approx([0, 0, 0.5, 0, 0, 0.5, 0, 0, 0, 0])
    interpolation = result["interpolation"]
    assert interpolation[0][3] == 1 and interpolation[-1][8] == 1 and len(interpolation) == 8
    assert result["scales"] == [0.0, 1.0, 3.0]
    assert result["w0_is_the_class_grid"] and result["guidance_changes_images"]
    # classes, mixes, interpolation, null context, guidance sweep
    assert figures(notebook) == 5


def test_compare_runs_reads_every_job_of_the_sweep(sweep, kernel_specs, tmp_path):
    notebook, result = execute(
        "03_compare_runs.ipynb", kernel_specs, tmp_path, DIFFUSION_LAB_SWEEP=str(sweep)
    )

    assert result["labels"] == {"0": "scheduler=linear", "1": "scheduler=cosine"}
    for job in ("0", "1"):
        # the checkpoint callback wrote the same final val/loss into the best checkpoint's name
        (best,) = (sweep / job / "checkpoints").glob("best-*.ckpt")
        val_loss = float(re.search(r"val_loss=?([0-9.]+)\.ckpt$", best.name).group(1))
        final = result["final"][job]
        assert final["val/loss"] == pytest.approx(val_loss, abs=1e-4)
        assert final["best val/loss"] == final["val/loss"] and final["epochs"] == 1
        assert final["samples/ddpm_seconds"] > 0 and final["samples/ddim_seconds"] > 0
        assert result["grids"][job] == str(sweep / job / "samples" / "epoch_000.png")
    assert result["group"] == f"train-{sweep.name}"
    assert figures(notebook) == 1 + 2  # the loss curves, one sample grid per job
