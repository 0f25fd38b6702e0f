"""The LightningDataModule: one image source, a seeded train/val split, per-batch conversion."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from diffusion_lab.data.index_loader import IndexLoader
from diffusion_lab.data.source import ImageSource, LoadedImages
from diffusion_lab.utils.checks import InputError, require_choice, require_int, require_number

LOADERS = ("index", "torch")


class DiffusionDataModule(L.LightningDataModule):
    """Serves (image, context) batches from an `ImageSource`.

    The loaders yield uint8 images (B, C, H, W) and float32 contexts (B, K); once the batch is on
    the device, `on_after_batch_transfer` turns the images into float in [-1, 1] (and flips a
    random half horizontally while training, with `hflip`). The model therefore sees float NCHW in
    [-1, 1] and one-hot contexts (B, K).

    Args:
        source: where the images come from; loaded once in `setup()`.
        channels, image_size, num_classes: what the data is expected to be (the model config
            interpolates them: `${data.channels}` etc.); `setup()` checks the source against them.
        batch_size: images per batch PER DEVICE. Under DDP the effective batch is batch_size x
            world size: each rank serves its shard of each epoch (the index loader shards itself
            as a DistributedSampler would; for loader=torch Lightning adds the sampler).
        val_fraction: share of the images held out for validation, in [0, 1). 0 gives no
            validation set (`val_dataloader()` returns an empty list, which Lightning skips).
        num_workers, pin_memory: DataLoader settings (``loader=torch`` only). The data is in
            memory, so 0 workers is usually fastest for small images.
        seed: seeds the train/val split (a torch.Generator permutation), so a seed always gives
            the same split on every process and machine; with ``loader=index`` it also seeds each
            epoch's order (see `IndexLoader`).
        hflip: flip a random half of each training batch left-right (per image, probability 0.5).
        loader: ``index`` (default): the whole uint8 set on the training device, batches cut by
            index from a seeded per-epoch permutation drawn there, resumable mid-epoch
            (`IndexLoader`); ``torch``: a ``DataLoader`` over a ``TensorDataset`` (per-item
            indexing and collation, order from the global RNG, Lightning's DistributedSampler
            under DDP; a mid-epoch resume restarts the epoch).
        drop_last: drop each epoch's last training batch when it is smaller than batch_size.
    """

    def __init__(
        self,
        source: ImageSource,
        *,
        channels: int,
        image_size: int,
        num_classes: int,
        batch_size: int = 100,
        val_fraction: float = 0.05,
        num_workers: int = 0,
        seed: int = 0,
        hflip: bool = False,
        pin_memory: bool = False,
        loader: str = "index",
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(source, ImageSource):
            raise InputError(
                f"source must be an ImageSource (DigitsSource, SpritesSource, CIFAR10Source, "
                f"ImageFolderSource, ...); got {type(source).__name__}"
            )
        for name, value, minimum in (
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
            ("seed", seed, 0),
            ("channels", channels, 1),
            ("image_size", image_size, 1),
            ("num_classes", num_classes, 1),
        ):
            require_int(f"data.{name}", value, minimum=minimum)
        require_number("data.val_fraction", val_fraction)
        if not 0 <= val_fraction < 1:
            raise InputError(f"data.val_fraction must be in [0, 1); got {val_fraction}")
        require_choice("data.loader", loader, LOADERS)
        if loader == "index" and (num_workers > 0 or pin_memory):
            raise InputError(
                f"data.num_workers={num_workers} and data.pin_memory={pin_memory} apply to "
                "data.loader=torch only; data.loader=index keeps the data on the device already "
                "(set num_workers=0 and pin_memory=false, or loader=torch)"
            )
        self.source = source
        self.channels = channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.val_fraction = float(val_fraction)
        self.num_workers = num_workers
        self.seed = seed
        self.hflip = hflip
        self.pin_memory = pin_memory
        self.loader = loader
        self.drop_last = drop_last
        self._loaded: LoadedImages | None = None
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    @property
    def class_names(self) -> list[str]:
        """The K class names, in context-column order. Available after `setup()`."""
        if self._loaded is None:
            raise RuntimeError("class_names are known after setup(); call datamodule.setup() first")
        return self._loaded.class_names

    def prepare_data(self) -> None:
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        """Load the source once, check it against channels/image_size/num_classes, split it."""
        if self._loaded is not None:
            return
        loaded = self.source.load()
        self._check_matches_config(loaded)
        train_indices, val_indices = self.split_indices(len(loaded.images))
        self.train_set = TensorDataset(loaded.images[train_indices], loaded.contexts[train_indices])
        self.val_set = TensorDataset(loaded.images[val_indices], loaded.contexts[val_indices])
        self._loaded = loaded

    def split_indices(self, num_images: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A seeded permutation of 0..num_images-1 cut into (train indices, val indices).

        The validation set gets round(num_images x val_fraction) images, at least one when
        val_fraction > 0; the training set must keep at least one.
        """
        num_val = max(1, round(num_images * self.val_fraction)) if self.val_fraction > 0 else 0
        if num_images - num_val < 1:
            raise InputError(
                f"data.val_fraction={self.val_fraction} leaves no training images out of "
                f"{num_images}; use a smaller val_fraction"
            )
        generator = torch.Generator().manual_seed(self.seed)
        permutation = torch.randperm(num_images, generator=generator)
        return permutation[num_val:], permutation[:num_val]

    def train_dataloader(self) -> DataLoader | IndexLoader:
        return self._loader(self._require_setup(self.train_set), shuffle=True)

    def val_dataloader(self) -> DataLoader | IndexLoader | list:
        val_set = self._require_setup(self.val_set)
        if len(val_set) == 0:
            return []  # Lightning runs no validation for an empty collection of loaders
        return self._loader(val_set, shuffle=False)

    def on_after_batch_transfer(
        self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (B, C, H, W) -> float32 in [-1, 1] (x / 127.5 - 1), on the device.

        While training with `hflip`, each image is flipped left-right with probability 0.5.
        """
        images, contexts = batch
        training = self.trainer is not None and self.trainer.training
        return to_model_input(images, hflip=self.hflip and training), contexts

    def _loader(self, dataset: TensorDataset, shuffle: bool) -> DataLoader | IndexLoader:
        drop_last = self.drop_last and shuffle  # validation always sees every image
        if self.loader == "torch":
            return DataLoader(
                dataset,
                batch_size=self.batch_size,
                shuffle=shuffle,
                drop_last=drop_last,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
                persistent_workers=self.num_workers > 0,
            )
        # under a trainer: its device and this process's shard; alone (a notebook, a test): CPU
        trainer = self.trainer
        return IndexLoader(
            dataset.tensors,
            self.batch_size,
            shuffle=shuffle,
            seed=self.seed,
            drop_last=drop_last,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
            device=trainer.strategy.root_device if trainer is not None else "cpu",
        )

    def _require_setup(self, dataset: TensorDataset | None) -> TensorDataset:
        if dataset is None:
            raise RuntimeError("the datamodule is not set up; call datamodule.setup() first")
        return dataset

    def _check_matches_config(self, loaded: LoadedImages) -> None:
        source = f"the {self.source.name} source"
        if loaded.channels != self.channels:
            raise InputError(
                f"data.channels={self.channels} but {source} gives {loaded.channels}-channel images"
            )
        if (loaded.height, loaded.width) != (self.image_size, self.image_size):
            raise InputError(
                f"data.image_size={self.image_size} but {source} gives "
                f"{loaded.height}x{loaded.width} images"
            )
        if len(loaded.class_names) != self.num_classes:
            raise InputError(
                f"data.num_classes={self.num_classes} but {source} has "
                f"{len(loaded.class_names)} classes {loaded.class_names}"
            )


def to_model_input(images: torch.Tensor, hflip: bool = False) -> torch.Tensor:
    """uint8 images (B, C, H, W) -> float32 x / 127.5 - 1 in [-1, 1]; with ``hflip``, each image
    flipped left-right with probability 0.5 (drawn from the global RNG on the images' device)."""
    images = images.to(torch.float32) / 127.5 - 1.0
    if hflip:
        flip = torch.rand(images.shape[0], device=images.device) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    return images
