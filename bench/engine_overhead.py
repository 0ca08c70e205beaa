"""Engine overhead: what parse + validate + plan + execute costs per node.

Two graph shapes of trivial nodes, each at several sizes:
  - chain:  N ``AddOne`` nodes, each feeding the next, ending in one output node;
  - fan-in: N/2 ``Constant`` nodes reduced by a balanced binary tree of ``Add`` nodes
    (nodes have fixed inputs, as in ComfyUI), ending in one output node.

For each: the first run (empty cache) and a fully cached re-run of the same document,
as microseconds per node, and as a ratio over the baseline: calling the same node
``execute`` functions directly in a Python loop, measured in the same run. The cached
re-run is timed twice: as a client sees it (``prepare`` finds the document in its memo of
prepared plans) and with the memo off (``Engine.prepare(..., memo=False)``: parse, validate and
plan again, as for an edited document whose nodes are all still in the output cache).

    python bench/engine_overhead.py [--sizes 1000,10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from graph import Engine, Input, Node, NodeRegistry, NodeResult, Output  # noqa: E402


class Constant(Node):
    value = Input("INT", default=0, min=-(2**62), max=2**62)
    outputs = (Output("INT"),)

    def execute(self, value):
        return (value,)


class AddOne(Node):
    value = Input("INT")
    outputs = (Output("INT"),)

    def execute(self, value):
        return (value + 1,)


class Add(Node):
    a = Input("INT")
    b = Input("INT")
    outputs = (Output("INT"),)

    def execute(self, a, b):
        return (a + b,)


class Report(Node):
    output_node = True
    value = Input("INT")
    outputs = ()

    def execute(self, value):
        return NodeResult(ui={"value": [value]})


def chain_document(size: int) -> dict:
    doc = {"0": {"class_type": "Constant", "inputs": {"value": 1}}}
    for i in range(1, size):
        doc[str(i)] = {"class_type": "AddOne", "inputs": {"value": [str(i - 1), 0]}}
    doc["out"] = {"class_type": "Report", "inputs": {"value": [str(size - 1), 0]}}
    return doc


def fan_in_document(size: int) -> dict:
    doc = {}
    layer = []
    for i in range(size // 2):
        doc[f"c{i}"] = {"class_type": "Constant", "inputs": {"value": i}}
        layer.append(f"c{i}")
    counter = 0
    while len(layer) > 1:
        next_layer = []
        for left, right in zip(layer[::2], layer[1::2], strict=False):
            node_id = f"a{counter}"
            counter += 1
            doc[node_id] = {"class_type": "Add", "inputs": {"a": [left, 0], "b": [right, 0]}}
            next_layer.append(node_id)
        if len(layer) % 2:
            next_layer.append(layer[-1])
        layer = next_layer
    doc["out"] = {"class_type": "Report", "inputs": {"value": [layer[0], 0]}}
    return doc


def direct_chain(size: int) -> int:
    """Baseline: the same node functions called in a plain loop."""
    value = Constant().execute(1)[0]
    add_one = AddOne()
    for _ in range(1, size):
        value = add_one.execute(value)[0]
    return Report().execute(value).ui["value"][0]


def direct_fan_in(size: int) -> int:
    constant, add = Constant(), Add()
    layer = [constant.execute(i)[0] for i in range(size // 2)]
    while len(layer) > 1:
        next_layer = [add.execute(a, b)[0] for a, b in zip(layer[::2], layer[1::2], strict=False)]
        if len(layer) % 2:
            next_layer.append(layer[-1])
        layer = next_layer
    return Report().execute(layer[0]).ui["value"][0]


def time_engine(engine: Engine, document: dict, memo: bool = True) -> tuple[float, object]:
    start = time.perf_counter()
    checked = engine.prepare(document, memo=memo)
    result = engine.execute(checked.plan)
    return time.perf_counter() - start, result


def measure(shape: str, size: int, repeat: int, registry: NodeRegistry) -> dict:
    make, direct = {"chain": (chain_document, direct_chain), "fan-in": (fan_in_document, direct_fan_in)}[shape]
    document = make(size)
    nodes = len(document)
    firsts, cached, unmemoised, baselines = [], [], [], []
    for _ in range(repeat):
        engine = Engine(registry)  # an empty memo and output cache
        seconds, first = time_engine(engine, document)
        firsts.append(seconds)
        seconds, again = time_engine(engine, document)
        cached.append(seconds)
        seconds, fresh = time_engine(engine, document, memo=False)
        unmemoised.append(seconds)
        assert len(first.executed) == nodes and again.executed == [] == fresh.executed, "cache did not behave"
        assert first.outputs["out"]["value"][0] == direct(size)
        start = time.perf_counter()
        direct(size)
        baselines.append(time.perf_counter() - start)
    first_s, cached_s, fresh_s, base_s = (statistics.median(v) for v in (firsts, cached, unmemoised, baselines))
    return {
        "shape": shape, "nodes": nodes,
        "first_us_per_node": first_s / nodes * 1e6,
        "cached_us_per_node": cached_s / nodes * 1e6,
        "cached_no_memo_us_per_node": fresh_s / nodes * 1e6,
        "direct_us_per_node": base_s / nodes * 1e6,
        "first_ratio": first_s / base_s,
        "cached_ratio": cached_s / base_s,
        "cached_no_memo_ratio": fresh_s / base_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="200,1000,10000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    registry = NodeRegistry()
    for cls in (Constant, AddOne, Add, Report):
        registry.register(cls)
    rows = [measure(shape, int(size), args.repeat, registry)
            for shape in ("chain", "fan-in") for size in args.sizes.split(",")]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("| shape | nodes | first run us/node | cached us/node | cached, memo off us/node | direct call us/node "
          "| first / direct | cached / direct | memo off / direct |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['nodes']} | {r['first_us_per_node']:.1f} | {r['cached_us_per_node']:.2f} | "
              f"{r['cached_no_memo_us_per_node']:.1f} | {r['direct_us_per_node']:.2f} | {r['first_ratio']:.0f}x | "
              f"{r['cached_ratio']:.1f}x | {r['cached_no_memo_ratio']:.0f}x |")


if __name__ == "__main__":
    main()
