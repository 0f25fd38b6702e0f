"""Evaluation: a judge classifier trained here on real images, class accuracy, FID and KID on its
features, and the steps-vs-quality study of DDPM and DDIM samplers.

Pure torch (+ torchmetrics): no Lightning or Hydra, nothing downloaded.
"""

from __future__ import annotations

from diffusion_lab.evaluation.classifier import ImageClassifier, train_classifier
from diffusion_lab.evaluation.metrics import class_accuracy, feature_distances
from diffusion_lab.evaluation.study import SamplerSpec, real_row, run_study, sampler_specs

__all__ = [
    "ImageClassifier",
    "SamplerSpec",
    "class_accuracy",
    "feature_distances",
    "real_row",
    "run_study",
    "sampler_specs",
    "train_classifier",
]
