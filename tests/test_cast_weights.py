"""fp16 files computing in fp32: weight matrices stay fp16 and are cast per layer, with results
identical to converting every weight at load (``nodes.models.cast_weights``)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from safetensors import safe_open

from nodes.models.cast_weights import CastConv2d, CastEmbedding, CastLinear, compute_dtype
from nodes.models.ldm_writer import ldm_state_dict, save_ldm_checkpoint
from nodes.models.loader import load_checkpoint, load_vae
from nodes.sd.handles import module_bytes
from tests.fixtures.model_env import model_env
from tests.fixtures.tiny_loras import random_lora, write_kohya
from tests.test_lora import Runs, base_doc, branch, lora_node

pytest_plugins = ["tests.fixtures.tiny_models"]

CASTING = (CastLinear, CastConv2d, CastEmbedding)
PLAIN = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Embedding)


@pytest.fixture(scope="module")
def fp16_files(tiny_checkpoints, tmp_path_factory):
    """The tiny SD1 and SDXL models saved as fp16 LDM files (as most shared checkpoints are)."""
    root = tmp_path_factory.mktemp("fp16")
    files = {}
    for family in ("sd1", "sdxl"):
        m = copy.deepcopy(tiny_checkpoints.models[family])
        files[family] = save_ldm_checkpoint(root / f"{family}_fp16.safetensors", family, m.unet.half(),
                                            m.vae.half(), [e.half() for e in m.text_encoders],
                                            store_arch_config=True)
    return files


def parts(ckpt):
    return {"unet": ckpt.unet, "vae": ckpt.vae, **{f"text{i}": e for i, e in enumerate(ckpt.text_encoders)}}


def test_matrices_stay_fp16_and_everything_else_is_fp32(fp16_files):
    ckpt = load_checkpoint(fp16_files["sdxl"], dtype=torch.float32)
    for name, model in parts(ckpt).items():
        layers = [m for m in model.modules() if isinstance(m, PLAIN)]
        assert layers and all(isinstance(m, CASTING) for m in layers), name
        for module in model.modules():
            for key, param in module.named_parameters(recurse=False):
                expected = torch.float16 if isinstance(module, CASTING) and key == "weight" else torch.float32
                assert param.dtype == expected, (name, type(module).__name__, key)
        assert compute_dtype(model) == torch.float32


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_results_equal_converting_at_load_exactly(fp16_files, family):
    narrow = load_checkpoint(fp16_files[family], dtype=torch.float32)
    wide = load_checkpoint(fp16_files[family], dtype=torch.float32, keep_file_precision=())
    assert not any(isinstance(m, CASTING) for model in parts(wide).values() for m in model.modules())
    assert module_bytes(narrow.unet) < 0.6 * module_bytes(wide.unet)  # fp16 matrices: about half
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(2, 4, 8, 8, generator=generator)
    ids = torch.randint(0, 49408, (2, 77), generator=generator)
    with torch.inference_mode():
        contexts = []
        for a, b in zip(narrow.text_encoders, wide.text_encoders, strict=True):
            out_a = a(input_ids=ids, output_hidden_states=True)
            out_b = b(input_ids=ids, output_hidden_states=True)
            assert out_a.hidden_states[-2].dtype == torch.float32
            assert torch.equal(out_a.hidden_states[-2], out_b.hidden_states[-2])
            contexts.append(out_a.hidden_states[-2])
        context = torch.cat(contexts, dim=-1)
        extra = {}
        if family == "sdxl":
            cfg = narrow.unet.config
            pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
            extra = {"added_cond_kwargs": {"text_embeds": torch.randn(2, pooled, generator=generator),
                                           "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2)}}
        t = torch.tensor([500, 500])
        eps_a = narrow.unet(latent, t, encoder_hidden_states=context, **extra).sample
        eps_b = wide.unet(latent, t, encoder_hidden_states=context, **extra).sample
        assert eps_a.dtype == torch.float32 and torch.equal(eps_a, eps_b)
        image_a, image_b = narrow.vae.decode(latent).sample, wide.vae.decode(latent).sample
        assert image_a.dtype == torch.float32 and torch.equal(image_a, image_b)
        assert torch.equal(narrow.vae.encode(image_a).latent_dist.mean, wide.vae.encode(image_a).latent_dist.mean)


def test_saving_gives_back_the_files_tensors(fp16_files):
    ckpt = load_checkpoint(fp16_files["sd1"], dtype=torch.float32)
    rewritten = ldm_state_dict(ckpt.family, ckpt.unet, ckpt.vae, ckpt.text_encoders)
    with safe_open(str(fp16_files["sd1"]), framework="pt") as f:
        assert set(f.keys()) == set(rewritten)
        for key in f.keys():
            assert torch.equal(f.get_tensor(key), rewritten[key].to(torch.float16)), key


def test_parts_choose_separately(fp16_files, tiny_checkpoints):
    ckpt = load_checkpoint(fp16_files["sd1"], dtype=torch.float32, keep_file_precision=("vae",))
    cast = {name: any(isinstance(m, CASTING) for m in model.modules()) for name, model in parts(ckpt).items()}
    assert cast == {"unet": False, "vae": True, "text0": False}
    # An fp32 file computing in fp16 is converted down at load: nothing is kept wider.
    ckpt = load_checkpoint(tiny_checkpoints.sd1, dtype=torch.float16)
    assert {p.dtype for model in parts(ckpt).values() for p in model.parameters()} == {torch.float16}
    assert not any(isinstance(m, CASTING) for model in parts(ckpt).values() for m in model.modules())


def test_standalone_vae_keeps_fp16(tmp_path, fp16_files, tiny_checkpoints):
    vae = load_vae(tiny_checkpoints.vae, dtype=torch.float32)
    assert not any(isinstance(m, CASTING) for m in vae.modules())  # an fp32 file: nothing to keep
    narrow = load_vae(fp16_files["sd1"], dtype=torch.float32)
    wide = load_vae(fp16_files["sd1"], dtype=torch.float32, keep_file_precision=False)
    assert any(isinstance(m, CASTING) for m in narrow.modules())
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.equal(narrow.decode(latent).sample, wide.decode(latent).sample)


def test_lora_on_a_narrow_model_equals_the_converted_one(fp16_files, tiny_checkpoints, tmp_path):
    """A LoRA computes in fp32 on either; the workflow's samples and conditioning agree."""
    tiny = tiny_checkpoints.models["sd1"]
    lora = write_kohya(random_lora(tiny.unet, tiny.text_encoders, seed=5), tmp_path / "l.safetensors")
    outputs = {}
    for keep in (None, ()):
        registry, runtime = model_env(tmp_path / f"env{keep is None}",
                                       {"checkpoints": {"base.safetensors": fp16_files["sd1"]},
                                        "loras": {"l.safetensors": lora}})
        if keep is not None:
            runtime.settings = dataclasses.replace(runtime.settings, keep_file_precision=keep)
        doc = base_doc()
        doc["L"] = lora_node(["1", 0], ["1", 1], "l.safetensors")
        branch(doc, "f", ["L", 0], ["L", 1])
        runs = Runs((registry, runtime))
        result = runs.run(doc)
        assert result.status == "success", result.error
        patched = runs.output("L", 0)
        assert {d.up.dtype for d in patched.patches[0].deltas.values()} == {torch.float32}
        outputs[keep is None] = (runs.output("fs")["samples"], runs.output("fp")[0][0])
    assert torch.allclose(outputs[True][0], outputs[False][0], rtol=1e-5, atol=1e-6)
    assert torch.equal(outputs[True][1], outputs[False][1])


def test_convert_weights_flag_reaches_the_loader(fp16_files, tmp_path):
    from graph.cli import _parser as cli_parser
    from latentgraph_server.config import config_from_args
    from nodes.sd.runtime_flags import device_settings

    args = cli_parser().parse_args(["run", "w.json", "--convert-weights-at-load"])
    assert device_settings(args).keep_file_precision == ()
    assert config_from_args(["--convert-weights-at-load"]).device_settings.keep_file_precision == ()
    assert config_from_args([]).device_settings.keep_file_precision is None
    registry, runtime = model_env(tmp_path, {"checkpoints": {"base.safetensors": fp16_files["sd1"]}})
    for keep, narrow in ((None, True), (device_settings(args).keep_file_precision, False)):
        runtime.settings = dataclasses.replace(runtime.settings, keep_file_precision=keep)
        runs = Runs((registry, runtime))
        assert runs.run(branch(base_doc(), "f", ["1", 0], ["1", 1])).status == "success"
        model, clip, vae = (runs.output("1", slot) for slot in range(3))
        for module in (model.unet, clip.encoders[0], vae.vae):
            assert any(isinstance(m, CASTING) for m in module.modules()) is narrow


def test_allocator_settings_are_accepted_by_glibc():
    import platform

    from nodes.sd.host_memory import return_free_memory, tune_allocator

    if platform.libc_ver()[0] != "glibc":
        assert tune_allocator() is False
    else:
        assert tune_allocator() is True
    return_free_memory()  # no error, and the process goes on allocating
    assert torch.ones(1 << 20).sum().item() == 1 << 20
