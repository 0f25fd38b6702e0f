"""IndexLoader: every image once per epoch in a seeded order, disjoint shards under DDP, and a
mid-epoch resume (alone and through Lightning's checkpoints) that continues at the next batch."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import SPRITES_COUNT
from lightning.pytorch.callbacks import ModelCheckpoint

from diffusion_lab.data import DiffusionDataModule, IndexLoader, SpritesSource


def served(loader: IndexLoader) -> list[torch.Tensor]:
    """The first tensor of every batch of one pass."""
    return [batch[0] for batch in loader]


def ids_loader(count: int = 23, batch_size: int = 5, **options) -> IndexLoader:
    """A loader over the ids 0..count-1 (and their doubles), so a batch names its images."""
    ids = torch.arange(count)
    return IndexLoader([ids, 2 * ids], batch_size, **({"shuffle": True} | options))


def test_each_epoch_serves_every_image_once_in_batches_of_the_batch_size() -> None:
    loader = ids_loader(count=23, batch_size=5)
    assert len(loader) == 5
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        batches = list(loader)
        assert [len(ids) for ids, _ in batches] == [5, 5, 5, 5, 3]
        order = torch.cat([ids for ids, _ in batches])
        assert torch.equal(order.sort().values, torch.arange(23))
        assert all(torch.equal(doubles, 2 * ids) for ids, doubles in batches)  # rows stay paired


def test_drop_last_drops_the_short_batch() -> None:
    loader = ids_loader(count=23, batch_size=5, drop_last=True)
    assert len(loader) == 4
    assert [len(ids) for ids in served(loader)] == [5, 5, 5, 5]


def test_the_order_is_seeded_per_epoch_and_independent_of_the_global_rng() -> None:
    def order(seed: int, epoch: int) -> torch.Tensor:
        loader = ids_loader(count=50, seed=seed)
        loader.sampler.set_epoch(epoch)
        torch.manual_seed(seed * 100 + epoch + 7)  # any global RNG state: it must not matter
        return torch.cat(served(loader))

    first = order(seed=0, epoch=0)
    assert torch.equal(order(seed=0, epoch=0), first)
    assert not torch.equal(first, torch.arange(50))
    assert not torch.equal(order(seed=0, epoch=1), first)
    assert not torch.equal(order(seed=1, epoch=0), first)
    assert not torch.equal(order(seed=0, epoch=1), order(seed=1, epoch=0))  # not seed + epoch


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize(("count", "batch_size"), [(23, 4), (21, 5), (40, 5), (7, 3)])
def test_the_ranks_share_each_epoch_once_in_as_many_batches(shuffle, count, batch_size) -> None:
    """Disjoint shards covering the set once (no padding), the same number of batches on every
    rank, sizes within one of each other; (21, 5) on 4 ranks joins the lone last index to the
    global batch before it, so no rank gets an empty batch."""
    for world_size in (1, 2, 3, 4):
        loaders = [
            ids_loader(count, batch_size, shuffle=shuffle, rank=rank, world_size=world_size)
            for rank in range(world_size)
        ]
        shards = [served(loader) for loader in loaders]
        assert len({len(batches) for batches in shards}) == 1, world_size
        assert all(len(loader) == len(shards[0]) for loader in loaders)
        every = torch.cat([torch.cat(batches) for batches in shards])
        assert torch.equal(every.sort().values, torch.arange(count)), world_size
        for step in zip(*shards):
            sizes = [len(ids) for ids in step]
            assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1, (world_size, sizes)
        for rank, loader in enumerate(loaders):  # batch_indices names what each batch holds
            for number, ids in enumerate(shards[rank]):
                assert torch.equal(loader.batch_indices(number), ids)


def test_one_rank_cuts_the_order_into_plain_batches() -> None:
    loader = ids_loader(count=23, batch_size=5)
    generator = torch.Generator().manual_seed(0)
    from diffusion_lab.data.index_loader import epoch_seed

    generator.manual_seed(epoch_seed(0, 0))
    order = torch.randperm(23, generator=generator)
    assert all(map(torch.equal, served(loader), order.split(5)))


def test_fewer_images_than_ranks_are_refused() -> None:
    with pytest.raises(ValueError, match="3 images cannot be shared among 4 ranks"):
        ids_loader(count=3, rank=0, world_size=4)


@pytest.mark.parametrize("served_before", [0, 2, 5])
def test_a_loaded_state_continues_with_the_next_batch(served_before: int) -> None:
    loader = ids_loader(count=23, batch_size=5, seed=3)
    loader.sampler.set_epoch(4)
    iterator = iter(loader)
    head = [next(iterator)[0] for _ in range(served_before)]
    state = loader.state_dict()
    assert (state["epoch"], state["position"]) == (4, served_before)
    tail = [ids for ids, _ in iterator]

    restored = ids_loader(count=23, batch_size=5, seed=3)
    restored.load_state_dict(state)
    resumed = served(restored)
    assert len(resumed) == len(tail) and all(map(torch.equal, resumed, tail))
    assert len(head) + len(resumed) == len(loader)
    restored.sampler.set_epoch(5)  # the epoch after it starts from its first batch
    assert len(served(restored)) == len(loader)


def test_a_state_for_other_data_or_batch_size_is_refused() -> None:
    state = ids_loader(count=23, batch_size=5).state_dict()
    with pytest.raises(ValueError, match=r"batch_size 5 \(now 4\)"):
        ids_loader(count=23, batch_size=4).load_state_dict(state)
    with pytest.raises(ValueError, match=r"num_samples 23 \(now 24\)"):
        ids_loader(count=24, batch_size=5).load_state_dict(state)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="same first dimension"):
        IndexLoader([torch.zeros(3), torch.zeros(4)], 2, shuffle=True)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        IndexLoader([torch.zeros(3)], 0, shuffle=True)
    with pytest.raises(ValueError, match="rank 2 of 2"):
        IndexLoader([torch.zeros(3)], 1, shuffle=True, rank=2, world_size=2)


# --- through the datamodule and Lightning ---------------------------------------------------------


def datamodule(root: Path, **overrides) -> DiffusionDataModule:
    arguments = dict(channels=3, image_size=16, num_classes=5, batch_size=8) | overrides
    return DiffusionDataModule(SpritesSource(root), **arguments)


def test_datamodule_serves_its_training_set_once_per_epoch(sprites_root: Path) -> None:
    data = datamodule(sprites_root)
    data.setup("fit")
    loader = data.train_dataloader()
    assert isinstance(loader, IndexLoader)
    images = torch.cat(served(loader))
    train_images = data.train_set.tensors[0]
    assert images.dtype == torch.uint8 and images.shape == train_images.shape
    # the same multiset of images: sort both by their bytes
    assert sorted(map(bytes, images.flatten(1).numpy())) == sorted(
        map(bytes, train_images.flatten(1).numpy())
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"loader": "fast"}, r"data.loader must be one of index, torch; got 'fast'"),
        ({"num_workers": 2}, r"data.num_workers=2 .* apply to data.loader=torch only"),
        ({"pin_memory": True}, r"data.pin_memory=True apply to data.loader=torch only"),
    ],
)
def test_datamodule_rejects_loader_options_that_do_not_fit(
    sprites_root: Path, overrides: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        datamodule(sprites_root, **overrides)


class StepRecorder(L.LightningModule):
    """Records the images of every training batch; a single weight keeps checkpoints tiny."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.batches: list[torch.Tensor] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        self.batches.append(batch[0])
        return (self.weight - batch[0].mean()) ** 2

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        pass

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(root: Path, run_dir: Path, ckpt_path: Path | None = None) -> StepRecorder:
    """Two epochs of 5 batches (38 training images, batch 8), a checkpoint after every step
    (stepNN.ckpt, saved at the batch's end) and after every epoch (epochN.ckpt, saved after its
    validation)."""
    recorder = StepRecorder()
    every_step = ModelCheckpoint(
        dirpath=run_dir,
        filename="step{step:02d}",
        every_n_train_steps=1,
        save_top_k=-1,
        auto_insert_metric_name=False,
    )
    every_epoch = ModelCheckpoint(
        dirpath=run_dir, filename="epoch{epoch}", save_top_k=-1, auto_insert_metric_name=False
    )
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=[every_step, every_epoch],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=run_dir,
    )
    trainer.fit(recorder, datamodule=datamodule(root, val_fraction=0.05), ckpt_path=ckpt_path)
    return recorder


@pytest.mark.parametrize(
    ("checkpoint", "step"),
    [("step02", 2), ("step05", 5), ("epoch0", 5), ("step07", 7)],
    ids=["mid-epoch-0", "last-batch-of-epoch-0", "after-validation-of-epoch-0", "mid-epoch-1"],
)
def test_lightning_resume_continues_at_the_next_batch(
    sprites_root: Path, tmp_path: Path, checkpoint: str, step: int
) -> None:
    assert SPRITES_COUNT == 40  # 38 training images: batches of 8, 8, 8, 8, 6 per epoch
    whole = fit(sprites_root, tmp_path / "whole").batches
    assert len(whole) == 10
    assert not torch.equal(torch.cat(whole[:5]), torch.cat(whole[5:]))  # epochs differ in order
    resumed = fit(sprites_root, tmp_path / "resumed", tmp_path / "whole" / f"{checkpoint}.ckpt")
    assert len(resumed.batches) == len(whole) - step
    assert all(map(torch.equal, resumed.batches, whole[step:]))
