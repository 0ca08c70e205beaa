"""T2I-Adapters: both layouts (full, light, SDXL's full) load the same network, and an
adapter guides sampling on the tiny SD1 checkpoint through ControlNetLoader and the apply node."""

from __future__ import annotations

import pytest
import torch

from graph import prepare
from nodes.controlnet.adapter import inspect_adapter
from nodes.controlnet.load import load_controlnet
from nodes.models.errors import UnknownCheckpointError
from tests.fixtures.tiny_controlnets import save_adapter, save_diff, save_ldm, tiny_adapter, tiny_controlnet
from tests.test_controlnet_sampling import Runs, _square, workflow

pytest_plugins = ["tests.fixtures.tiny_models"]

KINDS = {"full_adapter": [32, 64], "light_adapter": [32, 64], "full_adapter_xl": [32, 64, 64, 64]}


@pytest.mark.parametrize("kind", KINDS)
def test_both_layouts_load_the_same_adapter(kind, tmp_path):
    adapter = tiny_adapter(KINDS[kind], kind, seed=3)
    hint = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = adapter(hint)
    for original in (True, False):
        path = save_adapter(adapter, tmp_path / f"{kind}_{original}.safetensors", original=original)
        handle = load_controlnet(path)
        assert handle.kind == "t2i_adapter" and handle.family == ("sdxl" if kind.endswith("xl") else "sd1")
        assert handle.model.config.adapter_type == kind
        with torch.no_grad():
            got = handle.model(hint)
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True)), (kind, original)


def test_unsupported_adapter_variants_are_refused():
    with pytest.raises(UnknownCheckpointError, match="strided-conv"):
        inspect_adapter({"conv_in.weight": (32, 192, 3, 3), "body.0.block1.weight": (32, 32, 3, 3),
                         "body.2.down_opt.op.weight": (32, 32, 3, 3)})
    with pytest.raises(UnknownCheckpointError, match="not a T2I-Adapter"):
        inspect_adapter({"x": (1,)})


@pytest.fixture(scope="module")
def runs(tiny_checkpoints, tmp_path_factory):
    from tests.fixtures.model_env import model_env

    root = tmp_path_factory.mktemp("adapter_env")
    unet = tiny_checkpoints.models["sd1"].unet
    net = tiny_controlnet(unet, seed=1)
    files = {"checkpoints": {"base.safetensors": tiny_checkpoints.sd1},
             # as in ComfyUI, models/t2i_adapter is listed with models/controlnet
             "t2i_adapter": {"t2i.safetensors": save_adapter(tiny_adapter([32, 64], seed=5), root / "t2i.safetensors")},
             "controlnet": {"a.safetensors": save_ldm(net, root / "a.safetensors"),
                            "diff.safetensors": save_diff(net, unet, root / "diff.safetensors")}}
    registry, runtime = model_env(root, files)
    runtime.folders.input.mkdir(parents=True, exist_ok=True)
    _square((64, 64), (16, 16, 48, 40)).save(runtime.folders.input / "square.png")
    return Runs((registry, runtime))


@pytest.mark.slow  # several tiny-model image runs: the full suite (make test), not the fast lane
def test_a_t2i_adapter_guides_sampling(runs):
    base = runs.latent(workflow())
    guided = runs.latent(workflow(("t2i.safetensors", 1.0, 0.0, 1.0)))
    assert (guided - base).abs().max() > 1e-3
    assert torch.equal(runs.latent(workflow(("t2i.safetensors", 1.0, 1.0, 1.0))), base)
    weaker = runs.latent(workflow(("t2i.safetensors", 0.5, 0.0, 1.0)))
    assert not torch.equal(weaker, guided) and not torch.equal(weaker, base)
    # an adapter and a ControlNet chained: both take part
    cn = runs.latent(workflow(("a.safetensors", 1.0, 0.0, 1.0)))
    both = runs.latent(workflow(("a.safetensors", 1.0, 0.0, 1.0), ("t2i.safetensors", 1.0, 0.0, 1.0)))
    assert (both - cn).abs().max() > 1e-3 and (both - guided).abs().max() > 1e-3


def test_choices_list_both_folders(runs):
    from nodes.controlnet_nodes import control_net_choices

    assert control_net_choices(runs.runtime) == ["a.safetensors", "diff.safetensors", "t2i.safetensors"]


@pytest.mark.slow  # several tiny-model image runs: the full suite (make test), not the fast lane
def test_diff_controlnet_loader_adds_the_models_weights(runs):
    full = runs.latent(workflow(("a.safetensors", 1.0, 0.0, 1.0)))
    doc = workflow(("diff.safetensors", 1.0, 0.0, 1.0))
    doc["c0"] = {"class_type": "DiffControlNetLoader",
                 "inputs": {"model": ["1", 0], "control_net_name": "diff.safetensors"}}
    assert torch.allclose(runs.latent(doc), full, atol=1e-4)
    # the plain loader refuses it, naming the right one
    checked = prepare(workflow(("diff.safetensors", 1.0, 0.0, 1.0)), runs.registry, ["5"], runtime=runs.runtime)
    result = runs.executor.execute(checked.plan)
    assert result.status == "error" and "DiffControlNetLoader" in str(result.error)
