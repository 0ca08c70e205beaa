"""The parts of the Ray scale-out that need no Ray: file shipping, renames, routing."""

from __future__ import annotations

import io
import random
from pathlib import Path

from latentgraph_server.previews import preview_frames
from latentgraph_server.ray_files import (
    EncodedImage,
    FileNames,
    FolderWatch,
    InputTracker,
    place_file,
    prompt_inputs,
    write_inputs,
)
from latentgraph_server.ray_routing import (
    Candidate,
    choose,
    gpus_per_worker,
    model_candidates,
    node_key,
    wanted_workers,
)


def test_prompt_inputs_names_only_files_inside_the_input_folder(tmp_path):
    inputs = tmp_path / "input"
    (inputs / "sub").mkdir(parents=True)
    (inputs / "a.png").write_bytes(b"a")
    (inputs / "sub" / "b.png").write_bytes(b"b")
    (tmp_path / "secret.txt").write_text("no")
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
              "2": {"class_type": "LoadImage", "inputs": {"image": "sub/b.png [input]"}},
              "3": {"class_type": "X", "inputs": {"path": "../secret.txt", "abs": str(tmp_path / "secret.txt"),
                                                  "link": ["1", 0], "missing": "nope.png", "n": 3}}}
    found = prompt_inputs(prompt, inputs)
    assert sorted(found) == ["a.png", "sub/b.png"]


def test_input_tracker_sends_a_file_again_only_when_it_changed(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"one")
    tracker = InputTracker()
    assert tracker.to_send({"a.png": path}) == {"a.png": b"one"}
    assert tracker.to_send({"a.png": path}) == {}
    path.write_bytes(b"three")
    assert tracker.to_send({"a.png": path}) == {"a.png": b"three"}
    tracker.forget()  # a new worker holds nothing
    assert tracker.to_send({"a.png": path}) == {"a.png": b"three"}
    write_inputs(tmp_path / "worker", {"sub/a.png": b"x", "../escape.png": b"y"})
    assert (tmp_path / "worker" / "sub" / "a.png").read_bytes() == b"x"
    assert not (tmp_path / "escape.png").exists()


def test_folder_watch_reports_new_and_changed_files_once(tmp_path):
    output, temp = tmp_path / "output", tmp_path / "temp"
    output.mkdir()
    temp.mkdir()
    (output / "old.png").write_bytes(b"old")
    watch = FolderWatch({"output": output, "temp": temp})
    assert watch.changes() == []  # what was there at start-up is not shipped
    (output / "sub").mkdir()
    (output / "sub" / "x_00001_.png").write_bytes(b"new")
    (temp / "p.png").write_bytes(b"t")
    assert sorted(watch.changes()) == [("output", "sub", "x_00001_.png", b"new"), ("temp", "", "p.png", b"t")]
    assert watch.changes() == []
    (output / "old.png").write_bytes(b"changed")
    assert watch.changes() == [("output", "", "old.png", b"changed")]


def test_placed_files_take_the_next_free_counter_and_references_follow(tmp_path):
    roots = {"output": tmp_path / "output", "temp": tmp_path / "temp"}
    roots["output"].mkdir()
    (roots["output"] / "img_00001_.png").write_bytes(b"earlier")
    (roots["output"] / "img_00002_.png").write_bytes(b"earlier")
    names = FileNames()
    target = place_file(roots, "output", "", "img_00001_.png", b"from a worker")
    assert target is not None and target.name == "img_00003_.png" and target.read_bytes() == b"from a worker"
    names.set("output", "", "img_00001_.png", target.name)
    other = place_file(roots, "output", "sub", "plain.bin", b"1")
    assert other == (roots["output"] / "sub" / "plain.bin").resolve()
    assert place_file(roots, "output", "sub", "plain.bin", b"2").name == "plain-2.bin"
    assert place_file(roots, "output", "../..", "x.png", b"no") is None
    assert place_file(roots, "input", "", "x.png", b"no") is None
    event = {"node": "3", "output": {"images": [{"filename": "img_00001_.png", "subfolder": "", "type": "output"},
                                                {"filename": "img_00001_.png", "subfolder": "", "type": "input"}]}}
    rewritten = names.rewrite(event)
    assert rewritten["output"]["images"][0]["filename"] == "img_00003_.png"
    assert rewritten["output"]["images"][1]["filename"] == "img_00001_.png"  # inputs are never shipped back
    assert event["output"]["images"][0]["filename"] == "img_00001_.png"  # the original is left alone


def test_encoded_preview_is_sent_as_encoded():
    jpeg = b"\xff\xd8fake jpeg"
    frames = preview_frames({"image": EncodedImage(jpeg, "JPEG"), "node": "2", "prompt_id": "p"})
    assert frames is not None and frames[0].endswith(jpeg) and frames[1].endswith(jpeg)
    buffer = io.BytesIO()
    EncodedImage(b"png", "PNG").convert("RGB").save(buffer, format="PNG")
    assert buffer.getvalue() == b"png"


def test_routing_prefers_the_model_holder_then_least_to_evict():
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
              "2": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 1}}}
    keys = set(model_candidates(prompt))
    a_key = node_key("CheckpointLoaderSimple", {"ckpt_name": "a.safetensors"})
    assert keys == {a_key}  # linked nodes are not model candidates
    holder = Candidate("holder", {a_key}, cached_bytes=10**9, idle_since=5)
    empty = Candidate("empty", set(), cached_bytes=0, idle_since=1)
    small = Candidate("small", {"other"}, cached_bytes=10, idle_since=0)
    assert choose([empty, holder, small], keys).name == "holder"
    other = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "b.safetensors"}}}
    assert choose([holder, small, empty], set(model_candidates(other))).name == "empty"
    assert choose([Candidate("late", idle_since=9), Candidate("early", idle_since=2)], set()).name == "early"
    picked = {choose([holder, empty, small], keys, "random", random.Random(seed)).name for seed in range(20)}
    assert picked == {"holder", "empty", "small"}


def test_no_path_outside_the_roots(tmp_path: Path):
    roots = {"output": tmp_path / "out", "temp": tmp_path / "tmp"}
    assert place_file(roots, "output", "", "a/b.png", b"x") is None
    assert place_file(roots, "temp", "/etc", "x.png", b"x") is None


def test_scratch_folders_of_finished_workers_are_swept(tmp_path):
    import os
    import subprocess
    import sys

    from latentgraph_server.ray_workers import sweep_scratch

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    gone = tmp_path / f"latentgraph-worker-w3-{int(finished.stdout)}"
    mine = tmp_path / f"latentgraph-worker-w4-{os.getpid()}"
    other = tmp_path / "latentgraph-worker-notes"
    for folder in (gone / "output", mine / "output", other):
        folder.mkdir(parents=True)
    assert sweep_scratch(tmp_path) == [gone]
    assert not gone.exists() and mine.exists() and other.exists()


def test_workers_wanted_follow_the_cluster_s_resources(tmp_path):
    from latentgraph_server.config import config_from_args

    cpu_only, gpus = {"CPU": 6.0}, {"CPU": 32.0, "GPU": 3.0}
    assert wanted_workers(cpu_only, 0, 1.0, 0.0) == 1  # without GPUs: one worker, unless a bound is given
    assert wanted_workers(cpu_only, 0, 2.0, 0.0, max_workers=8) == 3  # one per 2 CPUs
    assert wanted_workers({"CPU": 10.0}, 0, 2.0, 0.0, max_workers=4) == 4  # ... never above the bound
    assert wanted_workers(gpus, 0, 1.0, 1.0) == 3 and wanted_workers(gpus, 0, 1.0, 1.0, max_workers=2) == 2
    assert wanted_workers(gpus, 0, 1.0, 0.5) == 6
    assert wanted_workers(cpu_only, 0, 1.0, 1.0) == 1  # GPU workers wanted, none yet: one waits for a GPU
    assert wanted_workers(gpus, 5, 1.0, 1.0) == 5  # --ray-workers fixes the number
    assert gpus_per_worker(gpus, False, None) == 1.0 and gpus_per_worker(cpu_only, False, None) == 0.0
    assert gpus_per_worker(gpus, True, 1.0) == 0.0 and gpus_per_worker(cpu_only, False, 0.25) == 0.25
    config = config_from_args(["--base-directory", str(tmp_path), "--ray", "auto", "--ray-max-workers", "3"])
    assert config.ray_max_workers == 3 and config.ray_workers == 0
