"""Errors that name the node input at fault and the fix (ComfyUI shows the message verbatim)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from alis_core.errors import AlisError


def input_error(node: str, input_name: str, message: str) -> ValueError:
    """A ValueError reading "<node>: input '<input_name>': <message>"."""
    return ValueError(f"{node}: input '{input_name}': {message}")


@contextmanager
def alis_errors_as_input_error(node: str, input_name: str) -> Iterator[None]:
    """Re-raise an AlisError from alis_core as a ValueError naming the node input."""
    try:
        yield
    except AlisError as e:
        raise input_error(node, input_name, str(e)) from e
