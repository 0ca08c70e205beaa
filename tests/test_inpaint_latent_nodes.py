"""Inpainting, outpainting, latent-batch and image-batch nodes on plain tensors (no models)."""

import pytest
import torch

from nodes.image import ImageBatch, ImageCrop
from nodes.inpaint import ImageCompositeMasked, ImagePadForOutpaint, SetLatentNoiseMask, grow_mask
from nodes.latent_combine import LatentBlend, LatentComposite, LatentFromBatch, RepeatLatentBatch
from nodes.sampling import initial_noise


def latent(batch=1, h=8, w=8, value=None):
    samples = torch.randn(batch, 4, h, w) if value is None else torch.full((batch, 4, h, w), float(value))
    return {"samples": samples}


def test_latent_composite_pastes_at_pixel_offsets_and_clips():
    to, src = latent(value=0.0), latent(h=4, w=6, value=1.0)
    out = LatentComposite().execute(to, src, x=32, y=16, feather=0)[0]["samples"]
    expected = torch.zeros(1, 4, 8, 8)
    expected[:, :, 2:6, 4:8] = 1.0  # 6 columns asked, 4 fit
    assert torch.equal(out, expected)
    assert torch.all(to["samples"] == 0)  # input untouched


def test_latent_composite_feather_fades_inner_edges_only():
    to, src = latent(h=8, w=16, value=0.0), latent(h=8, w=8, value=1.0)
    out = LatentComposite().execute(to, src, x=64, y=0, feather=24)[0]["samples"][0, 0]
    # pasted at latent columns 8..15: the left edge is inside the target and fades over 3 columns;
    # the top, bottom and right edges touch the border and do not fade
    assert out[:, :8].abs().sum() == 0
    assert torch.allclose(out[4, 8:12], torch.tensor([1 / 3, 2 / 3, 1.0, 1.0]))
    assert torch.all(out[:, 11:] == 1.0)


def test_latent_from_batch_and_repeat_track_masks_and_batch_positions():
    source = latent(batch=4)
    source["noise_mask"] = torch.rand(2, 1, 64, 64)
    picked = LatentFromBatch().execute(source, batch_index=2, length=5)[0]
    assert torch.equal(picked["samples"], source["samples"][2:4])
    assert picked["batch_index"] == [2, 3]
    assert torch.equal(picked["noise_mask"], source["noise_mask"][[0, 1]])  # masks repeat over the batch
    again = LatentFromBatch().execute(picked, batch_index=1, length=1)[0]
    assert again["batch_index"] == [3]
    repeated = RepeatLatentBatch().execute(picked, amount=3)[0]
    assert repeated["samples"].shape[0] == 6 and repeated["batch_index"] == [2, 3, 4, 5, 6, 7]
    assert repeated["noise_mask"].shape[0] == 6


def test_batch_index_keeps_each_item_s_noise():
    full = initial_noise((3, 4, 8, 8), seed=11)
    assert torch.equal(initial_noise((1, 4, 8, 8), 11, batch_index=[2]), full[2:])
    assert torch.equal(initial_noise((2, 4, 8, 8), 11, batch_index=[0, 0]), full[[0, 0]])
    with pytest.raises(ValueError, match="batch_index"):
        initial_noise((2, 4, 8, 8), 11, batch_index=[1])


def test_latent_blend_mixes_and_resizes_the_second():
    a, b = latent(value=2.0), latent(h=4, w=4, value=6.0)
    out = LatentBlend().execute(a, b, 0.25)[0]["samples"]
    assert out.shape == (1, 4, 8, 8) and torch.allclose(out, torch.full_like(out, 2 * 0.25 + 6 * 0.75))


def test_set_latent_noise_mask_stores_a_4d_mask():
    out = SetLatentNoiseMask().execute(latent(), torch.ones(64, 64))[0]
    assert out["noise_mask"].shape == (1, 1, 64, 64)


def test_grow_mask_dilates_by_the_given_square():
    mask = torch.zeros(1, 1, 16, 16)
    mask[:, :, 8, 8] = 1.0
    grown = grow_mask(mask, 6)
    rows, cols = grown[0, 0].nonzero().unbind(1)
    assert (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())) == (6, 11, 6, 11)
    assert torch.equal(grow_mask(mask, 0), mask)


def test_pad_for_outpaint_pads_grey_and_feathers_into_the_image():
    image = torch.rand(1, 32, 40, 3)
    padded, mask = ImagePadForOutpaint().execute(image, left=8, top=0, right=16, bottom=0, feathering=4)
    assert padded.shape == (1, 32, 64, 3) and mask.shape == (1, 32, 64)
    assert torch.equal(padded[:, :, 8:48], image)
    assert torch.all(padded[:, :, :8] == 0.5) and torch.all(padded[:, :, 48:] == 0.5)
    assert torch.all(mask[:, :, :8] == 1) and torch.all(mask[:, :, 48:] == 1)
    # inside: ((4 - d) / 4)^2 at distance d from a padded side; top and bottom were not padded
    assert torch.allclose(mask[0, 16, 8:13], torch.tensor([1.0, 0.5625, 0.25, 0.0625, 0.0]))
    assert torch.allclose(mask[0, 0, 8:13], mask[0, 16, 8:13])
    assert torch.all(mask[0, :, 13:44] == 0)
    _, unfeathered = ImagePadForOutpaint().execute(torch.rand(1, 6, 6, 3), 8, 0, 0, 0, feathering=4)
    assert torch.all(unfeathered[0, :, 8:] == 0)  # image not larger than twice the feathering


def test_image_composite_masked_keeps_destination_outside_the_mask():
    destination, source = torch.rand(2, 16, 16, 3), torch.rand(1, 8, 8, 3)
    mask = torch.zeros(8, 8)
    mask[2:6, 2:6] = 1.0
    out = ImageCompositeMasked().execute(destination, source, x=12, y=4, resize_source=False, mask=mask)[0]
    changed = (out != destination).any(-1)
    assert changed.any() and not changed[:, :, :12].any() and not changed[:, :4].any()
    assert torch.equal(out[:, 6:10, 14:16], source[:, 2:6, 2:4].expand(2, -1, -1, -1))
    whole = ImageCompositeMasked().execute(destination, source, 0, 0, resize_source=True)[0]
    assert whole.shape == destination.shape and not torch.equal(whole, destination)


def test_image_batch_resizes_the_second_and_crop_clips():
    first, second = torch.rand(1, 16, 24, 3), torch.rand(2, 32, 32, 3)
    out = ImageBatch().execute(first, second)[0]
    assert out.shape == (3, 16, 24, 3) and torch.equal(out[:1], first)
    cropped = ImageCrop().execute(first, width=10, height=100, x=20, y=4)[0]
    assert torch.equal(cropped, first[:, 4:, 20:])
    with pytest.raises(ValueError, match="channel"):
        ImageBatch().execute(first, torch.rand(1, 16, 24, 4))
