"""Weak labels: the `WeakLabels` type, seeded simulation from masks, and storage."""
from .simulate import SimConfig, choose_kinds, image_seed, parse_kinds, parse_mix, simulate_weak
from .store import WeakStore, read_weak, save_split, write_weak
from .types import IGNORE, KINDS, WeakLabels

__all__ = [
    "WeakLabels", "KINDS", "IGNORE", "SimConfig", "simulate_weak", "image_seed", "parse_kinds",
    "parse_mix", "choose_kinds", "WeakStore", "read_weak", "write_weak", "save_split",
]
