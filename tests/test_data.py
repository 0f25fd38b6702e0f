"""Data sources, the datamodule and conf/data/*.yaml, on small files in the real formats."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from conftest import (
    CIFAR10_IMAGES_PER_BATCH,
    CIFAR10_LABEL_NAMES,
    SPRITES_COUNT,
    SPRITES_IMAGES_FILE,
    SPRITES_LABELS_FILE,
)
from hydra.utils import instantiate
from omegaconf import OmegaConf
from sklearn.datasets import load_digits

from diffusion_lab.data import (
    CIFAR10Source,
    DiffusionDataModule,
    DigitsSource,
    ImageFolderSource,
    LoadedImages,
    SpritesSource,
)

DATA_CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf" / "data"
SPRITE_NAMES = ["hero", "non-hero", "food", "spell", "side-facing"]


def sprites_datamodule(root: Path, **overrides: object) -> DiffusionDataModule:
    arguments = dict(channels=3, image_size=16, num_classes=5, batch_size=8) | overrides
    return DiffusionDataModule(SpritesSource(root), **arguments)


def assert_one_hot(contexts: torch.Tensor, num_classes: int) -> None:
    assert contexts.dtype == torch.float32
    assert contexts.shape[1] == num_classes
    assert torch.all((contexts == 0) | (contexts == 1))
    assert torch.all(contexts.sum(dim=1) == 1)


# --- digits ---------------------------------------------------------------------------------------


def test_digits_are_1797_grey_16x16_images_in_10_classes() -> None:
    loaded = DigitsSource(image_size=16).load()
    assert loaded.images.shape == (1797, 1, 16, 16)
    assert loaded.images.dtype == torch.uint8
    assert loaded.class_names == [str(digit) for digit in range(10)]
    assert_one_hot(loaded.contexts, 10)
    assert torch.equal(loaded.contexts.argmax(dim=1), torch.as_tensor(load_digits().target))
    assert loaded.images.max() == 255 and loaded.images.min() == 0


def test_digits_at_8x8_are_the_sklearn_pixels_scaled_to_255() -> None:
    loaded = DigitsSource(image_size=8).load()
    expected = np.round(load_digits().images * 255 / 16).astype(np.uint8)
    assert np.array_equal(loaded.images[:, 0].numpy(), expected)


def test_digits_reject_a_non_positive_image_size() -> None:
    with pytest.raises(ValueError, match="image_size must be an integer >= 1, got 0"):
        DigitsSource(image_size=0)


# --- sprites --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mmap", [True, False])
def test_sprites_round_trip_exactly(sprites_root: Path, mmap: bool) -> None:
    loaded = SpritesSource(sprites_root, mmap=mmap).load()
    written_images = np.load(sprites_root / SPRITES_IMAGES_FILE)
    written_labels = np.load(sprites_root / SPRITES_LABELS_FILE)
    assert loaded.images.shape == (SPRITES_COUNT, 3, 16, 16)
    assert loaded.images.dtype == torch.uint8
    assert np.array_equal(loaded.images.permute(0, 2, 3, 1).numpy(), written_images)
    assert loaded.class_names == SPRITE_NAMES
    assert_one_hot(loaded.contexts, 5)
    assert np.array_equal(loaded.contexts.numpy(), written_labels.astype(np.float32))


@pytest.mark.parametrize("missing_file", [SPRITES_IMAGES_FILE, SPRITES_LABELS_FILE])
def test_missing_sprites_file_names_both_files_and_the_course(
    sprites_root: Path, missing_file: str
) -> None:
    (sprites_root / missing_file).unlink()
    with pytest.raises(FileNotFoundError) as error:
        SpritesSource(sprites_root).load()
    message = str(error.value)
    assert SPRITES_IMAGES_FILE in message and SPRITES_LABELS_FILE in message
    assert str(sprites_root) in message
    assert "How Diffusion Models Work" in message


@pytest.mark.parametrize(
    ("images", "accepted"),
    [
        (np.zeros((4, 16, 16), np.uint8), r"expected \(N, H, W, 3\)"),
        (np.zeros((4, 3, 16, 16), np.uint8), r"expected \(N, H, W, 3\)"),
        (np.zeros((4, 16, 16, 3), np.float32), "dtype float32; expected uint8"),
    ],
    ids=["3-d", "nchw", "float32"],
)
def test_sprites_reject_images_of_the_wrong_shape_or_dtype(
    sprites_root: Path, images: np.ndarray, accepted: str
) -> None:
    np.save(sprites_root / SPRITES_IMAGES_FILE, images)
    np.save(sprites_root / SPRITES_LABELS_FILE, np.eye(5)[np.arange(4) % 5])
    with pytest.raises(ValueError, match=accepted):
        SpritesSource(sprites_root).load()


def test_sprites_reject_labels_that_are_not_five_columns(sprites_root: Path) -> None:
    np.save(sprites_root / SPRITES_LABELS_FILE, np.eye(4)[np.arange(SPRITES_COUNT) % 4])
    with pytest.raises(ValueError, match=r"shape \(40, 4\); expected \(N, 5\)"):
        SpritesSource(sprites_root).load()


def test_sprites_reject_a_label_count_that_differs_from_the_image_count(
    sprites_root: Path,
) -> None:
    np.save(sprites_root / SPRITES_LABELS_FILE, np.eye(5)[np.arange(SPRITES_COUNT - 1) % 5])
    with pytest.raises(ValueError, match="39 label rows for 40 images"):
        SpritesSource(sprites_root).load()


@pytest.mark.parametrize("bad_row", [[1, 1, 0, 0, 0], [0.5, 0.5, 0, 0, 0], [0, 0, 0, 0, 0]])
def test_sprites_reject_labels_that_are_not_one_hot(sprites_root: Path, bad_row: list) -> None:
    labels = np.load(sprites_root / SPRITES_LABELS_FILE)
    labels[7] = bad_row
    np.save(sprites_root / SPRITES_LABELS_FILE, labels)
    with pytest.raises(ValueError, match=r"label row 7 is .*expected a one-hot row"):
        SpritesSource(sprites_root).load()


# --- CIFAR-10 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("train", "batches"), [(True, 5), (False, 1)])
def test_cifar10_reads_the_pickled_batches(cifar10_root: Path, train: bool, batches: int) -> None:
    loaded = CIFAR10Source(cifar10_root, train=train, verify_checksums=False).load()
    count = batches * CIFAR10_IMAGES_PER_BATCH
    assert loaded.images.shape == (count, 3, 32, 32)
    assert loaded.images.dtype == torch.uint8
    assert loaded.class_names == CIFAR10_LABEL_NAMES
    assert_one_hot(loaded.contexts, 10)
    # the fixture writes image j of a batch with label j % 10 and planes R = label, G = j, B = 255 - j
    index_in_batch = torch.arange(count) % CIFAR10_IMAGES_PER_BATCH
    labels = index_in_batch % 10
    assert torch.equal(loaded.contexts.argmax(dim=1), labels)
    assert torch.all(loaded.images[:, 0] == labels[:, None, None].to(torch.uint8))
    assert torch.all(loaded.images[:, 1] == index_in_batch[:, None, None].to(torch.uint8))
    assert torch.all(loaded.images[:, 2] == (255 - index_in_batch)[:, None, None].to(torch.uint8))


def test_cifar10_checks_md5s_by_default(cifar10_root: Path) -> None:
    with pytest.raises(ValueError, match="md5 of the official release.*verify_checksums=false"):
        CIFAR10Source(cifar10_root).load()


def test_missing_cifar10_says_where_it_looked_and_how_to_download(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        CIFAR10Source(tmp_path / "nowhere").load()
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in message
    assert "data.source.download=true" in message


def test_cifar10_names_a_single_missing_batch(cifar10_root: Path) -> None:
    (cifar10_root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match=r"\['test_batch'\] are missing"):
        CIFAR10Source(cifar10_root, verify_checksums=False).load()


# --- image folder ---------------------------------------------------------------------------------


def test_image_folder_loads_rgb_resized_with_class_names_from_subfolders(
    folder_root: Path,
) -> None:
    loaded = ImageFolderSource(folder_root, image_size=8, channels=3).load()
    assert loaded.images.shape == (5, 3, 8, 8)
    assert loaded.images.dtype == torch.uint8
    assert loaded.class_names == ["cat", "dog"]
    assert_one_hot(loaded.contexts, 2)
    assert loaded.contexts.argmax(dim=1).tolist() == [0, 0, 0, 1, 1]
    # each fixture image is one flat colour (200 k, 40 i, 255 - 200 k); resizing keeps it
    first_dog = loaded.images[3]
    assert torch.all(first_dog == torch.tensor([200, 0, 55], dtype=torch.uint8)[:, None, None])


def test_image_folder_converts_to_grey_for_one_channel(folder_root: Path) -> None:
    loaded = ImageFolderSource(folder_root, image_size=4, channels=1).load()
    assert loaded.images.shape == (5, 1, 4, 4)
    # PIL's L = (299 R + 587 G + 114 B) / 1000 for the first cat, colour (0, 0, 255)
    assert torch.all(loaded.images[0] == 29)


def test_image_folder_without_images_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="holds no images in class subfolders"):
        ImageFolderSource(tmp_path / "empty", image_size=8).load()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderSource(tmp_path / "missing", image_size=8).load()


def test_image_folder_rejects_two_channels(folder_root: Path) -> None:
    with pytest.raises(ValueError, match="channels must be 1 .* or 3 .*; got 2"):
        ImageFolderSource(folder_root, image_size=8, channels=2)


# --- the LoadedImages contract --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "contexts", "names", "message"),
    [
        (torch.zeros(2, 1, 4, 4), torch.zeros(2, 1), ["a"], "uint8"),
        (torch.zeros(2, 4, 4, dtype=torch.uint8), torch.zeros(2, 1), ["a"], "4-D"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, 1), ["a"], "3 rows but"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2), ["a"], "2-D"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, 2), ["a"], "K=2 columns"),
    ],
    ids=["float-images", "3-d-images", "row-count", "1-d-contexts", "k-vs-names"],
)
def test_loaded_images_validate_the_contract(
    images: torch.Tensor, contexts: torch.Tensor, names: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        LoadedImages(images, contexts, names)


# --- datamodule -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"image_size": 32}, "data.image_size=32 but the sprites source gives 16x16 images"),
        ({"channels": 1}, "data.channels=1 but the sprites source gives 3-channel images"),
        ({"num_classes": 10}, "data.num_classes=10 but the sprites source has 5 classes"),
    ],
)
def test_setup_rejects_data_that_differs_from_the_config(
    sprites_root: Path, overrides: dict, message: str
) -> None:
    datamodule = sprites_datamodule(sprites_root, **overrides)
    with pytest.raises(ValueError, match=message):
        datamodule.setup("fit")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size": 0}, r"data.batch_size must be an integer >= 1, got 0"),
        ({"batch_size": 2.5}, r"data.batch_size must be an integer >= 1, got 2.5"),
        ({"batch_size": True}, r"data.batch_size must be an integer >= 1, got True"),
        ({"val_fraction": 1.0}, r"data.val_fraction must be in \[0, 1\); got 1.0"),
        ({"val_fraction": -0.1}, r"data.val_fraction must be in \[0, 1\); got -0.1"),
        ({"num_workers": -1}, r"data.num_workers must be an integer >= 0, got -1"),
    ],
)
def test_datamodule_rejects_bad_arguments(
    sprites_root: Path, overrides: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sprites_datamodule(sprites_root, **overrides)


def test_class_names_are_known_after_setup(sprites_root: Path) -> None:
    datamodule = sprites_datamodule(sprites_root)
    with pytest.raises(RuntimeError, match="after setup"):
        _ = datamodule.class_names
    datamodule.setup("fit")
    assert datamodule.class_names == SPRITE_NAMES
    assert datamodule.num_classes == 5


def test_split_is_seeded_disjoint_and_complete(sprites_root: Path) -> None:
    def split(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return sprites_datamodule(sprites_root, seed=seed, val_fraction=0.25).split_indices(40)

    train, val = split(seed=0)
    assert len(train) == 30 and len(val) == 10
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(40))
    assert torch.equal(split(seed=0)[1], val)
    assert not torch.equal(split(seed=1)[1], val)


def test_setup_splits_the_images_by_the_seeded_indices(sprites_root: Path) -> None:
    datamodule = sprites_datamodule(sprites_root, val_fraction=0.05)
    datamodule.setup("fit")
    train_indices, val_indices = datamodule.split_indices(SPRITES_COUNT)
    all_images = SpritesSource(sprites_root).load().images
    assert len(datamodule.val_set) == 2 and len(datamodule.train_set) == 38
    assert torch.equal(datamodule.val_set.tensors[0], all_images[val_indices])
    assert torch.equal(datamodule.train_set.tensors[0], all_images[train_indices])


def test_zero_val_fraction_gives_no_validation_loader(sprites_root: Path) -> None:
    datamodule = sprites_datamodule(sprites_root, val_fraction=0.0)
    datamodule.setup("fit")
    assert len(datamodule.train_set) == SPRITES_COUNT
    assert datamodule.val_dataloader() == []


def test_after_transfer_images_are_float_in_minus_one_to_one(sprites_root: Path) -> None:
    datamodule = sprites_datamodule(sprites_root, hflip=True)
    images = torch.tensor([0, 255, 127, 128], dtype=torch.uint8).reshape(1, 1, 2, 2)
    contexts = torch.tensor([[0.0, 1.0, 0.0, 0.0, 0.0]])
    converted, same_contexts = datamodule.on_after_batch_transfer((images, contexts), 0)
    assert converted.dtype == torch.float32
    values = converted.flatten().tolist()
    assert values[:2] == [-1.0, 1.0]  # exactly
    assert values[2:] == pytest.approx([127 / 127.5 - 1, 128 / 127.5 - 1], abs=1e-7)
    assert same_contexts is contexts


@pytest.mark.parametrize("training", [True, False])
def test_hflip_flips_a_random_half_only_while_training(sprites_root: Path, training: bool) -> None:
    datamodule = sprites_datamodule(sprites_root, hflip=True)
    datamodule.trainer = SimpleNamespace(training=training)
    images = torch.randint(0, 256, (200, 3, 4, 4), dtype=torch.uint8)
    expected = images.float() / 127.5 - 1
    torch.manual_seed(0)
    converted, _ = datamodule.on_after_batch_transfer((images, torch.zeros(200, 5)), 0)
    unchanged = (converted == expected).flatten(1).all(dim=1)
    flipped = (converted == expected.flip(-1)).flatten(1).all(dim=1)
    assert torch.all(unchanged | flipped)
    if training:
        assert 60 < int((flipped & ~unchanged).sum()) < 140
    else:
        assert torch.all(unchanged)


class BatchRecorder(L.LightningModule):
    """Keeps every batch that reaches training_step / validation_step."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.train_batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.val_batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        self.train_batches.append(batch)
        return (self.weight - batch[0].mean()) ** 2

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.val_batches.append(batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_one_epoch(datamodule: DiffusionDataModule, root_dir: Path) -> BatchRecorder:
    recorder = BatchRecorder()
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root_dir,
    )
    trainer.fit(recorder, datamodule=datamodule)
    return recorder


@pytest.mark.parametrize("loader", ["index", "torch"])
def test_trainer_gets_float_batches_and_unflipped_validation(
    sprites_root: Path, tmp_path: Path, loader: str
) -> None:
    datamodule = sprites_datamodule(sprites_root, val_fraction=0.25, hflip=True, loader=loader)
    recorder = fit_one_epoch(datamodule, tmp_path)
    train_images = torch.cat([images for images, _ in recorder.train_batches])
    assert train_images.shape == (30, 3, 16, 16) and train_images.dtype == torch.float32
    assert train_images.min() >= -1 and train_images.max() <= 1
    val_images = torch.cat([images for images, _ in recorder.val_batches])
    expected_val = datamodule.val_set.tensors[0].float() / 127.5 - 1
    # the sanity check and the epoch's validation both see the unflipped val set, in order
    assert torch.equal(val_images[-len(expected_val) :], expected_val)


@pytest.mark.parametrize("loader", ["index", "torch"])
def test_trainer_runs_without_validation_when_val_fraction_is_zero(
    sprites_root: Path, tmp_path: Path, loader: str
) -> None:
    datamodule = sprites_datamodule(sprites_root, val_fraction=0.0, loader=loader)
    recorder = fit_one_epoch(datamodule, tmp_path)
    assert sum(len(images) for images, _ in recorder.train_batches) == SPRITES_COUNT
    assert recorder.val_batches == []


@pytest.mark.parametrize("loader", ["index", "torch"])
def test_drop_last_drops_the_short_training_batch_only(sprites_root: Path, loader: str) -> None:
    datamodule = sprites_datamodule(
        sprites_root, val_fraction=0.25, batch_size=8, drop_last=True, loader=loader
    )
    datamodule.setup("fit")
    assert [len(images) for images, _ in datamodule.train_dataloader()] == [8, 8, 8]  # of 30
    assert [len(images) for images, _ in datamodule.val_dataloader()] == [8, 2]


# --- conf/data/*.yaml -----------------------------------------------------------------------------


def compose_data_config(name: str, **source_overrides: object):
    """conf/data/<name>.yaml under `data:` in a parent with `seed: 0`, as the root config has."""
    config = OmegaConf.create({"seed": 0, "data": OmegaConf.load(DATA_CONFIG_DIR / f"{name}.yaml")})
    for key, value in source_overrides.items():
        OmegaConf.update(config, key, value)
    return config


@pytest.mark.parametrize(
    ("name", "source_type", "class_names"),
    [
        ("digits", DigitsSource, [str(digit) for digit in range(10)]),
        ("sprites", SpritesSource, SPRITE_NAMES),
        ("cifar10", CIFAR10Source, CIFAR10_LABEL_NAMES),
        ("folder", ImageFolderSource, ["cat", "dog"]),
    ],
)
def test_data_configs_instantiate_a_matching_datamodule(
    name: str,
    source_type: type,
    class_names: list[str],
    sprites_root: Path,
    cifar10_root: Path,
    folder_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPRITES_ROOT", str(sprites_root))  # the configs' default roots
    monkeypatch.setenv("CIFAR10_ROOT", str(cifar10_root))
    overrides = {
        "cifar10": {"data.source.verify_checksums": False},
        "folder": {"data.source.root": str(folder_root), "data.num_classes": 2},
    }.get(name, {})
    config = compose_data_config(name, **overrides)
    datamodule = instantiate(config.data)
    assert isinstance(datamodule, DiffusionDataModule)
    assert isinstance(datamodule.source, source_type)
    assert datamodule.seed == 0
    datamodule.setup("fit")
    assert datamodule.class_names == class_names
    images, contexts = next(iter(datamodule.train_dataloader()))
    assert images.dtype == torch.uint8
    expected_size = config.data.image_size
    assert images.shape[1:] == (config.data.channels, expected_size, expected_size)
    assert contexts.shape[1] == config.data.num_classes
