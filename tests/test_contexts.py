"""Context parsing, mixing and interpolation."""

from __future__ import annotations

import pytest
import torch

from diffusion_lab.diffusion.contexts import interpolate, mix, parse_context, parse_contexts

SPRITES = ["hero", "non-hero", "food", "spell", "side-facing"]


def test_a_class_name_is_its_one_hot_row():
    torch.testing.assert_close(parse_context("food", SPRITES), torch.tensor([0.0, 0, 1, 0, 0]))
    torch.testing.assert_close(parse_context("4", SPRITES), torch.tensor([0.0, 0, 0, 0, 1]))


def test_the_course_mix_parses_to_its_weights():
    torch.testing.assert_close(
        parse_context("hero:1,food:0.6", SPRITES), torch.tensor([1.0, 0, 0.6, 0, 0])
    )
    torch.testing.assert_close(
        mix({"hero": 1, "side-facing": 1}, SPRITES), torch.tensor([1.0, 0, 0, 0, 1])
    )


def test_all_gives_one_row_per_class_and_null_gives_none():
    rows, labels = parse_contexts("all", SPRITES)
    torch.testing.assert_close(rows, torch.eye(5))
    assert labels == SPRITES
    assert parse_contexts(None, SPRITES) == (None, ["unconditional"])
    assert parse_contexts("null", SPRITES)[0] is None
    rows, labels = parse_contexts(["hero", "hero:1,food:0.6"], SPRITES)
    assert rows.shape == (2, 5) and labels == ["hero", "hero:1,food:0.6"]


def test_unknown_class_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown class 'dragon'; known classes: hero, non-hero"):
        parse_context("dragon", SPRITES)


def test_a_weight_that_is_not_a_number_is_named():
    with pytest.raises(ValueError, match="weight 'lots' of class 'food'"):
        parse_context("hero:1,food:lots", SPRITES)


def test_interpolation_runs_from_start_to_end_in_equal_steps():
    start, end = torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 0, 1])
    path = interpolate(start, end, 5)
    assert path.shape == (5, 3)
    torch.testing.assert_close(path[0], start)
    torch.testing.assert_close(path[-1], end)
    torch.testing.assert_close(path[2], torch.tensor([0.5, 0, 0.5]))
    with pytest.raises(ValueError, match="steps >= 2"):
        interpolate(start, end, 1)
    with pytest.raises(ValueError, match="one width"):
        interpolate(start, torch.zeros(4), 3)


def test_non_finite_weights_are_refused():
    with pytest.raises(ValueError, match="'nan' of class '3' is not finite"):
        parse_context("3:nan", [str(i) for i in range(10)])
