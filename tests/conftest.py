"""Fixtures that write tiny data sets in the exact on-disk formats of the real ones."""

from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SPRITES_IMAGES_FILE = "sprites_1788_16x16.npy"
SPRITES_LABELS_FILE = "sprite_labels_nc_1788_16x16.npy"
SPRITES_COUNT = 40

CIFAR10_LABEL_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
CIFAR10_IMAGES_PER_BATCH = 12  # the real batches hold 10,000
CIFAR10_TRAIN_BATCHES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4"]
CIFAR10_TRAIN_BATCHES += ["data_batch_5"]

FOLDER_IMAGE_SIZES = {"cat": [(20, 20), (31, 17), (8, 12)], "dog": [(32, 32), (5, 40)]}


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n``, pyproject's addopts) worker k of n runs on its own share of
    the cores, cores[k::n], and so does every process its tests start (affinity is inherited):
    the workers never compete for a core, and each test sees a smaller machine, as
    ``available_cores()`` reports it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    if worker is None or not hasattr(os, "sched_setaffinity"):
        return
    count = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    cores = sorted(os.sched_getaffinity(0))
    share = cores[int(worker.removeprefix("gw")) % count :: count] or cores
    os.sched_setaffinity(0, share)
    import torch

    torch.set_num_threads(len(share))


@pytest.fixture(scope="session", autouse=True)
def judge_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """The judges that diffusion-eval and the quality callback cache go to a folder of this test
    session (shared by its subprocesses), never to the user's ~/.cache/diffusion-lab."""
    previous = os.environ.get("DIFFUSION_LAB_CACHE")
    os.environ["DIFFUSION_LAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("DIFFUSION_LAB_CACHE", None)
    else:
        os.environ["DIFFUSION_LAB_CACHE"] = previous


@pytest.fixture
def sprites_root(tmp_path: Path) -> Path:
    """The course's .npy pair with 40 sprites: images (40, 16, 16, 3) uint8 NHWC and labels
    (40, 5) float64 one-hot, every class present (image i has class i % 5)."""
    root = tmp_path / "sprites"
    root.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(SPRITES_COUNT, 16, 16, 3), dtype=np.uint8)
    images[0] = 0  # the extremes, for the [-1, 1] conversion
    images[1] = 255
    labels = np.eye(5, dtype=np.float64)[np.arange(SPRITES_COUNT) % 5]
    np.save(root / SPRITES_IMAGES_FILE, images)
    np.save(root / SPRITES_LABELS_FILE, labels)
    return root


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    """root/cifar-10-batches-py/ as in the python version of CIFAR-10, with 12 images per batch.

    Each batch is a pickled dict {"batch_label": str, "labels": list of int, "data": (N, 3072)
    uint8 (row-major 32x32 planes: R, then G, then B), "filenames": list of str}; batches.meta
    holds {"num_cases_per_batch", "label_names", "num_vis"}. The real files were written by
    Python 2, whose str keys load as str with torchvision's encoding="latin1" and as bytes
    (b"data") with the CIFAR page's encoding="bytes"; `_dump_python2_pickle` writes them the same
    way. Image j of a batch has label j % 10 and red plane = label, green = j, blue = 255 - j.
    """
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = [
        (name, f"training batch {i + 1} of 5") for i, name in enumerate(CIFAR10_TRAIN_BATCHES)
    ]
    batches.append(("test_batch", "testing batch 1 of 1"))
    for name, batch_label in batches:
        labels = [j % 10 for j in range(CIFAR10_IMAGES_PER_BATCH)]
        planes = np.empty((CIFAR10_IMAGES_PER_BATCH, 3, 1024), dtype=np.uint8)
        for j, label in enumerate(labels):
            planes[j] = np.array([label, j, 255 - j], dtype=np.uint8)[:, None]
        batch = {
            "batch_label": batch_label,
            "labels": labels,
            "data": planes.reshape(CIFAR10_IMAGES_PER_BATCH, 3072),
            "filenames": [f"{name}_{j}.png" for j in range(CIFAR10_IMAGES_PER_BATCH)],
        }
        (folder / name).write_bytes(_dump_python2_pickle(batch))
    meta = {"num_cases_per_batch": CIFAR10_IMAGES_PER_BATCH, "label_names": CIFAR10_LABEL_NAMES}
    meta["num_vis"] = 3072
    (folder / "batches.meta").write_bytes(_dump_python2_pickle(meta))
    return tmp_path / "cifar10"


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    """root/cat/*.png (3 images) and root/dog/*.png (2 images), RGB, of different sizes."""
    root = tmp_path / "folder"
    for class_index, (class_name, sizes) in enumerate(FOLDER_IMAGE_SIZES.items()):
        (root / class_name).mkdir(parents=True)
        for i, (width, height) in enumerate(sizes):
            color = (200 * class_index, 40 * i, 255 - 200 * class_index)
            Image.new("RGB", (width, height), color).save(root / class_name / f"{i}.png")
    return root


class _Python2Str(bytes):
    """A Python 2 byte string: pickled with the STRING opcodes that Python 2's str used."""


class _Python2Pickler(pickle._Pickler):
    """Protocol 2 pickler that writes str and bytes as Python 2 wrote its str (8-bit strings)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self.save(_Python2Str(obj.encode("latin1")))

    dispatch[_Python2Str] = save_python2_str
    dispatch[bytes] = save_python2_str  # numpy's raw pixel buffer was a Python 2 str too
    dispatch[str] = save_str


def _dump_python2_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder (best-*.ckpt, last.ckpt, result.json) from one short real epoch on the digits
    with T = 20 and n_feat = 8, no quality panel: shared by diffusion-edit, diffusion-export and
    the app's tests (about 15 s on 2 CPU cores)."""
    from test_train import run_train

    run_dir = tmp_path_factory.mktemp("tiny") / "train"
    run_train(
        run_dir,
        "trainer.max_epochs=1",
        "logger=csv",
        "callbacks.samples.animate=false",
        "~callbacks.quality",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
    )
    return run_dir


@pytest.fixture(scope="session")
def epoch_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder from one real epoch over the whole digits training set (T = 20, n_feat = 8)
    with everything on by default: grids, GIF, the quality panel, checkpoints, an offline W&B
    run; shared by diffusion-train's and diffusion-eval's tests, which only read it."""
    from test_train import run_train

    run_dir = tmp_path_factory.mktemp("digits") / "run"
    run_train(run_dir, "trainer.max_epochs=1")
    return run_dir
