"""CIFAR-10 (python version) through torchvision: 32x32 RGB, 10 classes."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets import CIFAR10
from torchvision.datasets.utils import check_md5, download_and_extract_archive

from diffusion_lab.data.source import ImageSource, LoadedImages, one_hot_contexts
from diffusion_lab.utils.checks import InputError, MissingInputError


class _PresenceCheckedCIFAR10(CIFAR10):
    """torchvision's CIFAR10 that only checks that each file is there, not its md5.

    torchvision's `check_integrity(path, md5)` checks presence alone when md5 is None, so this
    subclass changes nothing but the class attributes, as torchvision's own CIFAR100 does.
    `CIFAR10Source` verifies the md5s itself beforehand (unless told not to), so that a corrupt
    file gets an error naming it, and files that are intentionally not the official release (a
    subset, the small batches that the tests write) can still be read by torchvision's code.
    """

    train_list = [[file_name, None] for file_name, _ in CIFAR10.train_list]
    test_list = [[file_name, None] for file_name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


def _expected_files() -> list[tuple[str, str]]:
    """(file name, md5) of every file of the official release, as torchvision lists them."""
    batches = [(name, md5) for name, md5 in CIFAR10.train_list + CIFAR10.test_list]
    return [*batches, (CIFAR10.meta["filename"], CIFAR10.meta["md5"])]


class CIFAR10Source(ImageSource):
    """CIFAR-10 read by torchvision from `root/cifar-10-batches-py/` (data_batch_1..5, test_batch,
    batches.meta: the pickled batches of the python version).

    Args:
        root: the folder that holds (or will hold) `cifar-10-batches-py/`.
        download: fetch and unpack the archive from the CIFAR site when the files are missing
            (needs internet; done once per machine in `prepare()`).
        train: the 50,000 training images; False gives the 10,000 test images.
        verify_checksums: check each file's md5 against the official release before reading.
            Set False to read files in the same format that are not the official ones.

    `load()` takes the dataset's `.data` (N, 32, 32, 3) uint8 and `.targets` as they are: no
    per-image PIL round trip. Class names come from the dataset's `classes` (batches.meta).
    """

    name = "cifar10"

    def __init__(
        self,
        root: str | Path,
        download: bool = False,
        train: bool = True,
        verify_checksums: bool = True,
    ) -> None:
        self.root = Path(root)
        self.download = download
        self.train = train
        self.verify_checksums = verify_checksums

    @property
    def folder(self) -> Path:
        return self.root / CIFAR10.base_folder

    def prepare(self) -> None:
        """With `download`, fetch and unpack the official archive (md5-checked) if files are missing."""
        if self.download and self._missing_files():
            download_and_extract_archive(
                CIFAR10.url, str(self.root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5
            )

    def load(self) -> LoadedImages:
        self.prepare()  # a no-op once the files are there (the datamodule's prepare_data ran it)
        self._check_files()
        dataset = _PresenceCheckedCIFAR10(root=str(self.root), train=self.train)
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        labels = torch.as_tensor(dataset.targets, dtype=torch.long)
        class_names = [str(name) for name in dataset.classes]
        if len(labels) != len(images):
            raise InputError(
                f"{self.folder}: {len(labels)} labels for {len(images)} images; "
                "expected one label per image"
            )
        out_of_range = (labels < 0) | (labels >= len(class_names))
        if out_of_range.any():
            raise InputError(
                f"{self.folder}: label {int(labels[out_of_range][0])} is out of range; expected "
                f"0..{len(class_names) - 1} for the classes {class_names}"
            )
        return LoadedImages(images, one_hot_contexts(labels, len(class_names)), class_names)

    def _missing_files(self) -> list[str]:
        return [name for name, _ in _expected_files() if not (self.folder / name).is_file()]

    def _check_files(self) -> None:
        """All files present (FileNotFoundError) and, if asked, with the official md5s."""
        missing = self._missing_files()
        if missing:
            raise MissingInputError(
                f"CIFAR-10 not found: looked in {str(self.folder.resolve())!r} and "
                f"{missing} are missing. Pass data.source.download=true on a machine with "
                "internet to fetch it there, or set data.source.root to the folder that holds "
                f"{CIFAR10.base_folder}/."
            )
        if self.verify_checksums:
            corrupt = [
                name for name, md5 in _expected_files() if not check_md5(self.folder / name, md5)
            ]
            if corrupt:
                raise InputError(
                    f"CIFAR-10 files {corrupt} in {str(self.folder)!r} do not have the md5 of the "
                    "official release (corrupt or different files). Delete them and download "
                    "again, or pass data.source.verify_checksums=false to read them anyway."
                )
