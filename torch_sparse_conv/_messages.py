"""How the argument checks of both families quote values in their messages, in Python and in
TorchScript alike.

The functional APIs and modules script (``torch.jit.script``), checks included, and
TorchScript has no ``repr()``, no f-string conversion (``!r``) and no ``tuple()`` of a list.
Each helper returns Python's text in eager mode, so the messages read as they always have,
and TorchScript's ``str()`` of the same value in a scripted function, where the annotations
have already fixed the types. Internal, like ``_arguments``.
"""
from typing import Any, List

import torch


def show(value: Any) -> str:
    """``repr(value)``, as an f-string's ``{value!r}`` writes it (TorchScript: ``str``)."""
    if torch.jit.is_scripting():
        return str(value)
    return repr(value)


def show_shape(shape: List[int]) -> str:
    """A shape as a tuple, ``(3, 20)``, as ``tuple(x.shape)`` prints (TorchScript: the list,
    ``[3, 20]``)."""
    if torch.jit.is_scripting():
        return str(shape)
    return str(tuple(shape))
