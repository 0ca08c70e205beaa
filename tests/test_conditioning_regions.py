"""Combining several conditioning entries (areas, masks, strengths) in the CFG denoiser.

An instrumented stand-in for the UNet predicts, for every batch item, the constant that
its ``context`` carries, and records the crops it was given; so which conditioning
reached which latent pixels can be read straight off the output.
"""

import pytest
import torch

from nodes.conditioning import (
    ConditioningAverage,
    ConditioningCombine,
    ConditioningSetArea,
    ConditioningSetAreaPercentage,
    ConditioningSetMask,
    ConditioningZeroOut,
)
from nodes.sampling import CFGDenoiser, make_region
from nodes.sampling.regions import FEATHER


class RecordingDenoiser:
    """``D(x, sigma, context)`` = the context's first value, per item, over the whole crop."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, sigma, context, concat=None):
        self.calls.append((tuple(x.shape), context[:, 0, 0].tolist()))
        return context[:, 0, 0].view(-1, 1, 1, 1).expand_as(x).clone() + 0 * x


def text(value, tokens=77):
    return torch.full((1, tokens, 8), float(value))


def regions(conditioning, height, width):
    return [make_region({"context": cond}, extras, height, width) for cond, extras in conditioning]


def set_area(conditioning, width, height, x, y, strength=1.0):
    return ConditioningSetArea().execute(conditioning, width, height, x, y, strength)[0]


X = torch.zeros(1, 4, 16, 32)  # a 128x256-pixel latent
SIGMA = torch.tensor([1.0])


def test_two_areas_each_get_their_own_prompt_in_one_batched_call():
    left = set_area([[text(1.0), {}]], width=128, height=128, x=0, y=0)
    right = set_area([[text(5.0), {}]], width=128, height=128, x=128, y=0)
    positive = ConditioningCombine().execute(left, right)[0]
    model = RecordingDenoiser()
    out = CFGDenoiser(model, regions(positive, 16, 32), None, cfg=1.0)(X, SIGMA)
    assert torch.equal(out[..., :16], torch.full_like(out[..., :16], 1.0))
    assert torch.equal(out[..., 16:], torch.full_like(out[..., 16:], 5.0))
    # the UNet saw two 16x16 crops, batched into one call
    assert model.calls == [((2, 4, 16, 16), [1.0, 5.0])]


def test_overlapping_entries_are_averaged_by_strength_with_feathered_edges():
    base = [[text(0.0), {}]]
    patch = set_area([[text(9.0), {}]], width=128, height=128, x=64, y=0, strength=2.0)  # latent x 8..23
    positive = ConditioningCombine().execute(base, patch)[0]
    out = CFGDenoiser(RecordingDenoiser(), regions(positive, 16, 32), None, cfg=1.0)(X, SIGMA)[0, 0, 8]
    assert float(out[15]) == pytest.approx(9.0 * 2 / 3)  # inner pixel: (0 * 1 + 9 * 2) / (1 + 2)
    edge = 2.0 / FEATHER  # the area's first column fades to 1/8 of its strength
    assert float(out[8]) == pytest.approx(9.0 * edge / (1 + edge))
    assert float(out[0]) == 0.0 and float(out[31]) == 0.0  # outside the area only the base prompt
    assert torch.all(out[8:16].diff() > 0)  # the fade rises monotonically


def test_pixels_no_entry_covers_predict_zero():
    only_left = set_area([[text(3.0), {}]], width=64, height=128, x=0, y=0)
    out = CFGDenoiser(RecordingDenoiser(), regions(only_left, 16, 32), None, cfg=1.0)(X, SIGMA)
    assert torch.all(out[..., :8] == 3.0) and torch.all(out[..., 8:] == 0.0)


def test_mask_entry_weighs_pixels_by_the_mask_and_mask_bounds_crop_the_unet_input():
    mask = torch.zeros(1, 16, 32)
    mask[:, :, 20:] = 0.5
    positive = ConditioningCombine().execute(
        [[text(2.0), {}]], ConditioningSetMask().execute([[text(8.0), {}]], mask, 1.0, "default")[0])[0]
    out = CFGDenoiser(RecordingDenoiser(), regions(positive, 16, 32), None, cfg=1.0)(X, SIGMA)[0, 0]
    assert torch.all(out[:, :20] == 2.0)
    assert torch.allclose(out[:, 20:], torch.full_like(out[:, 20:], (2.0 + 8.0 * 0.5) / 1.5))
    bounded = ConditioningSetMask().execute([[text(8.0), {}]], mask, 1.0, "mask bounds")[0]
    model = RecordingDenoiser()
    CFGDenoiser(model, regions(ConditioningCombine().execute([[text(2.0), {}]], bounded)[0], 16, 32), None, 1.0)(
        X, SIGMA)
    assert sorted(shape for shape, _ in model.calls) == [(1, 4, 16, 12), (1, 4, 16, 32)]


def test_uncond_gets_a_twin_over_each_cond_area_and_guidance_is_formed_per_area():
    left = set_area([[text(1.0), {}]], width=128, height=128, x=0, y=0)
    right = set_area([[text(5.0), {}]], width=128, height=128, x=128, y=0)
    positive = ConditioningCombine().execute(left, right)[0]
    model = RecordingDenoiser()
    denoiser = CFGDenoiser(model, regions(positive, 16, 32), regions([[text(-1.0), {}]], 16, 32), cfg=3.0)
    assert [r.area for r in denoiser.uncond_regions] == [(16, 32, 0, 0), (16, 16, 0, 0), (16, 16, 0, 16)]
    out = denoiser(X, SIGMA)
    # uncond is -1 everywhere (full frame and twins agree); cond 1 left, 5 right
    assert torch.allclose(out[..., :16], torch.full_like(out[..., :16], -1 + (1 + 1) * 3.0))
    assert torch.allclose(out[..., 16:], torch.full_like(out[..., 16:], -1 + (5 + 1) * 3.0))
    # the four 16x16 crops (2 cond, 2 uncond twins) share one call; the full-frame uncond another
    assert sorted(len(values) for _, values in model.calls) == [1, 4]


def test_single_plain_entries_take_the_classic_path_bit_for_bit():
    model = RecordingDenoiser()
    as_regions = CFGDenoiser(model, regions([[text(2.0), {}]], 16, 32), regions([[text(1.0), {}]], 16, 32), 7.5)
    classic = CFGDenoiser(model, {"context": text(2.0)}, {"context": text(1.0)}, 7.5)
    x = torch.randn(2, 4, 16, 32)
    assert as_regions.cond_regions is None  # no region machinery for the plain case
    assert torch.equal(as_regions(x, torch.tensor([2.0, 2.0])), classic(x, torch.tensor([2.0, 2.0])))


def test_entries_with_different_prompt_lengths_batch_together():
    long = set_area([[text(4.0, tokens=154), {}]], width=128, height=128, x=0, y=0)
    short = set_area([[text(6.0), {}]], width=128, height=128, x=128, y=0)
    model = RecordingDenoiser()
    out = CFGDenoiser(model, regions(long + short, 16, 32), None, 1.0)(X, SIGMA)
    assert len(model.calls) == 1 and float(out[0, 0, 0, 0]) == 4.0 and float(out[0, 0, 0, 31]) == 6.0


def test_percentage_areas_resolve_against_the_latent_and_areas_clip_to_it():
    quarter = ConditioningSetAreaPercentage().execute([[text(1.0), {}]], 0.25, 0.5, 0.5, 0.5, 1.0)[0]
    (region,) = regions(quarter, 16, 32)
    assert region.area == (8, 8, 8, 16)
    (clipped,) = regions(set_area([[text(1.0), {}]], width=512, height=64, x=192, y=64), 16, 32)
    assert clipped.area == (8, 8, 8, 24)


def test_conditioning_nodes_keep_inputs_unchanged_and_set_comfyui_options():
    original = [[text(1.0), {"pooled_output": torch.ones(1, 4)}]]
    area = set_area(original, width=200, height=64, x=24, y=8, strength=0.5)
    assert area[0][1] == {"pooled_output": original[0][1]["pooled_output"], "area": (8, 25, 1, 3),
                          "strength": 0.5, "set_area_to_bounds": False}
    assert original[0][1].keys() == {"pooled_output"}
    zeroed = ConditioningZeroOut().execute(area)[0]
    assert torch.all(zeroed[0][0] == 0) and torch.all(zeroed[0][1]["pooled_output"] == 0)
    assert zeroed[0][1]["area"] == (8, 25, 1, 3)


def test_conditioning_average_blends_tokens_and_pooled_and_pads_short_sources():
    to = [[text(2.0, tokens=154), {"pooled_output": torch.full((1, 4), 2.0)}]]
    source = [[text(6.0), {"pooled_output": torch.full((1, 4), 6.0)}], [text(100.0), {}]]
    ((cond, extras),) = ConditioningAverage().execute(to, source, 0.25)[0]
    assert cond.shape == (1, 154, 8)
    assert torch.allclose(cond[:, :77], torch.full((1, 77, 8), 2.0 * 0.25 + 6.0 * 0.75))
    assert torch.allclose(cond[:, 77:], torch.full((1, 77, 8), 2.0 * 0.25))  # zero padding beyond the source
    assert torch.allclose(extras["pooled_output"], torch.full((1, 4), 5.0))
    with pytest.raises(ValueError, match="width"):
        ConditioningAverage().execute(to, [[torch.zeros(1, 77, 3), {}]], 0.5)


def test_timestep_range_takes_an_entry_out_of_the_steps_outside_it():
    """ConditioningSetTimestepRange: an entry takes part only while sigma lies between the
    sigmas of its start and end fractions (ComfyUI's percent_to_sigma on the model's schedule)."""
    from dataclasses import replace

    from nodes.conditioning import ConditioningSetTimestepRange
    from nodes.sampling import DiscreteSchedule, scaled_linear_betas

    schedule = DiscreteSchedule.from_betas(scaled_linear_betas(1000, 0.00085, 0.012))
    assert schedule.percent_to_sigma(0.0) == float("inf") and schedule.percent_to_sigma(1.0) == 0.0
    middle = schedule.percent_to_sigma(0.5)
    assert schedule.sigma_min < middle < schedule.sigma_max
    (early,) = ConditioningSetTimestepRange().execute([[text(2.0), {}]], 0.0, 0.5)
    (late,) = ConditioningSetTimestepRange().execute([[text(5.0), {}]], 0.5, 1.0)
    assert early[0][1] == {"start_percent": 0.0, "end_percent": 0.5}
    cond = []
    for conditioning in (early, late):
        (region,) = regions(conditioning, 4, 4)
        extras = conditioning[0][1]
        cond.append(replace(region, sigma_range=(schedule.percent_to_sigma(extras["start_percent"]),
                                                 schedule.percent_to_sigma(extras["end_percent"]))))
    assert not cond[0].is_plain
    denoiser = CFGDenoiser(RecordingDenoiser(), cond, None, cfg=1.0)
    x = torch.zeros(1, 4, 4, 4)
    assert torch.all(denoiser(x, torch.tensor([middle * 2])) == 2.0)  # early: only the first entry
    assert torch.all(denoiser(x, torch.tensor([middle / 2])) == 5.0)  # late: only the second
    assert torch.all(denoiser(x, torch.tensor([middle])) == 3.5)  # at the boundary both (averaged)


def test_conditioning_concat_appends_the_first_entry_of_from_to_every_entry():
    from nodes.conditioning import ConditioningConcat

    to = [[text(1.0), {"strength": 0.5}], [text(2.0), {}]]
    (joined,) = ConditioningConcat().execute(to, [[text(7.0, tokens=154), {"area": (1, 1, 0, 0)}], [text(9.0), {}]])
    assert [c.shape for c, _ in joined] == [(1, 231, 8), (1, 231, 8)]
    assert torch.all(joined[0][0][:, :77] == 1.0) and torch.all(joined[0][0][:, 77:] == 7.0)
    assert joined[0][1] == {"strength": 0.5} and joined[1][1] == {}  # the options of conditioning_to
    with pytest.raises(ValueError, match="widths 8 and 4"):
        ConditioningConcat().execute(to, [[torch.zeros(1, 77, 4), {}]])
