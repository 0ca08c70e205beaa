"""Node memory estimates (graph/estimate.py, nodes/memory_estimates.py) against the shapes the nodes make."""

from __future__ import annotations

import pytest
import torch

from graph.estimate import TensorSize, estimate_prompt
from graph.workflow import parse_api_workflow
from nodes.image import EmptyImage, ImageScale, ImageScaleBy
from nodes.latent import EmptyLatentImage, LatentUpscale
from nodes.latent_combine import RepeatLatentBatch


def shape_of(estimate) -> tuple[int, ...]:
    return estimate.outputs[0].shape


@pytest.mark.parametrize(("width", "height"), [(0, 50), (300, 0), (0, 0), (64, 40)])
def test_image_scale_estimate_matches_the_node(width, height):
    image = torch.zeros(2, 100, 200, 3)
    made = ImageScale().execute(image=image, upscale_method="nearest-exact", width=width, height=height,
                                crop="disabled")[0]
    estimate = ImageScale.estimate({"image": TensorSize(tuple(image.shape)), "upscale_method": "nearest-exact",
                                    "width": width, "height": height, "crop": "disabled"})
    assert shape_of(estimate) == tuple(made.shape)


def test_scale_by_and_empty_nodes_match_the_node():
    image = torch.zeros(1, 64, 48, 3)
    made = ImageScaleBy().execute(image=image, upscale_method="nearest-exact", scale_by=1.5)[0]
    assert shape_of(ImageScaleBy.estimate({"image": TensorSize((1, 64, 48, 3)), "scale_by": 1.5})) == tuple(made.shape)
    made = EmptyImage().execute(width=40, height=24, batch_size=3, color=0)[0]
    assert shape_of(EmptyImage.estimate({"width": 40, "height": 24, "batch_size": 3})) == tuple(made.shape)
    latent = EmptyLatentImage().execute(width=64, height=128, batch_size=2)[0]["samples"]
    assert shape_of(EmptyLatentImage.estimate({"width": 64, "height": 128, "batch_size": 2})) == tuple(latent.shape)
    upscaled = LatentUpscale().execute(samples={"samples": latent}, upscale_method="nearest-exact", width=128,
                                       height=0, crop="disabled")[0]["samples"]
    # ComfyUI's rule: 128 px wide, and the latent's 2:1 aspect makes it 256 px (32 latent rows) tall.
    assert tuple(upscaled.shape[-2:]) == (32, 16)
    estimate = LatentUpscale.estimate({"samples": TensorSize(tuple(latent.shape)), "width": 128, "height": 0})
    assert shape_of(estimate) == tuple(upscaled.shape)
    repeated = RepeatLatentBatch().execute(samples={"samples": latent}, amount=3)[0]["samples"]
    assert shape_of(RepeatLatentBatch.estimate({"samples": TensorSize(tuple(latent.shape)), "amount": 3})) \
        == tuple(repeated.shape)


def test_a_node_without_estimate_or_with_a_broken_one_never_blocks():
    workflow = parse_api_workflow({"1": {"class_type": "A", "inputs": {}}, "2": {"class_type": "B", "inputs": {}}})

    def broken(inputs):
        raise RuntimeError("an estimator bug")

    assert estimate_prompt(workflow, ["1", "2"], {"1": broken}, limit=1) is None


def test_cgroup_memory_limits_v1_and_v2(tmp_path):
    from latentgraph_server.request_bounds import cgroup_memory_limit

    v2, v1 = tmp_path / "v2", tmp_path / "v1"
    (v2 / "app").mkdir(parents=True)
    (v2 / "app" / "memory.max").write_text("3221225472\n")
    (v2 / "cgroup").write_text("0::/app\n")
    assert cgroup_memory_limit(v2, v2 / "cgroup") == 3 * 1024**3
    (v2 / "app" / "memory.max").write_text("max\n")
    assert cgroup_memory_limit(v2, v2 / "cgroup") is None
    (v1 / "memory" / "box").mkdir(parents=True)
    (v1 / "memory" / "box" / "memory.limit_in_bytes").write_text("2147483648\n")
    (v1 / "cgroup").write_text("9:name=systemd:/\n4:memory:/box\n")
    assert cgroup_memory_limit(v1, v1 / "cgroup") == 2 * 1024**3
    (v1 / "memory" / "box" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_memory_limit(v1, v1 / "cgroup") is None


def test_canny_estimate_matches_the_node_and_counts_kornias_working_maps():
    from nodes.controlnet_nodes import Canny

    image = torch.rand(2, 40, 56, 3)
    made = Canny().execute(image=image, low_threshold=0.4, high_threshold=0.8)[0]
    estimate = Canny.estimate({"image": TensorSize(tuple(image.shape)), "low_threshold": 0.4, "high_threshold": 0.8})
    assert shape_of(estimate) == tuple(made.shape)
    assert estimate.working_bytes > 10 * estimate.output_bytes  # kornia's maps, not just the output
    # a 4096 px square image is fine to make, but its edges would need GiBs more: Canny is blamed
    workflow = parse_api_workflow({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 4096, "height": 4096, "batch_size": 1, "color": 0}},
        "2": {"class_type": "Canny", "inputs": {"image": ["1", 0], "low_threshold": 0.4, "high_threshold": 0.8}},
    })
    estimators = {"1": EmptyImage.estimate, "2": Canny.estimate}
    assert estimate_prompt(workflow, ["1"], estimators, limit=2**30) is None
    over = estimate_prompt(workflow, ["1", "2"], estimators, limit=2**30)
    assert over is not None and over.node_id == "2" and over.cause == "image"
