"""Node specifications as plain data: ids, inputs, tooltips and outputs of every ALIS node.

The ComfyUI V3 classes (nodes/v3.py) build their `io.Schema` from these specs, so the
schema can be checked (unique ids, `ALIS` prefix, a tooltip on every input, input names
matching the node function) without ComfyUI installed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

# Custom socket types passed between ALIS nodes.
ALIS_MODEL = "ALIS_MODEL"
ALIS_ANCHORS = "ALIS_ANCHORS"
ALIS_SKY = "ALIS_SKY"  # full-sphere skies in scene-linear radiance with their suns (nodes/skybox.py AlisSky)

# Socket/widget types a Param may have; v3.py maps each to its comfy_api io type.
PARAM_TYPES = {"INT", "FLOAT", "BOOLEAN", "STRING", "COMBO", "IMAGE", ALIS_MODEL, ALIS_ANCHORS, ALIS_SKY}
SEED_MAX = 0xFFFF_FFFF_FFFF_FFFF  # ComfyUI's usual seed range (64-bit)


@dataclass(frozen=True)
class Param:
    """One node input. `options` is for COMBO; `options_from` names a dynamic option list."""

    name: str
    type: str
    tooltip: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    options: tuple[str, ...] = ()
    options_from: str | None = None  # e.g. "alis_checkpoints": filled in by v3.py at schema time
    multiline: bool = False
    control_after_generate: bool = False
    optional: bool = False


@dataclass(frozen=True)
class Out:
    """One node output."""

    name: str
    type: str
    tooltip: str


@dataclass(frozen=True)
class NodeSpec:
    """One node: `function` receives the inputs by name (plus extras that v3.py supplies)."""

    node_id: str
    display_name: str
    category: str
    description: str
    function: Callable[..., Any]
    inputs: tuple[Param, ...]
    outputs: tuple[Out, ...] = ()
    output_node: bool = False
    extras: tuple[str, ...] = field(default=())  # function kwargs not shown as inputs (progress, folder...)

    def input_names(self) -> list[str]:
        return [p.name for p in self.inputs]
