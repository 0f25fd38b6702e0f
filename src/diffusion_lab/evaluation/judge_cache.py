"""The judge, trained once per data set and split and kept on disk.

A cache entry is one file, ``<cache dir>/judge-<key>.pt``: a JSON header line, then the
``torch.save`` payload (the judge's state dict). The header holds the format, the key, the SHA-256
of the payload and the metadata (architecture, val accuracy, training seconds, what data it saw).

The key is the SHA-256 of everything that changes the judge:

- a digest of the data it is trained and checked on: the uint8 train and val images and their
  classes, byte for byte. This covers the data source and its options, the split seed, the val
  fraction, the image size and the channels at once (two configs that give the same images share
  a judge; a file that changed on disk under the same path gets a new one);
- the class names and their number, the judge's training options and seed;
- :data:`JUDGE_CODE_VERSION` (bump it when the judge's architecture or training changes) and the
  package version.

An entry whose header, key, checksum or weights do not check out is rebuilt, never trusted; writes
are atomic (a temporary file moved into place), so a killed job leaves no half-written entry.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from diffusion_lab import __version__
from diffusion_lab.evaluation.classifier import (
    ImageClassifier,
    check_training_options,
    train_classifier,
)
from diffusion_lab.evaluation.real_sets import LabelledImages
from diffusion_lab.utils.checks import require_int
from diffusion_lab.utils.io import atomic_write
from diffusion_lab.utils.progress import ProgressFactory, track
from diffusion_lab.utils.timing import timed

log = logging.getLogger(__name__)

JUDGE_CODE_VERSION = 1  # bump when ImageClassifier or train_classifier change what they produce
FILE_FORMAT = 1


@dataclass(frozen=True)
class JudgeOptions:
    """How the judge is trained: Adam with ``lr`` for ``epochs`` in batches of ``batch_size``;
    ``seed`` fixes its initial weights and batch order."""

    epochs: int = 8
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        check_training_options(self.epochs, self.batch_size, self.lr)
        require_int("the judge's seed", self.seed, minimum=0)


@dataclass
class Judge:
    """A trained judge: its val accuracy, the seconds its training took (when it was trained),
    whether this call trained it (False: loaded from the cache) and its cache file (or None)."""

    classifier: ImageClassifier
    accuracy: float
    seconds: float
    trained: bool
    path: Path | None


def data_digest(train: LabelledImages, val: LabelledImages) -> str:
    """SHA-256 over the train and val images (uint8 (N, C, H, W)) and classes (N,), with shapes."""
    digest = hashlib.sha256()
    for tensor in (*train, *val):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(memoryview(tensor.numpy()).cast("B"))
    return digest.hexdigest()


def judge_key(
    train: LabelledImages,
    val: LabelledImages,
    class_names: Sequence[str],
    options: JudgeOptions,
) -> tuple[str, dict[str, Any]]:
    """(key, the fields it hashes): the judge's identity, see the module docstring."""
    fields = {
        "judge_code_version": JUDGE_CODE_VERSION,
        "package_version": __version__,
        "data_digest": data_digest(train, val),
        "class_names": list(class_names),
        "options": asdict(options),
    }
    encoded = json.dumps(fields, sort_keys=True).encode()
    return hashlib.sha256(encoded).hexdigest()[:32], fields


def _architecture(classifier: ImageClassifier) -> dict[str, int]:
    first_conv = classifier.body[0][0]
    return {
        "in_channels": classifier.in_channels,
        "num_classes": classifier.num_classes,
        "height": classifier.height,
        "width": first_conv.out_channels,
        "feature_dim": classifier.feature_dim,
    }


def save_judge(path: Path, key: str, judge: Judge, metadata: Mapping[str, Any]) -> None:
    """Write the entry atomically: header line (format, key, payload SHA-256, metadata) + payload."""
    payload = io.BytesIO()
    state = {name: value.detach().cpu() for name, value in judge.classifier.state_dict().items()}
    torch.save(state, payload)
    data = payload.getvalue()
    header = {
        "format": FILE_FORMAT,
        "key": key,
        "sha256": hashlib.sha256(data).hexdigest(),
        "architecture": _architecture(judge.classifier),
        "accuracy": judge.accuracy,
        "seconds": judge.seconds,
        "metadata": dict(metadata),
    }
    with atomic_write(path) as stream:
        stream.write(json.dumps(header, sort_keys=True, default=str).encode() + b"\n" + data)


def load_judge(path: Path, key: str, device: torch.device) -> Judge:
    """The entry at ``path`` on ``device``; ValueError (saying what is wrong) unless its format,
    key and checksum match and the weights load into the architecture it names."""
    raw = path.read_bytes()
    header_line, separator, payload = raw.partition(b"\n")
    if not separator:
        raise ValueError("no header line")
    try:
        header = json.loads(header_line)
    except json.JSONDecodeError as error:
        raise ValueError(f"unreadable header ({error})") from None
    if not isinstance(header, dict) or header.get("format") != FILE_FORMAT:
        raise ValueError(f"format {header.get('format') if isinstance(header, dict) else None}")
    if header.get("key") != key:
        raise ValueError(f"key {header.get('key')!r} instead of {key!r}")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise ValueError("checksum mismatch: the weights changed after they were written")
    state = torch.load(io.BytesIO(payload), map_location=device, weights_only=True)
    classifier = ImageClassifier(**header["architecture"]).to(device)
    classifier.load_state_dict(state, strict=True)
    classifier.eval().requires_grad_(False)
    return Judge(classifier, float(header["accuracy"]), float(header["seconds"]), False, path)


def get_judge(
    train: LabelledImages,
    val: LabelledImages,
    class_names: Sequence[str],
    options: JudgeOptions,
    cache_dir: str | Path | None,
    device: torch.device | str = "cpu",
    metadata: Mapping[str, Any] | None = None,
    progress: ProgressFactory = track,
) -> Judge:
    """The judge for these splits and options: from ``cache_dir`` when a valid entry is there,
    else trained (``train_classifier`` on ``train``, accuracy on ``val``) and stored there.

    ``train`` and ``val`` are (uint8 images (N, C, H, W), classes (N,)); ``metadata`` (e.g. the
    data config) is written into a new entry's header for people reading the cache; ``cache_dir``
    None trains every time. ``progress(label)`` shows the training's epochs.
    """
    device = torch.device(device)
    key, fields = judge_key(train, val, class_names, options)
    path = Path(cache_dir).expanduser() / f"judge-{key}.pt" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            judge = load_judge(path, key, device)
        except Exception as error:  # a cache entry is never trusted: anything odd means rebuild
            log.warning("judge cache entry %s is unusable (%s); training a new judge", path, error)
        else:
            log.info("judge from the cache: %s (val accuracy %.3f)", path, judge.accuracy)
            return judge
    with progress(f"judge ({options.epochs} epochs)") as bar:
        (classifier, accuracy), seconds = timed(
            lambda: train_classifier(
                *train,
                *val,
                epochs=options.epochs,
                batch_size=options.batch_size,
                lr=options.lr,
                seed=options.seed,
                device=device,
                num_classes=len(class_names),
                on_epoch=bar.on_epoch,
            ),
            device,
        )
    judge = Judge(classifier, accuracy, seconds, True, path)
    log.info(
        "judge trained: val accuracy %.3f on %d real images (%.1f s)",
        accuracy,
        len(val[0]),
        seconds,
    )
    if path is not None:
        save_judge(path, key, judge, {**fields, **(metadata or {})})
        log.info("judge cached in %s", path)
    return judge
