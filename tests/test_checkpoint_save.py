"""CheckpointSave: what it writes loads back as the same model, LoRAs merged in."""

import json

import torch
from safetensors import safe_open

from graph import prepare
from tests.fixtures.model_env import model_env
from tests.fixtures.tiny_loras import random_lora, write_kohya
from tests.test_lora import Runs, base_doc, branch, lora_node

pytest_plugins = ["tests.fixtures.tiny_models"]


def save_node(model, clip, vae, prefix="checkpoints/merged"):
    return {"class_type": "CheckpointSave", "inputs": {"model": model, "clip": clip, "vae": vae,
                                                       "filename_prefix": prefix}}


def samples_of(root, checkpoint):
    """The tiny txt2img branch's latent, sampled with ``checkpoint`` loaded afresh."""
    runs = Runs(model_env(root, {"checkpoints": {"base.safetensors": checkpoint}}))
    result = runs.run(branch(base_doc(), "f", ["1", 0], ["1", 1]))
    assert result.status == "success", result.error
    return runs.output("fs")["samples"], runs.output("fp")[0][0]


def test_saved_checkpoint_loads_back_as_the_same_model_with_the_lora_merged(tiny_checkpoints, tmp_path):
    tiny = tiny_checkpoints.models["sd1"]
    lora = write_kohya(random_lora(tiny.unet, tiny.text_encoders, seed=3), tmp_path / "l.safetensors")
    registry, runtime = model_env(tmp_path / "env", {"checkpoints": {"base.safetensors": tiny_checkpoints.sd1},
                                                      "loras": {"l.safetensors": lora}})
    document = base_doc()
    document["L"] = lora_node(["1", 0], ["1", 1], "l.safetensors", strength_model=0.8, strength_clip=0.6)
    branch(document, "b", ["1", 0], ["1", 1])  # the base model, sampled
    branch(document, "p", ["L", 0], ["L", 1])  # the LoRA applied on the fly, sampled
    document["s1"] = save_node(["1", 0], ["1", 1], ["1", 2], "checkpoints/plain")
    document["s2"] = save_node(["L", 0], ["L", 1], ["1", 2], "checkpoints/merged")
    runs = Runs((registry, runtime))
    checked = prepare(document, registry, ["bs", "ps", "s1", "s2"], runtime=runtime)
    assert checked.ok, checked.response()
    result = runs.executor.execute(checked.plan, extra_data={"extra_pnginfo": {"workflow": {"nodes": []}}})
    assert result.status == "success", result.error
    runs.plan = checked.plan
    out = runtime.folders.output / "checkpoints"
    assert result.outputs["s2"]["checkpoints"] == [{"filename": "merged_00001_.safetensors",
                                                     "subfolder": "checkpoints", "type": "output"}]
    with safe_open(str(out / "merged_00001_.safetensors"), framework="pt") as f:
        metadata = f.metadata()
    assert json.loads(metadata["prompt"])["s2"]["class_type"] == "CheckpointSave"
    assert json.loads(metadata["workflow"]) == {"nodes": []}

    plain, plain_cond = samples_of(tmp_path / "a", out / "plain_00001_.safetensors")
    assert torch.equal(plain, runs.output("bs")["samples"])  # written and read back exactly
    assert torch.equal(plain_cond, runs.output("bp")[0][0])
    merged, merged_cond = samples_of(tmp_path / "b", out / "merged_00001_.safetensors")
    on_the_fly, on_the_fly_cond = runs.output("ps")["samples"], runs.output("pp")[0][0]
    assert (on_the_fly - plain).abs().max() > 1e-2  # the LoRA changes the result...
    assert torch.allclose(merged, on_the_fly, rtol=1e-4, atol=1e-4)  # ...and merging it gives the same
    assert torch.allclose(merged_cond, on_the_fly_cond, atol=1e-5)


def test_a_prefix_may_not_leave_the_output_folder(tiny_checkpoints, tmp_path):
    registry, runtime = model_env(tmp_path, {"checkpoints": {"base.safetensors": tiny_checkpoints.sd1}})
    document = base_doc()
    document["s"] = save_node(["1", 0], ["1", 1], ["1", 2], "../../escaped")
    checked = prepare(document, registry, runtime=runtime)
    assert checked.ok, checked.response()
    result = Runs((registry, runtime)).executor.execute(checked.plan)
    assert result.status == "error"
    assert not list(tmp_path.parent.glob("escaped*")) and not list(tmp_path.glob("escaped*"))
