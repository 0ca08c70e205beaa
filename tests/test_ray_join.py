"""Machines joining and leaving a Ray cluster while the front server runs (server.py --ray).

One machine stands in for several: ``ray.cluster_utils.Cluster`` starts a head node and then
adds and removes real Ray nodes (each its own raylet and worker processes) on 127.0.0.1.
GPUs are Ray's logical resources here (a node declared with ``num_gpus=2`` has no device):
what is checked is the request (one whole GPU per worker) and Ray's placement, not CUDA.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import requests

from tests.server_support import REPO, ServerThread, make_config, submit, wait_history, wait_until

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # starts a Ray cluster of several nodes and their worker processes

PACKAGES = ["tests.engine_nodes", "tests.server_nodes", "tests.ray_nodes"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ray.cluster_utils import Cluster

    scratch = tmp_path_factory.mktemp("scratch")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 0, "include_dashboard": False})
    ray.init(address=cluster.address, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "LATENTGRAPH_WORKER_SCRATCH": str(scratch)}})
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def workers(server: ServerThread) -> list[dict[str, Any]]:
    return server.handlers.worker.health()["workers"]


def wait_idle(server: ServerThread, count: int, timeout: float = 180.0) -> list[dict[str, Any]]:
    wait_until(lambda: sum(w["state"] == "idle" for w in workers(server)) == count, timeout)
    return workers(server)


def wait_prompt(url: str) -> str:
    return submit(url, {"1": {"class_type": "Wait", "inputs": {"seconds": 0, "tag": 1}}})["prompt_id"]


def test_a_machine_that_joins_gets_workers_that_take_prompts_and_one_that_leaves_loses_them(cluster, tmp_path):
    config = make_config(tmp_path, cpu=True, node_packages=PACKAGES, ray_address="auto", ray_workers=0,
                         ray_max_workers=4, ray_worker_cpus=1.0)
    with ServerThread(config) as server:
        dispatcher = server.handlers.worker
        first = wait_idle(server, 2)  # the head's 2 CPUs: two workers
        assert len(first) == 2
        node = cluster.add_node(num_cpus=2)
        joined_at = time.monotonic()
        now = wait_idle(server, 4)
        joined = {w["name"] for w in now if w["node_id"] == node.node_id}
        assert len(joined) == 2 and not joined & {w["name"] for w in first}
        print(f"workers on the joined node ready in {time.monotonic() - joined_at:.1f} s")
        stats = requests.get(f"{server.url}/system_stats", timeout=10).json()["latentgraph"]["worker"]
        assert {w["name"] for w in stats["workers"]} == {w["name"] for w in now}
        assert all(w["device"] == "cpu" and w["host"] and w["state"] == "idle" for w in stats["workers"])
        # Four prompts at once: each worker takes one, the joined ones too.
        ids = [submit(server.url, {"1": {"class_type": "Wait", "inputs": {"seconds": 3.0, "tag": 40 + i}}})
               ["prompt_id"] for i in range(4)]
        entries = [wait_history(server.url, prompt_id, 60) for prompt_id in ids]
        assert [e["outputs"]["1"]["value"] for e in entries] == [[40 + i] for i in range(4)]
        ran_on = [dispatcher.placements[prompt_id] for prompt_id in ids]
        assert all(len(runs) == 1 for runs in ran_on)
        assert {runs[0] for runs in ran_on} == {w["name"] for w in now}
        # The machine leaves: its workers are dropped and, with no room for them, not replaced.
        cluster.remove_node(node)
        wait_until(lambda: [(w["name"], w["state"]) for w in workers(server)] == [(w["name"], "idle") for w in first],
                   120)
        time.sleep(3 * 2.0)  # a few housekeeping rounds: no worker is started without room for it
        assert [w["name"] for w in workers(server)] == [w["name"] for w in first], workers(server)
        assert dispatcher.lost_workers >= 2
        assert wait_history(server.url, wait_prompt(server.url), 30)["status"]["status_str"] == "success"


def test_gpu_workers_wait_for_a_gpu_machine_and_get_one_gpu_each(cluster, tmp_path):
    config = make_config(tmp_path, cpu=False, node_packages=PACKAGES, ray_address="auto", ray_workers=0,
                         ray_worker_cpus=1.0, ray_worker_gpus=1.0)
    with ServerThread(config) as server:
        wait_until(lambda: len(workers(server)) == 1, 30)
        time.sleep(3.0)
        assert [w["state"] for w in workers(server)] == ["starting"]  # no GPU in the cluster yet: it waits
        node = cluster.add_node(num_cpus=2, num_gpus=2)
        now = wait_idle(server, 2)
        assert all(w["node_id"] == node.node_id for w in now)
        gpus = sorted(re.search(r"Ray GPU (\S+)\)", w["device"]).group(1) for w in now)
        assert gpus == ["0", "1"]  # one whole GPU each, not shared
        entry = wait_history(server.url, wait_prompt(server.url), 60)
        assert entry["status"]["status_str"] == "success"
