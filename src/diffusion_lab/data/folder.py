"""Your own images: one subfolder per class, read with torchvision's ImageFolder."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from diffusion_lab.data.source import ImageSource, LoadedImages, one_hot_contexts
from diffusion_lab.utils.checks import InputError, MissingInputError, require_int

PIL_MODE_BY_CHANNELS = {1: "L", 3: "RGB"}


class ImageFolderSource(ImageSource):
    """Every image under `root/<class name>/` (any format PIL reads and ImageFolder accepts:
    .png, .jpg, .jpeg, .bmp, .gif, .webp, ...), converted to grey ("L", channels=1) or RGB
    (channels=3) and resized to `image_size` x `image_size` (bilinear, antialiased; the aspect
    ratio is not kept). Class names are the subfolder names in sorted order.

    Everything is loaded into one uint8 tensor (N, channels, image_size, image_size): meant for
    data sets that fit in memory.
    """

    name = "folder"

    def __init__(self, root: str | Path, image_size: int, channels: int = 3) -> None:
        require_int("image_size", image_size, minimum=1)
        if channels not in PIL_MODE_BY_CHANNELS:
            raise InputError(f"channels must be 1 (grey) or 3 (RGB); got {channels!r}")
        self.root = Path(root)
        self.image_size = image_size
        self.channels = channels

    def load(self) -> LoadedImages:
        if not self.root.is_dir():
            raise MissingInputError(
                f"image folder {str(self.root.resolve())!r} does not exist or is not a folder; "
                "expected a folder with one subfolder of images per class"
            )
        _check_class_folders(self.root)
        to_uint8_tensor = v2.Compose(
            [
                v2.PILToTensor(),
                v2.Resize((self.image_size, self.image_size), antialias=True),
            ]
        )
        try:
            dataset = ImageFolder(str(self.root), transform=to_uint8_tensor, loader=self._open)
        except FileNotFoundError as error:  # no class subfolder, or no image in any of them
            raise MissingInputError(
                f"image folder {str(self.root.resolve())!r} holds no images in class subfolders "
                f"(expected root/<class name>/<image>.png and the like): {error}"
            ) from error
        images = torch.stack([dataset[index][0] for index in range(len(dataset))])
        labels = torch.as_tensor(dataset.targets)
        return LoadedImages(images, one_hot_contexts(labels, len(dataset.classes)), dataset.classes)

    def _open(self, path: str) -> Image.Image:
        try:
            with Image.open(path) as image:
                return image.convert(PIL_MODE_BY_CHANNELS[self.channels])
        except (OSError, SyntaxError, ValueError) as error:  # PIL's errors for unreadable files
            raise InputError(
                f"{path}: not a readable image ({type(error).__name__}: {error}); every file in a "
                "class folder must be an image PIL reads"
            ) from None


def _check_class_folders(root: Path) -> None:
    """Every class subfolder holds at least one image and nothing else (hidden files aside):
    ImageFolder would skip other files silently, or fail naming no folder for an empty class."""
    accepted = ", ".join(IMG_EXTENSIONS)
    empty = []
    for folder in sorted(path for path in root.iterdir() if path.is_dir()):
        files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
        others = [p for p in files if not p.name.lower().endswith(IMG_EXTENSIONS)]
        if others:
            raise InputError(
                f"{others[0]}: not an image file (suffix {others[0].suffix!r}); a class folder "
                f"may hold images only: {accepted}"
            )
        empty += [] if files else [folder.name]
    if empty:
        raise MissingInputError(
            f"image folder {str(root.resolve())!r} holds no images in class subfolders {empty}; "
            f"every class subfolder needs at least one image ({accepted}), or remove it"
        )
