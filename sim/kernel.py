"""The kernel: one step of the model (docs/model.md) for every tie at once, behind one function.

    step(state, params, rng) -> Events

Two paths compute the same step:

- sim/kernel_numpy.py, the numpy path: every phase of docs/model.md as a function of the same
  name (`talk`, `differences`, `blame`, `value`, `patience`, `trust`, `openness`, `mindset`,
  `classify`, ...), a few vectorized numpy passes each. The readable statement of the step and
  the tested fallback.
- sim/kernel_numba.py, the compiled path: the same phases as numba functions of the same names,
  fused into one loop over the ties per phase, with the per-person and per-alliance sums
  accumulated in the loop and no per-step allocations of tie-sized arrays. It is the default
  when numba is importable; compiled once and cached on disk.

Both draw their random numbers from the model's numpy Generator in the same fixed order
(`kernel_numpy.draw_step` in bulk; `kernel_numba.draw` the same numbers one by one), so the
path does not change a run beyond floating-point rounding (tests/test_kernel_paths.py: 1e-9 on
every array, noise on and off). Headless runs on the compiled path go through
sim/kernel_batch.py (many steps per call, identical to stepping).

The path: environment variable SPIRAL_KERNEL=numba|numpy at import, or `use("numpy")`.
`NAME` is the path in use.
"""

from __future__ import annotations

import os

from . import kernel_numpy
from .kernel_numpy import (  # noqa: F401  (the phases, under their names, for callers and tests)
    MAX_QUARRELS,
    Draws,
    Events,
    add_alliances,
    blame,
    by_mindset,
    claims,
    classify,
    confront_prob,
    degree,
    differences,
    divergence,
    draw_endings,
    draw_step,
    either_side,
    end_alliances,
    ending_hazard,
    experience_weight,
    flip,
    form_alliances,
    mindset,
    openness,
    patience,
    per_person,
    sigmoid,
    sigmoid_,
    summarize_alliances,
    talk,
    talk_rate,
    trust,
    unique_alliances,
    value,
)

PATHS = ("numba", "numpy")
NAME = "numpy"
_impl = kernel_numpy


def available() -> list[str]:
    """The paths that can run here (numba only when it imports)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return ["numpy"]
    return list(PATHS)


def use(name: str) -> str:
    """Select the path for every later step: "numba" or "numpy". Returns the previous one."""
    global NAME, _impl
    if name not in PATHS:
        raise ValueError(f"SPIRAL_KERNEL: expected one of {', '.join(PATHS)}, got {name!r}")
    if name == "numba":
        from . import kernel_numba  # ImportError when numba is missing: asked for, not there

        impl = kernel_numba
    else:
        impl = kernel_numpy
    old, NAME, _impl = NAME, name, impl
    return old


def step(s, p, rng) -> Events:
    """One step of the model for every tie at once (order and equations: kernel_numpy.step)."""
    return _impl.step(s, p, rng)


def series(s, p) -> tuple | None:
    """The state's part of the per-step metrics, computed by the compiled path (None on the
    numpy path: metrics.step_metrics then computes them with numpy)."""
    f = getattr(_impl, "series", None)
    return None if f is None else f(s, p)


def _initial() -> None:
    want = os.environ.get("SPIRAL_KERNEL", "").strip().lower()
    if want:
        use(want)
    elif "numba" in available():
        use("numba")


_initial()
