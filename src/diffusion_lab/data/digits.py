"""scikit-learn's bundled handwritten digits: the default data set, on disk with the library."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from diffusion_lab.data.source import ImageSource, LoadedImages, one_hot_contexts
from diffusion_lab.utils.checks import require_int

DIGITS_MAX_VALUE = 16  # load_digits() pixels are counts 0..16 (4x4 blocks of a 32x32 bitmap)


class DigitsSource(ImageSource):
    """The 1,797 8x8 grey digits of `sklearn.datasets.load_digits()`; no network, no files.

    Pixels 0..16 are scaled to 0..255 and the images resized to `image_size` x `image_size` by
    bilinear interpolation (antialiased when shrinking). Bilinear rather than nearest: at 16x16,
    nearest shows the 8x8 grid as 2x2 blocks, bilinear gives the smooth strokes a pen would.
    Returns 1 channel and 10 classes named "0".."9".
    """

    name = "digits"

    def __init__(self, image_size: int = 16) -> None:
        self.image_size = require_int("image_size", image_size, minimum=1)

    def load(self) -> LoadedImages:
        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8)
        images = images * (255.0 / DIGITS_MAX_VALUE)
        if images.shape[-1] != self.image_size:
            images = F.interpolate(
                images,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        images = images.round().clamp(0, 255).to(torch.uint8)
        labels = torch.as_tensor(digits.target)
        class_names = [str(name) for name in digits.target_names]
        return LoadedImages(images, one_hot_contexts(labels, len(class_names)), class_names)
