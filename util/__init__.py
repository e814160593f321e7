"""Shared plumbing: configs, CLI, logging, checkpoints, the training loop."""
