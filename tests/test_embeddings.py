"""Textual-inversion embeddings (``embedding:name``) on the tiny SD1 and SDXL checkpoints.

The reference for "inserting a vector" is independent of our hook: a copy of the text
encoder whose token-embedding rows for some ordinary words are overwritten with the
embedding's vectors, encoding a prompt that uses those words instead.
"""

import copy
import logging
import os
import shutil
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from graph import Executor, Folders, build_registry, prepare
from nodes.clip.embeddings import embedding_files_state, find_embedding
from nodes.conditioning import CLIPTextEncode
from nodes.models.folders import ModelFolders
from nodes.models.loader import load_checkpoint
from nodes.sd.handles import ClipHandle
from nodes.sd.runtime import DeviceSettings, Runtime
from nodes.sd.text_encode import encode_prompt

pytest_plugins = ["tests.fixtures.tiny_models"]
WIDTH = 32  # the tiny encoders' width


def _clip(path) -> ClipHandle:
    loaded = load_checkpoint(path)
    return ClipHandle(encoders=loaded.text_encoders, tokenizers=loaded.tokenizers,
                      layouts=loaded.text_encoder_layouts, family=loaded.family, device=loaded.device)


@pytest.fixture(scope="module")
def clips(tiny_checkpoints):
    return {"sd1": _clip(tiny_checkpoints.sd1), "sdxl": _clip(tiny_checkpoints.sdxl)}


@pytest.fixture()
def folder(tmp_path):
    (tmp_path / "embeddings").mkdir()
    return tmp_path / "embeddings"


def _vectors(n, seed, width=WIDTH):
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed)) * 0.05


def _plain_words(tokenizer, count, avoid=("a", "photo")):
    """``count`` lowercase words that are one token each, for by-hand insertion."""
    words = []
    for token, token_id in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        word = token[:-4]
        if not token.endswith("</w>") or not (word.isascii() and word.isalpha() and len(word) > 3):
            continue
        if word not in avoid and tokenizer(word, add_special_tokens=False)["input_ids"] == [token_id]:
            words.append(word)
        if len(words) == count:
            return words
    raise AssertionError("not enough single-token words")


def _by_hand(clip, vectors_per_encoder):
    """A CLIP whose encoders map some plain words to the given vectors, and those words."""
    words = _plain_words(clip.tokenizers[0], vectors_per_encoder[0].shape[0])
    encoders = []
    for encoder, tokenizer, vectors in zip(clip.encoders, clip.tokenizers, vectors_per_encoder, strict=True):
        encoder = copy.deepcopy(encoder)
        weight = encoder.get_input_embeddings().weight
        with torch.no_grad():
            for word, vector in zip(words, vectors, strict=True):
                (token_id,) = tokenizer(word, add_special_tokens=False)["input_ids"]
                weight[token_id] = vector
        encoders.append(encoder)
    return replace(clip, encoders=tuple(encoders)), " ".join(words)


def _same(a, b):
    return torch.allclose(a[0], b[0], atol=1e-5) and (a[1] is None or torch.allclose(a[1], b[1], atol=1e-5))


@pytest.mark.parametrize("weighting", ["{}", "({}:1.3)", "[{}]"])
def test_sd1_embedding_equals_the_vectors_inserted_by_hand(clips, folder, weighting):
    vectors = _vectors(3, 1)
    torch.save({"string_to_param": {"*": vectors}, "name": "emb", "step": 100}, folder / "emb.pt")  # A1111
    clip = clips["sd1"]
    with_embedding = encode_prompt(clip, "a " + weighting.format("embedding:emb") + " photo", [folder])
    reference_clip, words = _by_hand(clip, [vectors])
    reference = encode_prompt(reference_clip, "a " + weighting.format(words) + " photo", [])
    assert with_embedding[0].shape == (1, 77, WIDTH)
    assert _same(with_embedding, reference)
    assert not torch.allclose(with_embedding[0], encode_prompt(clip, "a photo", [folder])[0], atol=1e-3)


def test_sdxl_embedding_uses_clip_l_and_clip_g_for_each_encoder(clips, folder):
    clip_l, clip_g = _vectors(2, 2), _vectors(2, 3)
    save_file({"clip_g": clip_g, "clip_l": clip_l}, folder / "xl.safetensors")
    clip = clips["sdxl"]
    cond, pooled = encode_prompt(clip, "a embedding:xl photo", [folder])
    reference_clip, words = _by_hand(clip, [clip_l, clip_g])
    reference = encode_prompt(reference_clip, f"a {words} photo", [])
    assert cond.shape == (1, 77, 2 * WIDTH) and pooled.shape == (1, WIDTH)
    assert _same((cond, pooled), reference)
    swapped_clip, _ = _by_hand(clip, [clip_g, clip_l])
    assert not torch.allclose(cond, encode_prompt(swapped_clip, f"a {words} photo", [])[0], atol=1e-4)


def test_embedding_vectors_count_toward_the_77_token_chunks(clips, folder):
    # 74 filler tokens + a 3-vector embedding: one vector ends chunk 1, two start chunk 2.
    vectors = _vectors(3, 4)
    save_file({"emb_params": vectors}, folder / "long.safetensors")
    clip = clips["sd1"]
    filler = "a " * 74
    cond, _ = encode_prompt(clip, filler + "embedding:long photo", [folder])
    reference_clip, words = _by_hand(clip, [vectors])
    reference, _ = encode_prompt(reference_clip, filler + words + " photo", [])
    assert cond.shape == (1, 154, WIDTH)
    assert torch.allclose(cond, reference, atol=1e-5)
    # An embedding longer than a chunk: 80 vectors alone make two chunks.
    save_file({"emb_params": _vectors(80, 5)}, folder / "huge.safetensors")
    assert encode_prompt(clip, "embedding:huge", [folder])[0].shape == (1, 154, WIDTH)


@pytest.mark.parametrize("prompt", ["a embedding:one.safetensors photo", "a embedding:one, photo",
                                    "a embedding:nested photo", "a embedding:sub/nested photo"])
def test_names_with_extension_trailing_comma_and_subfolders(clips, folder, prompt):
    vector = _vectors(1, 6)
    save_file({"only": vector[0]}, folder / "one.safetensors")  # a single 1-D tensor under any key
    (folder / "sub").mkdir()
    save_file({"emb_params": vector}, folder / "sub" / "nested.safetensors")
    clip = clips["sd1"]
    reference_clip, word = _by_hand(clip, [vector])
    expected = prompt.replace("embedding:one.safetensors", word).replace("embedding:one", word)
    expected = expected.replace("embedding:sub/nested", word).replace("embedding:nested", word)
    assert _same(encode_prompt(clip, prompt, [folder]), encode_prompt(reference_clip, expected, []))


@pytest.mark.parametrize("name, message", [
    ("nope", "does not exist"),
    ("../escape", "leaves its folder"),
    ("wide", "width 48"),
    ("evil", "cannot read evil.pt"),
])
def test_unusable_embeddings_are_left_out_with_a_warning(clips, folder, caplog, name, message):
    save_file({"emb_params": _vectors(2, 7, width=48)}, folder / "wide.safetensors")
    torch.save({"payload": SimpleNamespace(x=1)}, folder / "evil.pt")  # refused by weights_only
    (folder.parent / "escape.safetensors").write_bytes(b"")
    clip = clips["sd1"]
    with caplog.at_level(logging.WARNING, logger="latentgraph.embeddings"):
        cond = encode_prompt(clip, f"a embedding:{name} photo", [folder])
    assert any(name.lstrip("./") in r.getMessage() and message in r.getMessage() for r in caplog.records), \
        caplog.text
    assert _same(cond, encode_prompt(clip, "a photo", [folder]))


def test_sd1_only_embedding_is_dropped_for_sdxl_with_a_warning(clips, folder, caplog):
    save_file({"clip_l": _vectors(2, 8)}, folder / "l_only.safetensors")
    save_file({"clip_l": _vectors(2, 8), "clip_x": _vectors(2, 9)}, folder / "ambiguous.safetensors")
    clip = clips["sdxl"]
    with caplog.at_level(logging.WARNING, logger="latentgraph.embeddings"):
        cond = encode_prompt(clip, "a embedding:ambiguous photo", [folder])
    assert "no tensor named 'clip_g'" in caplog.text
    assert _same(cond, encode_prompt(clip, "a photo", [folder]))
    # One tensor alone is used for both encoders when the widths fit (both tiny encoders are 32 wide;
    # a real SD1.5 embedding is 768 wide and SDXL's second encoder 1280, so it would be dropped).
    assert not torch.allclose(encode_prompt(clip, "a embedding:l_only photo", [folder])[0], cond[0], atol=1e-4)


def test_find_embedding_prefers_the_top_folder_and_known_extensions(folder):
    save_file({"emb_params": _vectors(1, 1)}, folder / "x.safetensors")
    torch.save({"emb_params": _vectors(1, 1)}, folder / "x.pt")
    (folder / "deep").mkdir()
    save_file({"emb_params": _vectors(1, 1)}, folder / "deep" / "y.safetensors")
    (folder / "notes.txt").write_text("x")
    assert find_embedding([folder], "x") == (folder / "x.safetensors").resolve()
    assert find_embedding([folder], "x.pt") == (folder / "x.pt").resolve()
    assert find_embedding([folder], "y") == (folder / "deep" / "y.safetensors").resolve()
    assert find_embedding([folder], "notes.txt") is None and find_embedding([folder], "z") is None
    assert find_embedding([folder / "missing", folder], "x") == (folder / "x.safetensors").resolve()


@pytest.fixture(scope="module")
def env(tiny_checkpoints, tmp_path_factory):
    root = tmp_path_factory.mktemp("embedding_env")
    (root / "models" / "checkpoints").mkdir(parents=True)
    (root / "models" / "embeddings").mkdir(parents=True)
    shutil.copy(tiny_checkpoints.sd1, root / "models" / "checkpoints" / "tiny_sd1.safetensors")
    runtime = Runtime(folders=Folders.under(root), models=ModelFolders(root / "models"), settings=DeviceSettings(device="cpu", dtype=torch.float32))
    return build_registry("nodes", None), runtime, root / "models" / "embeddings"


def test_clip_text_encode_reruns_when_an_embedding_file_changes(env):
    from graph.executor import _PromptRun

    registry, runtime, embeddings = env
    executor = Executor(folders=runtime.folders, runtime=runtime)
    document = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd1.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a embedding:style photo", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 16, "height": 16, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 1, "steps": 1, "cfg": 2.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }

    def run():
        checked = prepare(document, registry, runtime=runtime)
        assert checked.ok, checked.response()
        result = executor.execute(checked.plan)
        assert result.status == "success", result.error
        signatures = _PromptRun(executor, checked.plan, "sig", None, None, None)
        signatures._compute_signatures()
        cond = executor.cache.get(signatures.signatures["2"]).outputs[0][0][0][0]
        return "2" in result.executed, cond

    path = embeddings / "style.safetensors"
    ran, missing = run()  # the embedding does not exist yet: left out
    assert ran
    save_file({"emb_params": _vectors(2, 10)}, path)
    ran, first = run()
    assert ran and not torch.allclose(first, missing, atol=1e-4)
    ran, again = run()
    assert not ran and torch.equal(again, first)  # unchanged file: served from the cache
    save_file({"emb_params": _vectors(2, 11)}, path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    ran, changed = run()
    assert ran and not torch.allclose(changed, first, atol=1e-4)


def test_fingerprint_names_only_the_referenced_files(env):
    _, runtime, embeddings = env
    save_file({"emb_params": _vectors(1, 1)}, embeddings / "a1.safetensors")
    save_file({"emb_params": _vectors(1, 1)}, embeddings / "b1.safetensors")
    context = SimpleNamespace(runtime=runtime)
    assert CLIPTextEncode.fingerprint(context, text="no embeddings here") is None
    state = CLIPTextEncode.fingerprint(context, text="(embedding:a1:1.2) embedding:zz")
    assert [entry[0] for entry in state] == ["a1", "zz"] and state[1] == ["zz", None]
    linked = CLIPTextEncode.fingerprint(context)  # text comes from a link: every file counts
    assert {entry[1] for entry in linked} >= {"a1.safetensors", "b1.safetensors"}
    assert embedding_files_state([embeddings], ["a1"])[0][2] == (embeddings / "a1.safetensors").stat().st_size
