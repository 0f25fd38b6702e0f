"""The judge: a small CNN classifier, trained here on the real images, whose penultimate features
stand in for Inception's in FID and KID (no weights are downloaded).

Its held-out accuracy on real images is what it is worth as a judge: a classifier that only gets
70% of real digits right cannot say whether a generated digit is the right one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from diffusion_lab.utils.checks import require_int, require_number

MIN_HEIGHT = 8  # after two 2x2 max-pools the last block's BatchNorm still sees 2x2 values per image
# called after every training epoch with (epoch from 1, epochs in all, the epoch's mean loss)
EpochCallback = Callable[[int, int, float], None]


def uint8_to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in 0..255 -> float32 in [-1, 1] (x / 127.5 - 1), as the diffusion model sees them."""
    return images.to(torch.float32) / 127.5 - 1.0


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Conv3x3 -> BatchNorm -> ReLU, twice; spatial size kept."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ImageClassifier(nn.Module):
    """A three-block CNN: images (N, C, H, W) in [-1, 1] -> class logits (N, K).

    blocks of `width`, 2 `width` and 4 `width` channels, a 2x2 max-pool after each of the first two
    (H -> H/2 -> H/4), a global average pool, then the penultimate feature layer
    f = ReLU(W_f pooled + b_f) of `feature_dim` units, and the linear head logits = W_h f + b_h.

    Args:
        in_channels: C of the images.
        num_classes: K.
        height: H = W of the images (at least 8); inputs of another size are refused.
        width: channels of the first block.
        feature_dim: d, the width of the penultimate layer that FID and KID compare.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        height: int,
        width: int = 32,
        feature_dim: int = 64,
    ) -> None:
        super().__init__()
        for name, value, minimum in (
            ("in_channels", in_channels, 1),
            ("num_classes", num_classes, 2),
            ("height", height, MIN_HEIGHT),
            ("width", width, 1),
            ("feature_dim", feature_dim, 1),
        ):
            require_int(f"ImageClassifier {name}", value, minimum=minimum)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.height = height
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            _conv_block(in_channels, width),
            nn.MaxPool2d(2),
            _conv_block(width, 2 * width),
            nn.MaxPool2d(2),
            _conv_block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * width, feature_dim),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def _check(self, images: torch.Tensor) -> None:
        expected = (self.in_channels, self.height, self.height)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"the classifier takes images (N, {', '.join(map(str, expected))}), "
                f"got shape {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise ValueError(f"the classifier takes float images in [-1, 1], got {images.dtype}")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, d) of images (N, C, H, W) in [-1, 1]."""
        self._check(images)
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (N, K) of images (N, C, H, W) in [-1, 1]."""
        return self.head(self.features(images))


@torch.no_grad()
def predict(
    classifier: ImageClassifier, images: torch.Tensor, batch_size: int = 512
) -> torch.Tensor:
    """Predicted classes (N,) of float images (N, C, H, W) in [-1, 1], in batches, in eval mode."""
    device = next(classifier.parameters()).device
    was_training = classifier.training
    classifier.eval()
    try:
        return torch.cat(
            [classifier(batch.to(device)).argmax(dim=1).cpu() for batch in images.split(batch_size)]
        )
    finally:
        classifier.train(was_training)


def check_training_options(epochs: int, batch_size: int, lr: float) -> None:
    """epochs and batch_size ints >= 1, lr a finite number > 0."""
    require_int("classifier.epochs", epochs, minimum=1)
    require_int("classifier.batch_size", batch_size, minimum=1)
    require_number("classifier.lr", lr, minimum=0, above=True)


def _check_split(
    name: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int | None
) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"{name} images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if len(images) == 0:
        raise ValueError(f"{name} images are empty; the classifier needs at least one")
    if labels.shape != (len(images),) or labels.dtype != torch.long:
        raise ValueError(
            f"{name} labels must be int64 ({len(images)},), got {labels.dtype} {tuple(labels.shape)}"
        )
    top = (num_classes if num_classes is not None else math.inf) - 1
    if labels.min() < 0 or labels.max() > top:
        raise ValueError(
            f"{name} labels must be in 0..{top}, got {labels.min().item()}..{labels.max().item()}"
        )


@torch.no_grad()
def _recalibrate_batch_norm(
    classifier: ImageClassifier, inputs: torch.Tensor, batch_size: int, device: torch.device
) -> None:
    """Recompute BatchNorm's running statistics for the final weights: one pass over the training
    images, averaging the batch statistics with equal weights (momentum None).

    During training the running means trail the changing weights (momentum 0.1); after a short
    training they are far off, and eval-mode accuracy collapses (to chance after one digits epoch).
    """
    for module in classifier.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    classifier.train()
    for batch in inputs.split(batch_size):
        classifier(batch.to(device))


def train_classifier(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    epochs: int = 8,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    num_classes: int | None = None,
    on_epoch: EpochCallback | None = None,
) -> tuple[ImageClassifier, float]:
    """Train an :class:`ImageClassifier` with Adam on cross-entropy; return it (eval mode, on
    ``device``) and its accuracy on the held-out (val) images.

    Images are uint8 (N, C, H, W) with H = W, converted to [-1, 1]; labels are int64 (N,) in
    0..K-1, K = ``num_classes`` (default: the largest label + 1 over both splits). ``seed`` fixes
    the initial weights and the batch order: on the CPU a seed always gives the same classifier.
    ``on_epoch(epoch, epochs, mean loss)`` is called after every epoch (progress displays).
    """
    check_training_options(epochs, batch_size, lr)
    _check_split("train", train_images, train_labels, num_classes)
    _check_split("val", val_images, val_labels, num_classes)
    if num_classes is None:
        num_classes = int(max(train_labels.max(), val_labels.max())) + 1
    if train_images.shape[1:] != val_images.shape[1:]:
        raise ValueError(
            f"train images {tuple(train_images.shape[1:])} and val images "
            f"{tuple(val_images.shape[1:])} must have the same (C, H, W)"
        )
    channels, height, width = train_images.shape[1:]
    if height != width:
        raise ValueError(f"the classifier takes square images, got {height}x{width}")

    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = ImageClassifier(channels, num_classes, height).to(device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    inputs = uint8_to_unit_range(train_images)
    classifier.train()
    for epoch in range(1, epochs + 1):
        total_loss = torch.zeros((), device=device)
        for indices in torch.randperm(len(inputs), generator=order).split(batch_size):
            logits = classifier(inputs[indices].to(device))
            loss = F.cross_entropy(logits, train_labels[indices].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.detach() * len(indices)
        if on_epoch is not None:
            on_epoch(epoch, epochs, total_loss.item() / len(inputs))
    _recalibrate_batch_norm(classifier, inputs, batch_size, device)
    classifier.eval().requires_grad_(False)
    predicted = predict(classifier, uint8_to_unit_range(val_images))
    return classifier, (predicted == val_labels).double().mean().item()
