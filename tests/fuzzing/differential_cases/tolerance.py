"""The comparison rule, and the only place tolerances are set.

A floating-point sum of `terms` products, accumulated in any order, is off by at most about
terms * u * sum(|products|) (u: the unit roundoff of the dtype computed in). Every reference
returns, per element, that magnitude (the reference run on absolute values) and its number of
terms; an element passes when |got - ref| <= allowed_error(magnitude, terms, dtype). The inputs
of a float32 case are float32 numbers, so the float64 reference sees exactly what the library
sees and only the accumulation differs. Reported ratios are |got - ref| / allowed; above 1 is a
mismatch.
"""
import numpy as np
import torch


# The only place tolerances are set. A floating-point sum of `terms` products, accumulated in
# any order, is off by at most about terms * u * sum(|products|) (u: the unit roundoff of the
# dtype computed in). Every reference returns, per element, that magnitude (the reference run
# on absolute values) and its number of terms; an element passes when
# |got - ref| <= allowed_error(magnitude, terms, dtype). The inputs of a float32 case are
# float32 numbers, so the float64 reference sees exactly what the library sees and only the
# accumulation differs. Reported ratios are |got - ref| / allowed; above 1 is a mismatch.
UNIT_ROUNDOFF = {torch.float32: 2.0 ** -24, torch.float64: 2.0 ** -53}


SAFETY = 4.0


RELATIVE_FLOOR = {torch.float32: 1e-6, torch.float64: 1e-13}


def allowed_error(magnitude, terms, dtype):
    u = UNIT_ROUNDOFF[dtype]
    return np.asarray(magnitude) * (SAFETY * (np.asarray(terms) + 2) * u + RELATIVE_FLOOR[dtype])


class Mismatch(AssertionError):
    """The library disagrees with the reference (or broke a promise about its output)."""


def as_numpy(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().to(torch.float64).numpy() if t.is_floating_point() \
            else t.detach().cpu().numpy()
    return np.asarray(t)


def error_ratio(what: str, got, ref, magnitude, terms, dtype) -> float:
    """max |got - ref| / allowed over the elements; raises Mismatch on a shape difference."""
    got, ref = as_numpy(got), np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        raise Mismatch(f"{what}: shape {got.shape}, expected {ref.shape}")
    if got.size == 0:
        return 0.0
    err = np.abs(got.astype(np.float64) - ref)
    err = np.where(np.isnan(err) & ~(np.isnan(ref)), np.inf, err)  # NaN where ref is finite
    allowed = np.broadcast_to(allowed_error(magnitude, terms, dtype), err.shape)
    ratio = np.divide(err, allowed, out=np.where(err > 0, np.inf, 0.0), where=allowed > 0)
    worst = int(np.argmax(ratio))
    value = float(ratio.flat[worst])
    if value > 1.0:
        index = np.unravel_index(worst, err.shape)
        raise Mismatch(f"{what}: error {err.flat[worst]:.3g} at {tuple(map(int, index))} is "
                       f"{value:.3g}x the tolerance {allowed.flat[worst]:.3g} (got "
                       f"{float(got.flat[worst])!r}, expected {float(ref.flat[worst])!r})")
    return value
