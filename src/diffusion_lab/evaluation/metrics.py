"""Class accuracy, FID and KID, all measured by the judge (an :class:`ImageClassifier`).

FID and KID are torchmetrics' ``FrechetInceptionDistance`` and ``KernelInceptionDistance`` with
``feature=`` a module returning the judge's penultimate features (N, d) instead of Inception's:
there is nothing to download, and the numbers are comparable only between runs that use the same
judge (same data, seed and settings), never with published Inception FIDs. With
``features="inception"`` they use Inception-v3's pool features instead (evaluation/inception.py).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from diffusion_lab.evaluation.classifier import ImageClassifier, predict
from diffusion_lab.utils.checks import InputError, require_int

KID_SUBSETS = 100  # torchmetrics' default number of random subsets KID averages over
FEATURE_BATCH = 512
FEATURES = ("judge", "inception")  # whose features FID and KID are computed on


def feature_extractor(features: str) -> nn.Module | None:
    """None for the judge's features (built from the classifier where scored), or the Inception
    extractor; an unknown name is refused."""
    if features not in FEATURES:
        raise ValueError(f"unknown features {features!r}; accepted: {', '.join(FEATURES)}")
    if features == "judge":
        return None
    from diffusion_lab.evaluation.inception import InceptionFeatures  # loads 87 MB: on demand

    return InceptionFeatures()


class ClassifierFeatures(nn.Module):
    """The judge's penultimate features as torchmetrics wants a custom feature extractor.

    torchmetrics passes the images to a custom module untouched (its ``normalize`` flag only
    rescales images for its own Inception, and picks the dtype of the probe below), so this takes
    float images in [-1, 1] and the metrics are built without ``normalize``. It has a
    ``num_features`` attribute, so ``FrechetInceptionDistance`` sizes its statistics from it
    instead of probing the module with a dummy 299x299 image. Features come out in float64: FID's
    sums and KID's polynomial kernel are then computed in double precision.
    """

    def __init__(self, classifier: ImageClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [-1, 1] -> (N, d) float64."""
        with torch.no_grad():
            return self.classifier.features(images).double()


class GivenFeatures(nn.Module):
    """Features computed beforehand, handed to torchmetrics' FID and KID as their "images": each
    image then goes through the (possibly expensive: Inception) extractor once, not once per metric."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _check_images(name: str, images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        found = (
            f"{images.dtype} {tuple(images.shape)}"
            if isinstance(images, torch.Tensor)
            else type(images).__name__
        )
        raise ValueError(f"{name} must be float images (N, C, H, W) in [-1, 1], got {found}")


def class_accuracy(
    classifier: ImageClassifier, images: torch.Tensor, labels: torch.Tensor
) -> float:
    """Share of images (N, C, H, W) in [-1, 1] that the classifier puts in their class (N,):
    (1 / N) sum_i [argmax_k logits_ik = y_i]."""
    _check_images("images", images)
    if labels.shape != (len(images),):
        raise ValueError(
            f"labels must be ({len(images)},), one per image, got shape {tuple(labels.shape)}"
        )
    if len(images) == 0:
        raise ValueError("class_accuracy needs at least one image")
    return (predict(classifier, images) == labels.cpu()).double().mean().item()


def check_kid_subset_size(subset_size: int, num_real: int, num_fake: int) -> None:
    """KID draws subsets of ``subset_size`` images from each side: it needs 2 <= it <= both sizes."""
    require_int("kid_subset_size", subset_size, minimum=2)
    if subset_size > min(num_real, num_fake):
        raise InputError(
            f"kid_subset_size={subset_size} is larger than the sets it samples from: "
            f"{num_real} real images and {num_fake} generated images; "
            f"use a kid_subset_size <= {min(num_real, num_fake)} or more images"
        )


def feature_distances(
    classifier: ImageClassifier,
    real_images: torch.Tensor,
    fake_images: torch.Tensor,
    kid_subset_size: int = 100,
    seed: int = 0,
    features: nn.Module | None = None,
) -> dict[str, float]:
    """FID and KID between real (N_r, C, H, W) and generated (N_f, C, H, W) images in [-1, 1],
    on the judge's penultimate features f (d-dimensional), or on ``features`` (a module with
    ``num_features``, e.g. :class:`~diffusion_lab.evaluation.inception.InceptionFeatures`).

    FID (Heusel et al. 2017) between Gaussians fitted to the two feature sets (means mu, sample
    covariances Sigma):

        FID = ||mu_r - mu_f||^2 + Tr(Sigma_r + Sigma_f - 2 (Sigma_r Sigma_f)^(1/2))

    KID (Binkowski et al. 2018): the unbiased squared MMD with the cubic kernel
    k(x, y) = (x.y / d + 1)^3, averaged over 100 random pairs of subsets of ``kid_subset_size``
    images from each side (mean and standard deviation over the subsets):

        MMD^2 = 1/(m(m-1)) sum_{i!=j} [k(r_i, r_j) + k(f_i, f_j)] - 2/m^2 sum_{i,j} k(r_i, f_j)

    FID is biased upwards for small sets (it is not 0 between two samples of one distribution);
    KID is unbiased, so it can be slightly negative. ``seed`` fixes KID's subsets.

    Returns {"fid", "kid_mean", "kid_std"}.
    """
    _check_images("real_images", real_images)
    _check_images("fake_images", fake_images)
    if real_images.shape[1:] != fake_images.shape[1:]:
        raise ValueError(
            f"real images {tuple(real_images.shape[1:])} and generated images "
            f"{tuple(fake_images.shape[1:])} must have the same (C, H, W)"
        )
    check_kid_subset_size(kid_subset_size, len(real_images), len(fake_images))

    device = _device(classifier)
    features = (ClassifierFeatures(classifier) if features is None else features).to(device)
    # sync_on_compute off: under DDP only rank zero scores (the quality callback), and a metric
    # that gathers from every rank would wait forever for the others
    given = GivenFeatures(features.num_features)
    fid = FrechetInceptionDistance(feature=given, sync_on_compute=False).to(device)
    with warnings.catch_warnings():  # "will save all extracted features": a few thousand d-vectors
        warnings.filterwarnings("ignore", message=".*save all extracted features.*")
        kid = KernelInceptionDistance(
            feature=given,
            subsets=KID_SUBSETS,
            subset_size=kid_subset_size,
            sync_on_compute=False,
        ).to(device)
    was_training = classifier.training
    classifier.eval()
    try:
        for images, real in ((real_images, True), (fake_images, False)):
            for batch in images.split(FEATURE_BATCH):
                batch_features = features(batch.to(device=device, dtype=torch.float32))
                fid.update(batch_features, real=real)
                kid.update(batch_features, real=real)
        fid_value = fid.compute().item()
        with torch.random.fork_rng(devices=[]):  # KID's subsets come from the global CPU RNG
            torch.manual_seed(seed)
            kid_mean, kid_std = kid.compute()
    finally:
        classifier.train(was_training)
    return {"fid": fid_value, "kid_mean": kid_mean.item(), "kid_std": kid_std.item()}
