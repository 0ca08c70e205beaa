"""The front server's side of a Ray worker, driven by a fake actor (no Ray instance started):
what a client receives when a prompt's worker is lost and the prompt runs again, the files
that stay, the history written, and the resources each worker asks Ray for."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")

from ray import exceptions as ray_errors  # noqa: E402

from graph import Folders  # noqa: E402
from latentgraph_server import ray_dispatch, ray_lane  # noqa: E402
from latentgraph_server.queue_store import QueueStore  # noqa: E402
from latentgraph_server.ray_files import Announced  # noqa: E402
from latentgraph_server.ray_lane import RayLane, WorkerLost  # noqa: E402
from latentgraph_server.ray_workers import actor_options  # noqa: E402
from tests.server_support import make_config  # noqa: E402

PROMPT = {"1": {"class_type": "SaveTestImage", "inputs": {"red": 5, "filename_prefix": "p"}},
          "2": {"class_type": "Wait", "inputs": {"seconds": 4.0, "tag": 1}}}


class FakeActor:
    """An actor whose ``run`` streams the given batches (then dies, if ``dies``)."""

    def __init__(self, batches: list[list[tuple[Any, ...]]], dies: bool = False) -> None:
        self.batches = batches
        self.dies = dies
        self.interrupted: list[str] = []
        self.info = types.SimpleNamespace(remote=lambda: None)
        self.interrupt = types.SimpleNamespace(remote=self.interrupted.append)
        self.run = types.SimpleNamespace(remote=self._stream)

    def _stream(self, payload: dict[str, Any], files: dict[str, bytes]):
        yield from self.batches
        if self.dies:
            raise ray_errors.RayActorError()


def image(name: str, kind: str = "output") -> dict[str, Any]:
    return {"images": [{"filename": name, "subfolder": "", "type": kind}]}


def executed(node: str, output: dict[str, Any]) -> tuple[Any, ...]:
    return ("event", "executed", {"node": node, "display_node": node, "output": output, "prompt_id": "P"})


def event(name: str, **data: Any) -> tuple[Any, ...]:
    return ("event", name, {**data, "prompt_id": "P"})


@pytest.fixture
def front(tmp_path, monkeypatch):
    monkeypatch.setattr(ray_lane.ray, "get", lambda ref: ref)  # a "ref" here is the batch itself
    folders = Folders(tmp_path / "input", tmp_path / "output", tmp_path / "temp")
    for folder in (folders.input, folders.output, folders.temp):
        folder.mkdir()
    engine = types.SimpleNamespace(folders=folders, take=lambda prompt_id: None, release=lambda: None)
    store = QueueStore(tmp_path / "queue.sqlite3")
    sent: list[tuple[str, dict[str, Any]]] = []
    announced = Announced()

    def lane(actor: FakeActor, name: str) -> RayLane:
        return RayLane(name, actor, store, engine, lambda client, kind, data: sent.append((kind, data)),
                       lambda *frames: None, lambda: None, "none", announced)

    store.add("P", PROMPT, {}, [], "client")
    yield types.SimpleNamespace(store=store, sent=sent, lane=lane, folders=folders, announced=announced)
    store.close()


def lost_run() -> FakeActor:
    """The first worker: saves p_00001_.png (announced), writes a temp file it never names, dies in node 2."""
    return FakeActor([[event("execution_start", timestamp=1)], [event("executing", node="1", display_node="1")],
                      [("file", "output", "", "p_00001_.png", b"first")],
                      [executed("1", image("p_00001_.png"))], [event("executing", node="2", display_node="2")],
                      [("file", "temp", "", "scratch.png", b"unnamed")]], dies=True)


def test_a_re_run_sends_no_second_executed_and_keeps_the_files_the_client_was_given(front):
    item = front.store.claim_next()
    with pytest.raises(WorkerLost) as lost:
        front.lane(lost_run(), "w0")._run(item)
    assert lost.value.started
    assert (front.folders.output / "p_00001_.png").read_bytes() == b"first"  # named in an `executed`: kept
    assert not (front.folders.temp / "scratch.png").exists()  # never named: removed
    front.store.requeue("P")
    # The second worker counts its own names: its p_00001_.png lands at the front as p_00002_.png.
    rerun = FakeActor([[event("execution_start", timestamp=2)], [event("executing", node="1", display_node="1")],
                       [("file", "output", "", "p_00001_.png", b"second")], [executed("1", image("p_00001_.png"))],
                       [event("executing", node="2", display_node="2")], [executed("2", {"value": [1]})],
                       [event("execution_success", timestamp=3)],
                       [("done", {"1": image("p_00001_.png"), "2": {"value": [1]}},
                         {"status_str": "success", "completed": True, "messages": []}, {"2": {"node_id": "2"}},
                         {"name": "w1"})]])
    front.lane(rerun, "w1")._run(front.store.claim_next())
    kinds = [(kind, data.get("node")) for kind, data in front.sent if kind != "progress_state"]
    assert kinds == [("execution_start", None), ("executing", "1"), ("executed", "1"), ("executing", "2"),
                     ("execution_start", None), ("executing", "1"), ("executing", "2"), ("executed", "2"),
                     ("execution_success", None), ("executing", None)]
    outputs = [data["output"] for kind, data in front.sent if kind == "executed"]
    assert outputs[0] == image("p_00001_.png")
    assert sorted(p.name for p in front.folders.output.iterdir()) == ["p_00001_.png"]  # the re-run's copy went
    assert (front.folders.output / "p_00001_.png").read_bytes() == b"first"
    history = front.store.history_item("P")["P"]
    assert history["outputs"] == {"1": image("p_00001_.png"), "2": {"value": [1]}}
    assert set(history["meta"]) == {"1", "2"}
    assert front.announced.get("P") == {}  # forgotten once the prompt ended


def test_a_prompt_failed_after_its_last_lost_run_keeps_the_outputs_its_client_got(front, tmp_path, monkeypatch):
    monkeypatch.setattr(ray_dispatch, "_kill", lambda actor: None)
    config = make_config(tmp_path, ray_max_tries=1)
    dispatcher = ray_dispatch.RayDispatcher(config, front.store, front.lane(FakeActor([]), "x").engine,
                                            lambda client, kind, data: front.sent.append((kind, data)),
                                            lambda *frames: None, lambda: None)
    dispatcher.announced = front.announced
    lane = front.lane(lost_run(), "w0")
    item = front.store.claim_next()
    with pytest.raises(WorkerLost) as lost:
        lane._run(item)
    dispatcher._lost(lane, item, lost.value)
    history = front.store.history_item("P")["P"]
    assert history["status"]["status_str"] == "error"
    assert dict(history["status"]["messages"])["execution_error"]["exception_type"] == "WorkerLost"
    assert history["outputs"] == {"1": image("p_00001_.png")}
    assert (front.folders.output / "p_00001_.png").is_file()
    assert [kind for kind, _ in front.sent][-2:] == ["execution_error", "executing"]


def test_gpu_workers_ask_ray_for_one_whole_gpu_each(tmp_path, monkeypatch):
    """On a cluster with GPUs, each worker actor is created with num_gpus=1 and there is one per
    GPU (no GPU is needed to check the request; tests/test_ray_join.py checks Ray's placement)."""
    monkeypatch.setattr(ray_dispatch.ray, "cluster_resources", lambda: {"CPU": 64.0, "GPU": 4.0})
    created: list[tuple[float, float]] = []

    def fake_runner(num_cpus: float, num_gpus: float):
        created.append((num_cpus, num_gpus))
        return types.SimpleNamespace(remote=lambda config, name: FakeActor([]))

    monkeypatch.setattr(ray_dispatch, "remote_runner", fake_runner)
    folders = Folders(tmp_path / "i", tmp_path / "o", tmp_path / "t")
    engine = types.SimpleNamespace(folders=folders)

    def dispatcher(**settings: Any) -> ray_dispatch.RayDispatcher:
        config = make_config(tmp_path, ray_address="auto", ray_worker_cpus=2.0, **settings)
        return ray_dispatch.RayDispatcher(config, None, engine, lambda *a: None, lambda *a: None, lambda: None)

    gpu = dispatcher()
    assert gpu._wanted() == 4
    for _ in range(gpu._wanted()):
        gpu._add_lane()
    assert created == [(2.0, 1.0)] * 4
    assert dispatcher(cpu=True)._gpus_each() == 0.0  # --cpu: no GPU asked for
    assert dispatcher(ray_worker_gpus=0.5)._wanted() == 8
    assert dispatcher(ray_max_workers=3)._wanted() == 3
    assert dispatcher(ray_workers=2)._wanted() == 2
    options = actor_options(2.0, 1.0)
    assert (options["num_cpus"], options["num_gpus"], options["max_restarts"]) == (2.0, 1.0, 0)


def test_front_paths_are_resolved_for_comparison(tmp_path: Path):
    from latentgraph_server.ray_files import named_files

    roots = {"output": tmp_path / "out", "temp": tmp_path / "tmp"}
    value = [{"images": [image("a.png")["images"][0], {"filename": "b.png", "subfolder": "s", "type": "temp"},
                         {"filename": "../x.png", "subfolder": "", "type": "output"},
                         {"filename": "c.png", "subfolder": "", "type": "input"}]}]
    assert named_files(value, roots) == {(tmp_path / "out" / "a.png").resolve(),
                                         (tmp_path / "tmp" / "s" / "b.png").resolve()}
