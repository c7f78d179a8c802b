"""The local engine's resume state as plain data: the RNG states of Python and numpy as JSON (torch's
is a tensor, saved in ``state.pt``), a metrics record read back from JSON, and the settings that
differ between a checkpoint and the run that would resume it."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    """``key: old -> new`` for every leaf where two JSON values differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += differences(old.get(key), new.get(key), f"{path}.{key}" if path else key)
        return out
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def floats(metrics: dict[str, Any]) -> dict[str, float]:
    """A metrics record read back from JSON: null (a NaN when written) is NaN again."""
    return {k: float("nan") if v is None else v for k, v in metrics.items()}


def rng_state_json() -> dict[str, Any]:
    """Python's and numpy's RNG states as JSON (torch's is a tensor, saved in ``state.pt``)."""
    version, internal, gauss = random.getstate()
    state = np.random.get_state(legacy=True)
    assert isinstance(state, tuple)  # the legacy form: (name, keys, pos, has_gauss, cached)
    name, keys, pos, has_gauss, cached = state
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def set_rng_state(state: dict[str, Any], torch_state: torch.Tensor) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch_state)
