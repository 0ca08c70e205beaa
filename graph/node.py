"""The node declaration API.

A node is a small class whose typed class attributes are its whole interface::

    class ImageInvert(Node):
        '''Inverts the colours of an image.'''
        category = "image"
        image = Input("IMAGE")
        outputs = (Output("IMAGE"),)

        def execute(self, image):
            return (1.0 - image,)

The engine reads the ``Input`` attributes (in declaration order) to validate
workflows, to convert UI-format ``widgets_values`` and to build ComfyUI's
``/object_info`` document. No node writes its own range checks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

# Types whose values can be typed into a widget; everything else must arrive by link.
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})

# ComfyUI's type name of a DynamicCombo in /object_info (comfy_api's io.DynamicCombo).
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"

# The member types of a union input for which a constant can be checked.
_SCALAR_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN"})

_INPUT_OPTION_NAMES = (
    "default", "min", "max", "step", "round", "multiline", "tooltip",
    "force_input", "control_after_generate", "image_upload", "placeholder", "advanced",
)


@dataclass
class Input:
    """One declared input.

    ``type`` is a ComfyUI type name ("INT", "MODEL", ...). A combo is declared with
    ``choices`` (its type becomes "COMBO"); ``choices`` may be a callable so that lists
    such as model files are read when asked for, not at import. It receives the
    application's runtime object (``ExecutionContext.runtime``, None when there is none)
    so it can list the input folder or model files of the running application.
    ``optional`` inputs may be absent; ``lazy`` inputs are only computed when the node
    asks for them (see ``Node.check_lazy_status``); ``is_list`` inputs receive the whole
    list an upstream list output produced instead of being mapped over its items.
    ``dynamic`` makes a combo ComfyUI's DynamicCombo: for each choice, the node's inputs
    that choice reveals (declared on the node as optional inputs named ``combo.sub``), as a
    tuple of names, or as a mapping of name -> ``Input`` when the choice declares the input
    its own way (e.g. other choices); the node's own declaration is then what an API prompt
    is checked against only when the choice is unknown. A revealed input is required while
    its choice is selected (``NodeDefinition.selected_inputs``). ``/object_info`` describes
    the combo as ComfyUI does (``COMFY_DYNAMICCOMBO_V3`` with each choice's inputs), and a
    UI-format workflow saved by ComfyUI lists the revealed widgets' values right after the
    combo's and none of the others (``graph.ui_format``). The choices are its keys and its
    default the first, as ComfyUI's frontend takes it.
    """

    type: str = "COMBO"
    default: Any = None
    min: float | int | None = None
    max: float | int | None = None
    step: float | int | None = None
    round: float | bool | None = None
    choices: Any = None
    multiline: bool = False
    optional: bool = False
    lazy: bool = False
    is_list: bool = False
    hidden: bool = False
    force_input: bool = False
    control_after_generate: bool = False
    image_upload: bool = False
    tooltip: str | None = None
    placeholder: str | None = None
    dynamic: Mapping[str, tuple[str, ...] | Mapping[str, Input]] | None = None
    name: str = ""  # filled in from the attribute name
    advanced: bool = False  # ComfyUI's "advanced" option: the editor tucks the widget away

    def __post_init__(self) -> None:
        if self.dynamic is not None:
            first = next(iter(self.dynamic), None)
            if self.default is not None and self.default != first:
                raise ValueError(f"a DynamicCombo's default is its first choice ({first!r}), "
                                 f"as ComfyUI's frontend takes it, not {self.default!r}")
            self.default = first
            if self.choices is None:
                self.choices = list(self.dynamic)
        if self.choices is not None:
            self.type = "COMBO"

    def revealed(self, choice: Any) -> tuple[str, ...]:
        """The names of the inputs a DynamicCombo's ``choice`` reveals (none for another value)."""
        if not self.dynamic or not _is_hashable_scalar(choice):
            return ()
        return tuple(self.dynamic.get(choice, ()))

    def revealed_declaration(self, choice: Any, name: str) -> Input | None:
        """The ``Input`` that ``choice`` declares for the revealed ``name``, when it has its own."""
        option = self.dynamic.get(choice) if self.dynamic and _is_hashable_scalar(choice) else None
        return option.get(name) if isinstance(option, Mapping) else None

    @property
    def is_widget(self) -> bool:
        """True when a constant value can be typed in for this input."""
        return self.type in WIDGET_TYPES and not self.hidden

    def choice_list(self, runtime: Any = None) -> list:
        """The current choices of a combo input (calls a callable ``choices`` with ``runtime``)."""
        choices = self.choices(runtime) if callable(self.choices) else self.choices
        return list(choices or [])

    def spec(self, runtime: Any = None) -> list:
        """This input in ComfyUI's ``/object_info`` shape: ``[TYPE, {options}]``."""
        options: dict[str, Any] = {}
        for option in _INPUT_OPTION_NAMES:
            value = getattr(self, option)
            if value is None or (value is False and option != "default"):  # a BOOLEAN's default False is kept
                continue
            options["forceInput" if option == "force_input" else option] = value
        if self.lazy:
            options["lazy"] = True
        if self.type == "COMBO":
            return [self.choice_list(runtime), options]
        return [self.type, options]

    def check_constant(self, value: Any, runtime: Any = None) -> tuple[str, str] | None:
        """Checks a constant against the declaration.

        Returns None when the value is acceptable, else ``(error_type, message)`` using
        ComfyUI's error type names.
        """
        if self.type == "INT":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return "invalid_input_type", f"expected an integer, got {_describe(value)}"
            if isinstance(value, float) and not value.is_integer():
                return "invalid_input_type", f"expected an integer, got {value!r}"
            return self._check_range(value)
        if self.type == "FLOAT":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return "invalid_input_type", f"expected a number, got {_describe(value)}"
            if math.isnan(value):
                return "invalid_input_type", "expected a number, got NaN"
            return self._check_range(value)
        if self.type == "STRING":
            if not isinstance(value, str):
                return "invalid_input_type", f"expected a string, got {_describe(value)}"
            return None
        if self.type == "BOOLEAN":
            if not isinstance(value, bool):
                return "invalid_input_type", f"expected true or false, got {_describe(value)}"
            return None
        if self.type == "COMBO":
            choices = self.choice_list(runtime)
            if not _is_hashable_scalar(value) or value not in choices:
                shown = ", ".join(map(str, choices[:20])) + (", ..." if len(choices) > 20 else "")
                return "value_not_in_list", f"{value!r} is not one of [{shown}]"
            return None
        if self.type == "*":
            return None
        members = self.type.split(",")
        if len(members) > 1 and any(member in _SCALAR_TYPES for member in members):
            # A union such as ComfyUI's "FLOAT,INT,BOOLEAN" takes a constant of any scalar member.
            if any(Input(member).check_constant(value) is None for member in members if member in _SCALAR_TYPES):
                return None
            return "invalid_input_type", f"expected one of {self.type}, got {_describe(value)}"
        return "invalid_input_type", f"expects a link from a node that outputs {self.type}, got a constant"

    def _check_range(self, value: float) -> tuple[str, str] | None:
        if self.min is not None and value < self.min:
            return "value_smaller_than_min", f"Value {value} smaller than min of {self.min}"
        if self.max is not None and value > self.max:
            return "value_bigger_than_max", f"Value {value} bigger than max of {self.max}"
        return None


@dataclass
class Output:
    """One declared output: its type, display name, and whether it yields a list."""

    type: str
    name: str = ""
    is_list: bool = False
    tooltip: str | None = None

    def __post_init__(self) -> None:
        self.name = self.name or self.type


@dataclass
class NodeResult:
    """What ``execute`` may return instead of a plain tuple: output values plus a UI payload.

    ``ui`` is sent to clients in the ``executed`` event and kept in history, e.g.
    ``{"images": [{"filename": ..., "subfolder": ..., "type": "output"}]}``.
    """

    outputs: tuple = ()
    ui: dict[str, Any] | None = None


@dataclass
class NodeDefinition:
    """Everything the engine knows about a node class, collected from its declaration."""

    name: str
    cls: type[Node]
    inputs: dict[str, Input]
    outputs: tuple[Output, ...]
    display_name: str
    category: str
    description: str
    output_node: bool
    not_deterministic: bool
    python_module: str
    deprecated: bool = False
    has_fingerprint: bool = False
    # No lazy or whole-list inputs and no list outputs: the executor may take its fast path.
    simple_io: bool = False
    widget_names: tuple[str, ...] = field(default=())
    search_aliases: tuple[str, ...] = field(default=())

    def revealed_names(self) -> frozenset[str]:
        """The inputs a DynamicCombo shows only for some of its choices."""
        return frozenset(name for inp in self.inputs.values() if inp.dynamic
                         for choice in inp.dynamic for name in inp.revealed(choice))

    def selected_inputs(self, values: Mapping[str, Any]) -> dict[str, Input]:
        """The inputs that apply to a node given its input ``values`` (name -> constant or link).

        Every input that no DynamicCombo reveals, plus those the combos' current choices
        (their value, else their first choice) reveal, nested combos included, each as the
        choice declares it and required, as ComfyUI finalises a node's inputs.
        """
        revealed = self.revealed_names()
        selected = {name: inp for name, inp in self.inputs.items() if name not in revealed}
        pending = [inp for inp in selected.values() if inp.dynamic]
        while pending:
            combo = pending.pop(0)
            choice = values.get(combo.name, combo.default)
            for name in combo.revealed(choice):
                declared = combo.revealed_declaration(choice, name) or self.inputs.get(name)
                if declared is None or name in selected:
                    continue
                own = replace(declared, optional=False)
                own.name = name
                selected[name] = own
                if own.dynamic:
                    pending.append(own)
        return selected

    def input_spec(self, inp: Input, runtime: Any = None, name: str | None = None) -> list:
        """One input (called ``name``, default its own) in ComfyUI's ``/object_info`` shape; a
        DynamicCombo with, for each choice, ``{"key": choice, "inputs": {"required": {short
        name: spec}}}``, the short name being what follows the combo's name and a dot."""
        name = name or inp.name
        if not inp.dynamic:
            return inp.spec(runtime)
        options = inp.spec(runtime)[1]
        options.pop("default", None)  # ComfyUI's DynamicCombo has none: the frontend takes the first
        choices = []
        for choice in inp.dynamic:
            required: dict[str, list] = {}
            for sub in inp.revealed(choice):
                declared = inp.revealed_declaration(choice, sub) or self.inputs.get(sub)
                if declared is not None:
                    required[sub.removeprefix(name + ".")] = self.input_spec(declared, runtime, sub)
            choices.append({"key": choice, "inputs": {"required": required}})
        return [DYNAMIC_COMBO, {**options, "options": choices}]

    def object_info(self, runtime: Any = None) -> dict[str, Any]:
        """This node in ComfyUI's ``GET /object_info`` shape (a DynamicCombo's inputs inside it)."""
        sections: dict[str, dict[str, list]] = {"required": {}, "optional": {}, "hidden": {}}
        revealed = self.revealed_names()
        for name, inp in self.inputs.items():
            if name in revealed:
                continue
            section = "hidden" if inp.hidden else "optional" if inp.optional else "required"
            sections[section][name] = self.input_spec(inp, runtime)
        input_doc = {key: value for key, value in sections.items() if value or key == "required"}
        return {
            "input": input_doc,
            "input_order": {key: list(value) for key, value in input_doc.items()},
            "output": [out.type for out in self.outputs],
            "output_is_list": [out.is_list for out in self.outputs],
            "output_name": [out.name for out in self.outputs],
            "output_tooltips": [out.tooltip or "" for out in self.outputs],
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
            "deprecated": self.deprecated,
            **({"search_aliases": list(self.search_aliases)} if self.search_aliases else {}),
        }


class Node:
    """Base class of every node. Subclasses declare ``Input`` attributes and ``outputs``.

    Class attributes a node may set:
      - ``outputs``: tuple of ``Output``.
      - ``category``, ``display_name`` (defaults to the name the registry knows the class by,
        e.g. ComfyUI's, else the class name split into words), ``description`` (defaults to
        the docstring).
      - ``output_node``: the node is a root of execution (SaveImage, PreviewImage).
      - ``not_deterministic``: never served from the cache (random sources, clocks).
      - ``node_name``: the registered name, when it differs from the class name.
      - ``search_aliases``: more words the editors' node search finds it by (default: the
        registry's, e.g. the nodes package's for ComfyUI's classes).

    At run time the engine creates one instance per execution and sets ``self.context``
    (a ``graph.context.ExecutionContext``) before calling ``execute``.
    """

    outputs: ClassVar[tuple[Output, ...]] = ()
    category: ClassVar[str] = ""
    display_name: ClassVar[str | None] = None
    description: ClassVar[str | None] = None
    output_node: ClassVar[bool] = False
    not_deterministic: ClassVar[bool] = False
    deprecated: ClassVar[bool] = False
    node_name: ClassVar[str | None] = None
    search_aliases: ClassVar[tuple[str, ...]] = ()

    def __init__(self, context: Any = None) -> None:
        self.context = context

    def execute(self, **inputs: Any) -> tuple | NodeResult | None:
        """Runs the node on one set of input values; returns one value per output."""
        raise NotImplementedError

    @classmethod
    def fingerprint(cls, context: Any, **constants: Any) -> Any:
        """Describes outside state the node reads (e.g. a file's size and mtime).

        Called with the prompt's ``ExecutionContext`` (for its folders and runtime) and
        the node's constant inputs before execution; the result becomes part of the cache
        key, so a changed file means a re-run. JSON-serialisable or None.
        """
        return None

    @classmethod
    def estimate(cls, inputs: Mapping[str, Any]) -> Any:
        """What the node would allocate, for validation's memory check (``graph.estimate``).

        ``inputs``: constants as given; for a linked input, the ``TensorSize`` its source
        estimated, or None. Returns a ``graph.estimate.MemoryEstimate``, or None when the
        node allocates nothing that depends on its inputs (the default).
        """
        return None

    def check_lazy_status(self, **inputs: Any) -> list[str]:
        """Names the lazy inputs still needed, given the values known so far.

        Lazy inputs not yet computed are passed as None. Called until it returns [].
        The default asks for every lazy input.
        """
        definition = definition_of(type(self))
        return [name for name, inp in definition.inputs.items() if inp.lazy and inputs.get(name) is None]

    @classmethod
    def definition(cls) -> NodeDefinition:
        return definition_of(cls)


_DEFINITIONS: dict[type, NodeDefinition] = {}


def definition_of(cls: type[Node]) -> NodeDefinition:
    """Collects (once per class) the declaration of a node class."""
    cached = _DEFINITIONS.get(cls)
    if cached is not None:
        return cached
    inputs: dict[str, Input] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if isinstance(value, Input):
                value.name = attr
                inputs[attr] = value
    # Required inputs first, as in ComfyUI's input_order, keeping declaration order within each.
    ordered = {n: i for n, i in inputs.items() if not i.optional and not i.hidden}
    ordered.update({n: i for n, i in inputs.items() if i.optional and not i.hidden})
    ordered.update({n: i for n, i in inputs.items() if i.hidden})
    doc = (cls.description or (cls.__doc__ or "")).strip()
    name = cls.node_name or cls.__name__
    definition = NodeDefinition(
        name=name,
        cls=cls,
        inputs=ordered,
        outputs=tuple(cls.outputs),
        # A class known by another name (ComfyUI's) gets it from the registry (NodeRegistry.known_names).
        display_name=cls.display_name or _split_camel(name),
        category=cls.category,
        description=doc,
        output_node=cls.output_node,
        not_deterministic=cls.not_deterministic,
        python_module=cls.__module__,
        deprecated=cls.deprecated,
        has_fingerprint=cls.fingerprint.__func__ is not Node.fingerprint.__func__,
        simple_io=not any(i.lazy or i.is_list for i in ordered.values()) and not any(o.is_list for o in cls.outputs),
        widget_names=tuple(n for n, i in ordered.items() if i.is_widget),
        search_aliases=tuple(cls.search_aliases),
    )
    _DEFINITIONS[cls] = definition
    return definition


def _split_camel(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and (name[i - 1].islower() or (i + 1 < len(name) and name[i + 1].islower())):
            out.append(" ")
        out.append(ch)
    return "".join(out).replace("  ", " ").strip()


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _is_hashable_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))
