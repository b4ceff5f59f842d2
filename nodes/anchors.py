"""ALIS Anchors and ALIS Join Anchors: the latent anchors a panorama is laid out from."""
from __future__ import annotations

from dataclasses import dataclass

import torch

import alis_core
from alis_core import options

from .errors import alis_errors_as_input_error, input_error
from .loaders import AlisModel
from .spec import ALIS_ANCHORS, ALIS_MODEL, SEED_MAX, NodeSpec, Out, Param

NODE = "ALIS Anchors"
JOIN_NODE = "ALIS Join Anchors"
MAX_ANCHORS = options.MAX_ANCHORS
DEFAULTS = options.COMFYUI


@dataclass(frozen=True, eq=False)
class AlisAnchors:
    """ALIS_ANCHORS: anchor latents `w` [K, w_dim] (float32, CPU), one every `anchor_spacing` px."""

    w: torch.Tensor  # [K, w_dim]
    label: str = ""  # where they came from, e.g. "seed 3 x8"; for logs and tooltips only

    def __len__(self) -> int:
        return int(self.w.shape[0])

    def __add__(self, other: "AlisAnchors") -> "AlisAnchors":
        return join_anchors(self, other)


def parse_seeds(text: str) -> list[int]:
    """"12, 7, 99" -> [12, 7, 99]; blank -> [] (use seed and num_anchors instead)."""
    if not text.strip():
        return []
    with alis_errors_as_input_error(NODE, "seeds"):
        seeds = alis_core.parse_seed_list(text)
    if any(not 0 <= s <= SEED_MAX for s in seeds):
        raise input_error(NODE, "seeds", f"seeds must be 0..2^64-1, got {text!r}; write e.g. '12, 7, 99'")
    return seeds


def make_anchors(model: AlisModel, seed: int, num_anchors: int, psi: float = DEFAULTS.psi,
                 seeds: str = "") -> AlisAnchors:
    """Node function: `num_anchors` anchors drawn from `seed`, or one anchor per seed of `seeds`."""
    with alis_errors_as_input_error(NODE, "psi"):
        psi = options.check_psi(psi, "psi")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise input_error(NODE, "seed", f"got {seed!r}; use an integer 0..2^64-1")
    explicit = parse_seeds(seeds)
    if len(explicit) > MAX_ANCHORS:
        raise input_error(NODE, "seeds", f"{len(explicit)} seeds is more than {MAX_ANCHORS} anchors; give fewer")
    if not explicit and not 1 <= num_anchors <= MAX_ANCHORS:
        raise input_error(NODE, "num_anchors", f"got {num_anchors}; use 1..{MAX_ANCHORS} "
                          "(a panorama needs at least 2, a 360° loop at least 2)")
    G = model.generator
    with torch.no_grad():
        if explicit:
            with alis_errors_as_input_error(NODE, "seeds"):
                w = alis_core.anchors_from_seeds(G, explicit, truncation_psi=psi)
            label = "seeds " + ", ".join(map(str, explicit))
        else:
            with alis_errors_as_input_error(NODE, "num_anchors"):
                w = alis_core.sample_anchors(G, num_anchors, seed, truncation_psi=psi)
            label = f"seed {seed} x{num_anchors}"
    return AlisAnchors(w=w.detach().to("cpu", torch.float32), label=f"{label} psi {psi:g}")


def join_anchors(anchors_a: AlisAnchors, anchors_b: AlisAnchors) -> AlisAnchors:
    """Node function: scene A then scene B (with wrap on, the loop closes from B back to A)."""
    if anchors_a.w.shape[1] != anchors_b.w.shape[1]:
        raise input_error(JOIN_NODE, "anchors_b", f"w_dim {anchors_b.w.shape[1]} does not match anchors_a "
                          f"({anchors_a.w.shape[1]}); build both with ALIS Anchors from the same model")
    return AlisAnchors(w=torch.cat([anchors_a.w, anchors_b.w]), label=f"{anchors_a.label} + {anchors_b.label}")


ANCHORS = NodeSpec(
    node_id="ALISAnchors",
    display_name=NODE,
    category="ALIS/anchors",
    description="Latent anchors for a panorama: each anchor is one scene 'keyframe', "
                "placed every anchor_spacing pixels.",
    function=make_anchors,
    inputs=(
        Param("model", ALIS_MODEL, tooltip="The generator from Load ALIS Checkpoint (maps seeds to latents)."),
        Param("seed", "INT", default=0, min=0, max=SEED_MAX, control_after_generate=True,
              tooltip="Random seed for the anchors; the same seed gives the same landscape."),
        Param("num_anchors", "INT", default=DEFAULTS.anchors, min=1, max=MAX_ANCHORS,
              tooltip="How many anchors (scenes). Width is (anchors - 1) x spacing, or anchors x spacing "
                      "with wrap on."),
        Param("psi", "FLOAT", default=DEFAULTS.psi, min=options.PSI_MIN, max=options.PSI_MAX, step=0.05,
              tooltip="Truncation psi: lower is more typical and less varied, 1.0 is untruncated."),
        Param("seeds", "STRING", default="", multiline=False,
              tooltip="Optional explicit seed list, one anchor per seed, e.g. '12, 7, 99'. "
                      "When set it replaces seed and num_anchors."),
    ),
    outputs=(Out("anchors", ALIS_ANCHORS, "Anchor latents; join several with ALIS Join Anchors."),),
)

JOIN = NodeSpec(
    node_id="ALISJoinAnchors",
    display_name=JOIN_NODE,
    category="ALIS/anchors",
    description="Connect scene A to scene B: the panorama travels through A's anchors, then B's.",
    function=join_anchors,
    inputs=(
        Param("anchors_a", ALIS_ANCHORS, tooltip="First scene (left part of the panorama)."),
        Param("anchors_b", ALIS_ANCHORS, tooltip="Second scene, appended after A (right part)."),
    ),
    outputs=(Out("anchors", ALIS_ANCHORS, "A's anchors followed by B's."),),
)
