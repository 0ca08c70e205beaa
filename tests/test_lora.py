"""LoraLoader / LoraLoaderModelOnly on the tiny SD1 and SDXL checkpoints, with generated LoRAs."""

import logging

import pytest
import torch

from graph import prepare
from nodes.lora.apply import LoraError, match_lora
from nodes.lora.file import read_lora_file
from nodes.lora.keys import parse_lora
from nodes.lora.patch import LoraAdapter, LoraDelta, patched_view
from nodes.lora.targets import encoder_aliases, unet_aliases
from nodes.models.errors import UnsafeFormatError
from nodes.models.ldm_writer import save_ldm_checkpoint
from tests.fixtures.model_env import model_env
from tests.fixtures.tiny_loras import (
    merge_by_hand,
    random_lora,
    write_diffusers,
    write_kohya,
    write_peft,
)
from tests.test_sd_nodes import Capture

pytest_plugins = ["tests.fixtures.tiny_models"]

TE_PREFIXES = {"sd1": ("lora_te_",), "sdxl": ("lora_te1_", "lora_te2_")}


def branch(doc, tag, model, clip, seed=1, steps=2):
    """A txt2img branch ending in the KSampler ``{tag}s``, sampling with the given MODEL and CLIP links."""
    doc[f"{tag}p"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": clip}}
    doc[f"{tag}n"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": clip}}
    doc[f"{tag}l"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    doc[f"{tag}s"] = {"class_type": "KSampler", "inputs": {
        "model": model, "seed": seed, "steps": steps, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
        "positive": [f"{tag}p", 0], "negative": [f"{tag}n", 0], "latent_image": [f"{tag}l", 0], "denoise": 1.0}}
    return doc


class Runs(Capture):
    """Runs the KSamplers of a document (no image decoding: these tests compare latents)."""

    def run(self, document):
        targets = [node_id for node_id, node in document.items() if node["class_type"] == "KSampler"]
        checked = prepare(document, self.registry, targets, runtime=self.runtime)
        assert checked.ok, checked.response()
        self.events, self.plan = [], checked.plan
        return self.executor.execute(checked.plan, on_event=lambda e, d: self.events.append((e, d)))


def lora_node(model, clip, name, strength_model=1.0, strength_clip=1.0):
    return {"class_type": "LoraLoader", "inputs": {"model": model, "clip": clip, "lora_name": name,
                                                   "strength_model": strength_model, "strength_clip": strength_clip}}


def base_doc():
    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "base.safetensors"}}}


@pytest.fixture(scope="module")
def sd1(tiny_checkpoints, tmp_path_factory):
    """An env with the tiny SD1 checkpoint as base.safetensors and two random LoRAs in several layouts."""
    root = tmp_path_factory.mktemp("lora_sd1")
    tiny = tiny_checkpoints.models["sd1"]
    lora_a = random_lora(tiny.unet, tiny.text_encoders, seed=1)
    lora_b = random_lora(tiny.unet, tiny.text_encoders, seed=2, unet_layers=("to_q", "to_v", "conv1"),
                         text_layers=("q_proj", "fc2"))
    text_only = random_lora(tiny.unet, tiny.text_encoders, seed=3, unet_layers=("none",))
    loras = {"a.safetensors": write_kohya(lora_a, root / "a.safetensors"),
             "b.safetensors": write_peft(lora_b, root / "b.safetensors"),
             "text_only.safetensors": write_kohya(text_only, root / "text_only.safetensors")}
    registry, runtime = model_env(root, {"checkpoints": {"base.safetensors": tiny_checkpoints.sd1}, "loras": loras})
    return {"env": (registry, runtime), "a": lora_a, "b": lora_b, "root": root}


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_kohya_diffusers_and_peft_layouts_equal_merging_by_hand(tiny_checkpoints, tmp_path, family):
    tiny = tiny_checkpoints.models[family]
    lora = random_lora(tiny.unet, tiny.text_encoders, seed=7)
    files = {
        "kohya_diffusers_names.safetensors": write_kohya(lora, tmp_path / "k1.safetensors", "diffusers",
                                                         TE_PREFIXES[family]),
        "kohya_ldm_names.safetensors": write_kohya(lora, tmp_path / "k2.safetensors", "ldm", TE_PREFIXES[family]),
        "diffusers.safetensors": write_diffusers(lora, tmp_path / "d.safetensors"),
        "peft.safetensors": write_peft(lora, tmp_path / "p.safetensors"),
    }
    merged = save_ldm_checkpoint(
        tmp_path / "merged.safetensors", family, merge_by_hand(tiny.unet, lora.unet), tiny.vae,
        [merge_by_hand(e, layers) for e, layers in zip(tiny.text_encoders, lora.encoders, strict=True)],
        store_arch_config=True)
    ckpt = getattr(tiny_checkpoints, family)
    env = model_env(tmp_path / "env", {"checkpoints": {"base.safetensors": ckpt, "merged.safetensors": merged},
                                       "loras": files})
    doc = base_doc()
    doc["2"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "merged.safetensors"}}
    branch(doc, "m", ["2", 0], ["2", 1])
    branch(doc, "b", ["1", 0], ["1", 1])
    for i, name in enumerate(files):
        doc[f"L{i}"] = lora_node(["1", 0], ["1", 1], name)
        branch(doc, f"f{i}", [f"L{i}", 0], [f"L{i}", 1])
    capture = Runs(env)
    result = capture.run(doc)
    assert result.status == "success", result.error
    reference = capture.output("ms")["samples"]
    reference_cond = capture.output("mp")[0][0]
    assert (reference - capture.output("bs")["samples"]).abs().max() > 1e-2  # the LoRA does something
    for i, name in enumerate(files):
        assert torch.allclose(capture.output(f"f{i}p")[0][0], reference_cond, atol=1e-5), name
        assert torch.allclose(capture.output(f"f{i}s")["samples"], reference, rtol=1e-4, atol=1e-3), name
        assert len(capture.output(f"L{i}", 0).patches) == 1


def test_strength_zero_is_bit_exact_base(sd1):
    doc = base_doc()
    branch(doc, "b", ["1", 0], ["1", 1])
    doc["z"] = lora_node(["1", 0], ["1", 1], "a.safetensors", 0.0, 0.0)
    branch(doc, "z", ["z", 0], ["z", 1], seed=2)
    doc["c"] = lora_node(["1", 0], ["1", 1], "a.safetensors", 0.0, 1.0)
    doc["m"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": "a.safetensors",
                                                                "strength_model": 0.0}}
    branch(doc, "c", ["m", 0], ["c", 1])
    doc["bs"]["inputs"]["seed"] = 2
    capture = Runs(sd1["env"])
    assert capture.run(doc).status == "success"
    assert torch.equal(capture.output("zs")["samples"], capture.output("bs")["samples"])
    base_model, base_clip = capture.output("1", 0), capture.output("1", 1)
    assert capture.output("c", 0) is base_model and capture.output("m", 0) is base_model
    assert capture.output("c", 1) is not base_clip and len(capture.output("c", 1).patches[0]) == 1


def test_cached_base_model_is_unchanged_by_a_lora_run(sd1):
    capture = Runs(sd1["env"])
    base = base_doc()
    branch(base, "b", ["1", 0], ["1", 1])
    assert capture.run(base).status == "success"
    model, clip = capture.output("1", 0), capture.output("1", 1)
    with torch.inference_mode():
        before = {k: v.clone() for k, v in model.unet.state_dict().items()}
        x, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([400]), torch.randn(1, 77, 32)
        out_before = model.unet(x, t, encoder_hidden_states=ctx).sample
    doc = dict(base)
    doc["L"] = lora_node(["1", 0], ["1", 1], "a.safetensors")
    branch(doc, "f", ["L", 0], ["L", 1])
    result = capture.run(doc)
    assert result.status == "success" and "1" not in result.executed  # the cached checkpoint was used
    assert not torch.allclose(capture.output("fs")["samples"], capture.output("bs")["samples"])
    assert capture.output("1", 0) is model and capture.output("L", 0).base_unet is model.unet
    assert not any(isinstance(m, LoraAdapter) for m in model.unet.modules())
    assert not any(isinstance(m, LoraAdapter) for e in clip.encoders for m in e.modules())
    with torch.inference_mode():
        after = model.unet.state_dict()
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
        assert torch.equal(model.unet(x, t, encoder_hidden_states=ctx).sample, out_before)


def test_two_stacked_loras_equal_both_merged(sd1):
    doc = base_doc()
    doc["A"] = lora_node(["1", 0], ["1", 1], "a.safetensors", 0.7, 0.5)
    doc["B"] = lora_node(["A", 0], ["A", 1], "b.safetensors", -0.4, 1.0)
    branch(doc, "s", ["B", 0], ["B", 1], steps=1)
    capture = Runs(sd1["env"])
    assert capture.run(doc).status == "success"
    base_model, base_clip = capture.output("1", 0), capture.output("1", 1)
    stacked_model, stacked_clip = capture.output("B", 0), capture.output("B", 1)
    assert [p.name for p in stacked_model.patches] == ["a.safetensors", "b.safetensors"]
    assert stacked_model.base_unet is base_model.unet
    lora_a, lora_b = sd1["a"], sd1["b"]
    with torch.inference_mode():
        unet = merge_by_hand(merge_by_hand(base_model.unet, lora_a.unet, 0.7), lora_b.unet, -0.4)
        encoder = merge_by_hand(merge_by_hand(base_clip.encoders[0], lora_a.encoders[0], 0.5), lora_b.encoders[0])
        x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor([900, 10]), torch.randn(2, 77, 32)
        expected = unet(x, t, encoder_hidden_states=ctx).sample
        got = stacked_model.unet(x, t, encoder_hidden_states=ctx).sample
        ids = torch.randint(0, 49406, (1, 77))
        expected_text = encoder(ids).last_hidden_state
        got_text = stacked_clip.encoders[0](ids).last_hidden_state
    assert torch.allclose(got, expected, atol=1e-5) and torch.allclose(got_text, expected_text, atol=1e-5)


def test_lora_loader_model_only_leaves_clip_untouched(sd1):
    doc = base_doc()
    doc["M"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": "a.safetensors",
                                                                "strength_model": 1.0}}
    doc["C0"] = lora_node(["1", 0], ["1", 1], "a.safetensors", 1.0, 0.0)
    branch(doc, "m", ["M", 0], ["1", 1])
    branch(doc, "c", ["C0", 0], ["C0", 1])
    branch(doc, "b", ["1", 0], ["1", 1])
    capture = Runs(sd1["env"])
    assert capture.run(doc).status == "success"
    assert capture.output("C0", 1) is capture.output("1", 1)  # strength_clip 0: the same CLIP
    assert torch.equal(capture.output("ms")["samples"], capture.output("cs")["samples"])
    assert not torch.allclose(capture.output("ms")["samples"], capture.output("bs")["samples"])
    model_only = capture.output("M", 0)
    assert len(model_only.patches) == 1 and len(model_only.patches[0].deltas) == len(sd1["a"].unet)
    # A LoRA with only text-encoder layers has nothing for LoraLoaderModelOnly: a clear error.
    doc["M"]["inputs"]["lora_name"] = "text_only.safetensors"
    result = capture.run(doc)
    assert result.status == "error" and "use LoraLoader" in result.error["exception_message"]


def test_kohya_ldm_and_diffusers_names_reach_the_right_layers(tiny_checkpoints):
    tiny = tiny_checkpoints.models["sd1"]  # layers_per_block 2; down block 0 and up block 1 have attention
    aliases = unet_aliases(tiny.unet)
    expected = {
        "input_blocks_1_1_transformer_blocks_0_attn1_to_q": "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
        "input_blocks_2_0_in_layers_2": "down_blocks.0.resnets.1.conv1",
        "input_blocks_3_0_op": "down_blocks.0.downsamplers.0.conv",
        "middle_block_1_proj_in": "mid_block.attentions.0.proj_in",
        "middle_block_2_emb_layers_1": "mid_block.resnets.1.time_emb_proj",
        "output_blocks_2_1_conv": "up_blocks.0.upsamplers.0.conv",
        "output_blocks_5_1_transformer_blocks_0_ff_net_0_proj": "up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj",
        "output_blocks_3_0_skip_connection": "up_blocks.1.resnets.0.conv_shortcut",
        "down_blocks_0_attentions_1_transformer_blocks_0_attn2_to_out_0":
            "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_out.0",
        "time_embed_0": "time_embedding.linear_1",
        "up_blocks.1.attentions.0.proj_out": "up_blocks.1.attentions.0.proj_out",
    }
    assert {k: aliases.get(k) for k in expected} == expected
    text = encoder_aliases(tiny.text_encoders[0])
    assert text["text_model_encoder_layers_1_mlp_fc2"] == text["text_model.encoder.layers.1.mlp.fc2"]
    assert text["encoder.layers.0.self_attn.q_proj"].endswith("encoder.layers.0.self_attn.q_proj")


def test_parse_reads_every_layout_and_reports_the_rest():
    t = torch.zeros(2, 2)
    state = {
        "lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": t,
        "lora_unet_mid_block_attentions_0_proj_in.lora_up.weight": t,
        "lora_unet_mid_block_attentions_0_proj_in.alpha": torch.tensor(1.0),
        "unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight": t,
        "unet.up_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight": t,
        "text_encoder_2.text_model.encoder.layers.0.self_attn.k_proj.lora_A.default.weight": t,
        "text_encoder_2.text_model.encoder.layers.0.self_attn.k_proj.lora_B.default.weight": t,
        "down_blocks.0.resnets.0.conv1.lora_A.weight": t,  # a bare PEFT UNet
        "down_blocks.0.resnets.0.conv1.lora_B.weight": t,
        "lora_te_text_model_encoder_layers_0_mlp_fc1.hada_w1_a": t,
        "lora_unet_conv_in.lora_down.weight": t,  # no up
        "model.diffusion_model.input_blocks.0.0.weight": t,
    }
    parsed = parse_lora(state)
    assert set(parsed.groups) == {
        ("unet", "mid_block_attentions_0_proj_in"), ("unet", "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0"),
        (1, "text_model.encoder.layers.0.self_attn.k_proj"), ("unet", "down_blocks.0.resnets.0.conv1")}
    assert parsed.groups[("unet", "mid_block_attentions_0_proj_in")].scale == 0.5
    assert parsed.unknown == ["model.diffusion_model.input_blocks.0.0.weight"]
    assert parsed.other_kinds == {"LoHa": 1} and parsed.incomplete[0].layer == "conv_in"
    with pytest.raises(LoraError, match="DoRA"):
        match_lora({"lora_unet_conv_in.dora_scale": t}, "dora.safetensors", torch.nn.Linear(2, 2), None)


def test_unmatched_keys_warn_and_a_lora_matching_nothing_is_an_error(sd1, tmp_path, caplog):
    from safetensors.torch import load_file, save_file

    state = load_file(str(sd1["root"] / "a.safetensors"))
    noisy = dict(state, **{"lora_unet_no_such_layer.lora_down.weight": torch.zeros(4, 8),
                           "lora_unet_no_such_layer.lora_up.weight": torch.zeros(8, 4),
                           "something_else": torch.zeros(1)})
    save_file(noisy, str(tmp_path / "noisy.safetensors"))
    save_file({"something_else": torch.zeros(1)}, str(tmp_path / "junk.safetensors"))
    bad = dict(state)
    key = "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight"
    bad[key] = torch.zeros(16, 4, 1, 1)  # proj_in has 32 outputs
    save_file(bad, str(tmp_path / "bad.safetensors"))
    registry, runtime = sd1["env"]
    for name in ("noisy", "junk", "bad"):
        (runtime.models.root / "loras" / f"{name}.safetensors").write_bytes(
            (tmp_path / f"{name}.safetensors").read_bytes())
    capture = Runs(sd1["env"])
    doc = base_doc()
    doc["L"] = lora_node(["1", 0], ["1", 1], "noisy.safetensors")
    branch(doc, "f", ["L", 0], ["L", 1], steps=1)
    with caplog.at_level(logging.WARNING, logger="latentgraph.lora"):
        assert capture.run(doc).status == "success"
    (message,) = [r.getMessage() for r in caplog.records if r.name == "latentgraph.lora"]
    assert "2 layers this model does not have" in message and "1 keys of no known LoRA layout" in message
    assert len(capture.output("L", 0).patches[0].deltas) == len(sd1["a"].unet)
    doc["L"]["inputs"]["lora_name"] = "junk.safetensors"
    result = capture.run(doc)
    assert result.status == "error" and "none of its 1 keys match" in result.error["exception_message"]
    doc["L"]["inputs"]["lora_name"] = "bad.safetensors"
    result = capture.run(doc)
    assert result.status == "error" and "does not fit this model" in result.error["exception_message"]


def test_pickled_loras_load_only_through_weights_only(sd1, tmp_path):
    from safetensors.torch import load_file

    state = load_file(str(sd1["root"] / "a.safetensors"))
    torch.save(state, tmp_path / "a.pt")
    loaded = read_lora_file(tmp_path / "a.pt")
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    torch.save({"weights": state, "trainer": logging.getLogger("x")}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeFormatError, match="weights_only"):
        read_lora_file(tmp_path / "evil.pt")


def test_tucker_locon_and_linear_shaped_conv_loras_match_their_merged_weights():
    gen = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(6, 5, 3, padding=1, stride=2)
    proj = torch.nn.Conv2d(6, 5, 1)
    root = torch.nn.Sequential(conv, proj)
    tucker = LoraDelta(torch.randn(3, 6, 1, 1, generator=gen), torch.randn(5, 3, 1, 1, generator=gen), 0.3,
                       torch.randn(3, 3, 3, 3, generator=gen))
    flat = LoraDelta(torch.randn(2, 6, generator=gen), torch.randn(5, 2, generator=gen), -1.5)
    view = patched_view(root, {"0": [tucker], "1": [flat]})
    x = torch.randn(1, 6, 9, 9, generator=gen)
    with torch.no_grad():
        merged_conv = torch.nn.functional.conv2d(x, conv.weight + tucker.weight_delta(conv.weight.shape), conv.bias,
                                                 stride=2, padding=1)
        merged_proj = torch.nn.functional.conv2d(x, proj.weight + flat.weight_delta(proj.weight.shape), proj.bias)
        assert torch.allclose(view[0](x), merged_conv, atol=1e-5)
        assert torch.allclose(view[1](x), merged_proj, atol=1e-5)
    assert isinstance(root[0], torch.nn.Conv2d) and view[0].base.weight is root[0].weight  # shared, not copied


def test_a_patched_handle_counts_only_the_lora_bytes(sd1):
    doc = base_doc()
    doc["L"] = lora_node(["1", 0], ["1", 1], "a.safetensors")
    branch(doc, "f", ["L", 0], ["L", 1], steps=1)
    capture = Runs(sd1["env"])
    assert capture.run(doc).status == "success"
    patched, base = capture.output("L", 0), capture.output("1", 0)
    assert patched.size_bytes() == patched.patches[0].nbytes() > 0
    assert patched.size_bytes() < base.size_bytes()


@pytest.mark.parametrize("view_first", [True, False])
def test_a_view_shares_no_hooks_with_its_base(tiny_checkpoints, view_first):
    # transformers 5 installs hidden-state recording hooks on a model's first forward call
    import copy

    base = copy.deepcopy(tiny_checkpoints.models["sd1"].text_encoders[0])
    gen = torch.Generator().manual_seed(0)
    delta = LoraDelta(torch.randn(2, 32, generator=gen), torch.randn(32, 2, generator=gen), 1.0)
    view = patched_view(base, {"encoder.layers.0.self_attn.q_proj": [delta]})  # layer 1 is not patched
    ids = torch.randint(0, 49406, (1, 77), generator=gen)

    def hooks(module):
        return sum(len(m._forward_hooks) for m in module.modules())

    first, second = (view, base) if view_first else (base, view)
    with torch.inference_mode():
        first_states = first(ids, output_hidden_states=True).hidden_states
        hooks_after_first = hooks(second)
        second_states = second(ids, output_hidden_states=True).hidden_states
    assert len(first_states) == len(second_states) == 3  # embeddings + 2 layers, each recorded once
    assert hooks_after_first == 0  # the first one's hooks are its own
    assert not torch.equal(first_states[-1], second_states[-1])
