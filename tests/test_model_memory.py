"""Model memory: the cache's "models" pool, POST /free, VRAM offload policy (with fakes), dtype settings."""

from __future__ import annotations

import gc
import time

import pytest
import requests
import torch

from graph import Executor, NodeRegistry, OutputCache, prepare
from graph.cli import _parser as cli_parser
from latentgraph_server.config import config_from_args
from nodes.sd.device import resolve_dtype
from nodes.sd.memory import DeviceModels, choose_offload
from nodes.sd.runtime import DeviceSettings, Runtime
from nodes.sd.runtime_flags import device_settings
from tests.engine_nodes import TEST_NODES
from tests.memory_nodes import FakeModel, FakeModelLoader, ModelName
from tests.server_support import TEST_PACKAGES, ServerThread, make_config


def model_entry(cache, key, size):
    return cache.put(key, [[FakeModel(key, size)]], None)


def test_model_pool_budget_evicts_least_recently_used_models_only():
    cache = OutputCache(budget_bytes=10**9, pool_budgets={"models": 2500})
    cache.put("image", [[b"x" * 5000]], None)
    for key in ("a", "b"):
        model_entry(cache, key, 1000)
    cache.get("a")  # a is now more recent than b
    model_entry(cache, "c", 1000)
    assert "b" not in cache and {"a", "c", "image"} <= set(cache._entries)
    assert cache.pool_bytes("models") == sum(e.size_bytes for e in cache._entries.values() if e.pool == "models")


def test_drop_pool_keeps_other_outputs():
    cache = OutputCache()
    image = cache.put("image", [[b"x" * 100]], None)
    model_entry(cache, "a", 1000)
    assert cache.pool_bytes("models") > 1000
    assert cache.drop_pool("models") == 1
    assert "a" not in cache and "image" in cache
    assert cache.pool_bytes("models") == 0 and cache.total_bytes == image.size_bytes


def test_loaded_model_is_reused_across_prompts_until_its_pool_is_dropped():
    registry = NodeRegistry()
    for cls in (*TEST_NODES, FakeModelLoader, ModelName):
        registry.register(cls)
    def document(suffix):
        return {"1": {"class_type": "FakeModelLoader", "inputs": {"name": "sd", "size": 4000}},
                "2": {"class_type": "ModelName", "inputs": {"model": ["1", 0], "suffix": suffix}},
                "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}}}

    executor = Executor(OutputCache(pool_budgets={"models": 10_000}))
    assert executor.execute(prepare(document("a"), registry).plan).executed == ["1", "2", "3"]
    assert executor.execute(prepare(document("b"), registry).plan).executed == ["2", "3"]  # model kept
    executor.cache.drop_pool("models")
    result = executor.execute(prepare(document("c"), registry).plan)
    assert result.executed == ["1", "2", "3"] and result.outputs["3"] == {"value": ["sdc"]}


@pytest.fixture
def memory_server(tmp_path):
    config = make_config(tmp_path, node_packages=[*TEST_PACKAGES, "tests.memory_nodes"], model_cache_budget=10**6)
    with ServerThread(config) as server:
        yield server


def wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_post_free_unloads_models_then_frees_everything(memory_server):
    url, handlers = memory_server.url, memory_server.handlers
    emptied = []
    release = handlers.engine.runtime.release
    handlers.engine.runtime.release = lambda **kw: (emptied.append(kw), release(**kw))  # what the worker calls
    prompt = {"1": {"class_type": "FakeModelLoader", "inputs": {"name": "m", "size": 5000}},
              "2": {"class_type": "ModelName", "inputs": {"model": ["1", 0], "suffix": ""}},
              "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}}}
    reply = requests.post(f"{url}/prompt", json={"prompt": prompt}).json()
    wait_until(lambda: requests.get(f"{url}/history/{reply['prompt_id']}").json())
    cache = handlers.engine.cache
    assert cache.pool_bytes("models") >= 5000 and cache.pool_budgets == {"models": 10**6}
    others = len(cache) - 1

    assert requests.post(f"{url}/free", json={"unload_models": True}).status_code == 200
    wait_until(lambda: emptied)
    assert emptied == [{"unload_models": True}]
    assert cache.pool_bytes("models") == 0 and len(cache) == others > 0

    assert requests.post(f"{url}/api/free", json={"free_memory": True}).status_code == 200
    wait_until(lambda: len(emptied) == 2)
    assert len(cache) == 0


def test_choose_offload_takes_least_recently_used_until_enough():
    resident = [("a", 100, 5), ("b", 300, 1), ("c", 200, 3)]
    assert choose_offload(resident, 250) == ["b"]
    assert choose_offload(resident, 301) == ["b", "c"]
    assert choose_offload(resident, 0) == []
    assert choose_offload(resident, 10_000) == ["b", "c", "a"]


class FakeGpu:
    """Modules are plain objects with a size and a device name; the GPU has a capacity."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.modules = []
        self.emptied = 0

    def module(self, name, size):
        module = type("FakeModule", (), {})()
        module.name, module.size, module.device = name, size, "cpu"
        self.modules.append(module)
        return module

    def manager(self, reserve=0):
        return DeviceModels(
            "cuda", reserve_bytes=reserve,
            free_bytes=lambda: self.capacity - sum(m.size for m in self.modules if m.device == "cuda"),
            size_of=lambda m: m.size, is_on=lambda m, device: m.device == device.type,
            move=lambda m, device: setattr(m, "device", device.type), empty_cache=self.count_empty)

    def count_empty(self):
        self.emptied += 1


def test_offloads_least_recently_used_other_model_when_vram_is_short():
    gpu = FakeGpu(capacity=10)
    manager = gpu.manager()
    unet, clip, vae = gpu.module("unet", 4), gpu.module("clip", 4), gpu.module("vae", 4)
    assert manager.use([clip]) == [] and manager.use([unet]) == []
    assert manager.use([vae]) == [clip]  # clip was used before unet
    assert (unet.device, clip.device, vae.device) == ("cuda", "cpu", "cuda") and gpu.emptied == 1
    assert manager.use([clip]) == [unet]  # moved back on use; now the unet is the oldest
    assert clip.device == "cuda" and [m.name for m in manager.resident()] == ["vae", "clip"]


def test_working_memory_and_reserve_count_and_used_modules_stay():
    gpu = FakeGpu(capacity=10)
    manager = gpu.manager(reserve=2)
    a, b, c = gpu.module("a", 3), gpu.module("b", 3), gpu.module("c", 3)
    manager.use([a])
    manager.use([b])
    assert manager.use([b]) == []  # b already there: needs only the reserve
    assert manager.use([a, b], working_bytes=2) == []  # free 4 >= 2 + 2
    assert manager.use([a, c]) == [b]  # needs c (3) + reserve (2) with 4 free: b goes, a stays
    assert manager.use([a], working_bytes=100) == [c]  # not enough even so: all others go, a runs anyway
    assert a.device == "cuda"


def test_no_room_needed_moves_nothing_out():
    gpu = FakeGpu(capacity=100)
    manager = gpu.manager()
    modules = [gpu.module(str(i), 10) for i in range(5)]
    for module in modules:
        assert manager.use([module]) == []
    assert all(m.device == "cuda" for m in modules) and gpu.emptied == 0


def test_collected_modules_are_forgotten():
    gpu = FakeGpu(capacity=10)
    manager = gpu.manager()
    manager.use([gpu.module("a", 4)])
    gpu.modules.clear()
    gc.collect()
    assert manager.resident() == [] and manager._tracked == {}


def test_placement_uses_the_gpu_manager_for_cuda_handles_only():
    calls = []

    class Recorder:
        def use(self, modules, working_bytes=0):
            calls.append((list(modules), working_bytes))

    class Handle:
        def __init__(self, device, *modules):
            self.device, self._modules = torch.device(device), modules

        def modules(self):
            return self._modules

    runtime = Runtime(device_models=Recorder())
    with runtime.placed(Handle("cpu", "unet")):
        pass
    assert calls == []
    with runtime.placed(Handle("cuda", "unet"), Handle("cuda", "te1", "te2"), working_bytes=5):
        assert calls == [(["unet", "te1", "te2"], 5)]  # placed before the body runs
    with Runtime().placed(Handle("cuda", "unet")):  # no manager (no CUDA): nothing to do
        pass
    assert len(calls) == 1


def test_the_gpu_manager_takes_the_reserve_from_the_settings_once(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    runtime = Runtime(settings=DeviceSettings(reserve_vram=7))
    runtime.start()
    assert isinstance(runtime.device_models, DeviceModels) and runtime.device_models.reserve_bytes == 7
    assert Runtime(settings=DeviceSettings(force_cpu=True)).device_models is None


def test_dtype_settings():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")

    def part_dtypes(device, **settings):
        return Runtime(settings=DeviceSettings(**settings)).part_dtypes(device)

    assert set(part_dtypes(cpu).values()) == {torch.float32}
    assert set(part_dtypes(cuda).values()) == {torch.float16}
    mixed = part_dtypes(cpu, dtype="fp16", unet_dtype="bf16", vae_dtype="fp32")
    assert mixed == {"unet": torch.bfloat16, "vae": torch.float32, "text": torch.float16}
    assert resolve_dtype(torch.float16, cpu) == torch.float16
    with pytest.raises(ValueError, match="fp8"):
        resolve_dtype("fp8", cpu)


def test_precision_flags_of_the_cli_and_the_server():
    args = cli_parser().parse_args(["run", "w.json", "--cpu", "--force-fp16", "--bf16-unet", "--reserve-vram", "1"])
    assert device_settings(args) == DeviceSettings(force_cpu=True, dtype="fp16", unet_dtype="bf16",
                                                   reserve_vram=1024**3)
    with pytest.raises(SystemExit):
        cli_parser().parse_args(["run", "w.json", "--force-fp16", "--force-fp32"])
    config = config_from_args(["--fp32-vae", "--model-cache-budget", "123"])
    assert config.device_settings == DeviceSettings(vae_dtype="fp32") and config.model_cache_budget == 123
    assert config_from_args([]).device_settings == DeviceSettings() and config_from_args([]).model_cache_budget is None
    with pytest.raises(SystemExit):
        config_from_args(["--model-cache-budget", "-1"])
