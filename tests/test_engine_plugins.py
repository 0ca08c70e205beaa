"""Plugins from a custom_nodes folder: loaded, isolated when broken, never replacing built-ins."""

import textwrap

from graph import build_registry, prepare
from tests.conftest import Runner

GOOD_PLUGIN = """
from graph import Input, Node, Output

class Triple(Node):
    category = "plugin"
    value = Input("INT", default=1)
    outputs = (Output("INT"),)

    def execute(self, value):
        return (value * 3,)

NODES = [Triple]
"""

PACKAGE_PLUGIN = """
from .impl import Negate

NODE_CLASS_MAPPINGS = {"Negate": Negate}
"""

PACKAGE_IMPL = """
from graph import Input, Node, Output

class Negate(Node):
    value = Input("INT", default=1)
    outputs = (Output("INT"),)

    def execute(self, value):
        return (-value,)
"""

BROKEN_PLUGIN = "import a_module_that_does_not_exist\n"

HIJACK_PLUGIN = """
from graph import Input, Node, Output

class NumberSource(Node):
    outputs = (Output("INT"),)

    def execute(self):
        return (666,)

class Harmless(Node):
    outputs = (Output("INT"),)

    def execute(self):
        return (1,)

NODES = [Harmless, NumberSource]
"""


def make_plugins(folder):
    folder.mkdir()
    (folder / "good.py").write_text(textwrap.dedent(GOOD_PLUGIN))
    (folder / "pack").mkdir()
    (folder / "pack" / "__init__.py").write_text(PACKAGE_PLUGIN)
    (folder / "pack" / "impl.py").write_text(PACKAGE_IMPL)
    (folder / "broken.py").write_text(BROKEN_PLUGIN)
    (folder / "hijack.py").write_text(HIJACK_PLUGIN)
    (folder / "notes.txt").write_text("not a plugin")
    return folder


def test_plugins_load_and_failures_are_reported(tmp_path):
    folder = make_plugins(tmp_path / "custom_nodes")
    registry = build_registry("tests.engine_nodes", folder)
    assert "Triple" in registry and "Negate" in registry
    assert sorted(registry.loaded_plugins) == ["good", "pack"]
    failures = {f.name: f for f in registry.plugin_failures}
    assert set(failures) == {"broken", "hijack"}
    assert "ModuleNotFoundError" in failures["broken"].message
    assert "a_module_that_does_not_exist" in failures["broken"].traceback
    assert "cannot be replaced" in failures["hijack"].message
    # a rejected plugin adds none of its nodes, and the built-in stays the built-in
    assert "Harmless" not in registry
    assert registry.get("NumberSource").python_module == "tests.engine_nodes"


def test_plugin_nodes_run(tmp_path):
    registry = build_registry("tests.engine_nodes", make_plugins(tmp_path / "custom_nodes"))
    document = {"1": {"class_type": "Triple", "inputs": {"value": 4}},
                "2": {"class_type": "Negate", "inputs": {"value": ["1", 0]}},
                "3": {"class_type": "ShowValue", "inputs": {"value": ["2", 0]}}}
    assert Runner(registry).run(document).outputs == {"3": {"value": [-12]}}


def test_one_flag_disables_all_plugins(tmp_path):
    registry = build_registry("tests.engine_nodes", make_plugins(tmp_path / "custom_nodes"), disable_plugins=True)
    assert "Triple" not in registry and registry.plugin_failures == []
    checked = prepare({"1": {"class_type": "Triple", "inputs": {"value": 1}},
                       "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}}}, registry)
    assert checked.node_errors["1"]["errors"][0]["type"] == "missing_node_type"


def test_missing_plugin_folder_is_fine(tmp_path):
    registry = build_registry("tests.engine_nodes", tmp_path / "nowhere")
    assert "NumberSource" in registry and registry.plugin_failures == []
