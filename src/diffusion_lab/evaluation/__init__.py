"""Evaluation: a judge classifier trained here on real images (and cached), class accuracy, FID
and KID on its features, and the sampler-vs-quality study with its writers (tables, plots).

Pure torch (+ torchmetrics, matplotlib): no Lightning or Hydra, nothing downloaded. Shared by
diffusion-eval and the in-training quality callback, so the two give the same numbers.
"""

from __future__ import annotations

from diffusion_lab.evaluation.classifier import ImageClassifier, train_classifier
from diffusion_lab.evaluation.judge_cache import Judge, JudgeOptions, get_judge
from diffusion_lab.evaluation.metrics import class_accuracy, feature_distances
from diffusion_lab.evaluation.panel import PanelEntry, drop_steps_above, expand_panel
from diffusion_lab.evaluation.real_sets import RealSets, choose_real_sets
from diffusion_lab.evaluation.study import real_row, run_study

__all__ = [
    "ImageClassifier",
    "Judge",
    "JudgeOptions",
    "PanelEntry",
    "RealSets",
    "choose_real_sets",
    "class_accuracy",
    "drop_steps_above",
    "expand_panel",
    "feature_distances",
    "get_judge",
    "real_row",
    "run_study",
    "train_classifier",
]
