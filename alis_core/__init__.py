"""ALIS panoramas: a faithful, pure-PyTorch implementation of ALIS (Skorokhodov et al., ICCV 2021).

Public API (see docs/ARCHITECTURE.md):
    load_generator, save_generator, Generator, GeneratorConfig,
    sample_anchors, anchors_from_seeds, panorama, iter_panorama, seam_score.
"""
from .errors import AlisError

__all__ = ["AlisError"]
