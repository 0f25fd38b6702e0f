"""Data: image sources (digits, sprites, CIFAR-10, a folder) and the Lightning datamodule.

Sources hold uint8 images (N, C, H, W) and float32 one-hot contexts (N, K); the datamodule
converts each batch to float NCHW in [-1, 1] on the device.
"""

from __future__ import annotations

from diffusion_lab.data.cifar10 import CIFAR10Source
from diffusion_lab.data.datamodule import DiffusionDataModule
from diffusion_lab.data.digits import DigitsSource
from diffusion_lab.data.folder import ImageFolderSource
from diffusion_lab.data.index_loader import IndexLoader
from diffusion_lab.data.source import ImageSource, LoadedImages
from diffusion_lab.data.sprites import SpritesSource

__all__ = [
    "CIFAR10Source",
    "DiffusionDataModule",
    "DigitsSource",
    "ImageFolderSource",
    "ImageSource",
    "IndexLoader",
    "LoadedImages",
    "SpritesSource",
]
