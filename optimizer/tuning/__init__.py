"""Tuning studies: search space, objective, storage, presets, apply and per-image adaptive search."""
