"""ALIS trainer: datasets (photos or procedural landscapes), losses and the training loop."""
