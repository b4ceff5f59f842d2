"""ALIS trainer: datasets (photos or procedural landscapes), losses and the training loop."""
import alis_core  # noqa: F401  (first: before torch, it turns on huge-page allocations)
