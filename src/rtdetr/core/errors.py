"""The errors users see: each message is one line naming the file (or input) and the problem."""
from __future__ import annotations

import importlib


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message is one line naming the file."""


class ImageReadError(ValueError):
    """A picture that cannot be used; the message is one line naming the file and the problem."""


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def require(module: str, extra: str = "deploy"):
    """Import an optional package, or fail with one line that says how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"this needs the {module} package: pip install {module} "
                          f"(or pip install 'rtdetr[{extra}]')") from None
