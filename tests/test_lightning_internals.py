"""Canary: every Lightning internal that callbacks/_lightning.py touches still exists with the shape
it uses, on a real Trainer during and after a tiny fit. A Lightning upgrade that renames or
reshapes one fails here, naming the attribute, instead of breaking exact resume silently."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.fabric.plugins.environments import ClusterEnvironment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from test_fast_paths import quiet_trainer
from test_lit_module import make_module
from torch.utils.data import DataLoader, TensorDataset

from diffusion_lab.callbacks import _lightning
from diffusion_lab.runs.loggers import ContinuingCSVLogger


def internal(root: Any, path: str) -> Any:
    """``root.<path>``, or a failure that names the first missing attribute of the path."""
    value = root
    for depth, name in enumerate(path.split(".")):
        if not hasattr(value, name):
            seen = ".".join(path.split(".")[:depth]) or type(root).__name__
            pytest.fail(
                f"Lightning {L.__version__}: {type(root).__name__}.{path} is gone ({seen} has no "
                f"{name!r}); update src/diffusion_lab/callbacks/_lightning.py"
            )
        value = getattr(value, name)
    return value


def takes(function: Any, path: str, *parameters: str, required: int = 0) -> None:
    """``function`` is callable, takes ``parameters`` and needs exactly ``required`` arguments."""
    assert callable(function), f"{path} is no longer callable"
    signature = inspect.signature(function)
    for name in parameters:
        assert name in signature.parameters, f"{path}{signature} no longer takes {name!r}"
    needed = [
        p
        for p in signature.parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    assert len(needed) == required, f"{path}{signature}: {required} required arguments expected"


class Probe(L.Callback):
    """Looks at the internals where _lightning.py uses them: after a batch and at epoch end."""

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, index) -> None:
        if index != 0:
            return
        connector = internal(trainer, "_logger_connector")
        takes(internal(connector, "on_batch_end"), "trainer._logger_connector.on_batch_end")
        takes(
            internal(connector, "update_train_step_metrics"),
            "trainer._logger_connector.update_train_step_metrics",
        )
        results = internal(trainer, "fit_loop.epoch_loop._results")
        metrics = list(results.values())
        assert metrics, "fit_loop.epoch_loop._results holds no accumulator after a logged batch"
        for metric in metrics:
            for field in ("on_epoch", "is_mean_reduction", "prog_bar", "name"):
                internal(metric, f"meta.{field}")
            takes(
                internal(metric, "meta.forked_name"), "_Metadata.forked_name", "on_step", required=1
            )
            internal(metric, "is_tensor")
            for field in _lightning.RESULT_SUMS:
                assert torch.is_tensor(internal(metric, field)), (
                    f"_ResultMetric.{field} is no tensor"
                )
        self.seen["names"] = {_lightning.epoch_name(m) for m in metrics}
        self.seen["done_mid_epoch"] = _lightning.epoch_done(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        progress = internal(trainer, "fit_loop.epoch_progress")
        for path in ("total.processed", "total.completed", "current.processed"):
            assert isinstance(internal(progress, path), int), f"epoch_progress.{path} is no int"
        stepped = internal(trainer, "fit_loop.epoch_loop._batches_that_stepped")
        assert isinstance(stepped, int), "epoch_loop._batches_that_stepped is no int"
        before = (progress.total.processed, progress.current.processed, stepped)
        with _lightning.before_epoch_marked_processed(trainer):
            loop = trainer.fit_loop.epoch_loop
            inside = (
                progress.total.processed,
                progress.current.processed,
                loop._batches_that_stepped,
            )
            checkpoint = _lightning.dump_checkpoint(trainer)
        after = (*before[:2], trainer.fit_loop.epoch_loop._batches_that_stepped)
        self.seen.update(before=before, inside=inside, after=after, checkpoint=checkpoint)
        self.seen["done_at_end"] = _lightning.epoch_done(trainer)
        self.seen["completed"] = progress.total.completed


@pytest.fixture(scope="module")
def fitted() -> tuple[L.Trainer, Probe]:
    torch.manual_seed(0)
    probe = Probe()
    trainer = quiet_trainer(max_epochs=1, callbacks=[probe])
    images = torch.rand(24, 1, 8, 8) * 2 - 1
    contexts = torch.eye(3)[torch.arange(24) % 3]
    trainer.fit(make_module(), DataLoader(TensorDataset(images, contexts), batch_size=8))
    return trainer, probe


def test_the_cluster_environment_is_on_the_accelerator_connector(fitted) -> None:
    trainer, _ = fitted
    environment = internal(trainer, "_accelerator_connector.cluster_environment")
    assert isinstance(environment, ClusterEnvironment)
    assert _lightning.cluster_environment(trainer) is environment


def test_the_epochs_accumulators_have_the_fields_resume_state_saves(fitted) -> None:
    _, probe = fitted
    assert "train/loss_epoch" in probe.seen["names"]  # logged on_step and on_epoch: forked
    assert probe.seen["done_mid_epoch"] is False and probe.seen["done_at_end"] is True


def test_the_epoch_end_counters_step_back_by_one_batch_and_are_restored(fitted) -> None:
    _, probe = fitted
    (processed, current, stepped) = probe.seen["before"]
    assert processed == probe.seen["completed"] + 1  # on_train_epoch_end: processed, not completed
    assert probe.seen["inside"] == (processed - 1, current - 1, stepped - 1)
    assert probe.seen["after"] == probe.seen["before"]


def test_dump_checkpoint_takes_weights_only_and_gives_the_full_state(fitted) -> None:
    trainer, probe = fitted
    dump = internal(trainer, "_checkpoint_connector.dump_checkpoint")
    takes(dump, "trainer._checkpoint_connector.dump_checkpoint", "weights_only")
    checkpoint = probe.seen["checkpoint"]
    for key in ("state_dict", "loops", "optimizer_states", "callbacks", "global_step"):
        assert key in checkpoint, f"dump_checkpoint(weights_only=False) has no {key!r}"
    epoch_progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]["total"]
    assert epoch_progress["processed"] == probe.seen["inside"][0]  # dumped with the shift


def test_the_csv_writer_checks_its_folder_in_a_private_hook_we_override(tmp_path: Path) -> None:
    hook = internal(ExperimentWriter, "_check_log_dir_exists")
    takes(hook, "ExperimentWriter._check_log_dir_exists", "self", required=1)
    (tmp_path / "metrics.csv").write_text("epoch,step,train/loss\n0,0,1.5\n")
    writer = _lightning.ContinuingExperimentWriter(log_dir=str(tmp_path))
    internal(writer, "_fs")
    assert writer.metrics_keys == ["epoch", "step", "train/loss"]
    assert (tmp_path / "metrics.csv").read_text().startswith("epoch,step,train/loss\n0,0,1.5")


def test_the_csv_logger_builds_its_writer_into_private_fields(tmp_path: Path) -> None:
    for name in ("_experiment", "_fs", "root_dir", "log_dir"):
        internal(CSVLogger(str(tmp_path)), name)
    logger = ContinuingCSVLogger(str(tmp_path), name="csv", version="")
    assert isinstance(logger.experiment, _lightning.ContinuingExperimentWriter)
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.save()
    again = ContinuingCSVLogger(str(tmp_path), name="csv", version="")
    again.log_metrics({"train/loss": 0.5}, step=1)
    again.save()
    rows = (Path(again.log_dir) / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].split(",") == ["step", "train/loss"], rows
