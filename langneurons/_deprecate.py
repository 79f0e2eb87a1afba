"""Keyword arguments renamed in a release keep working, with a warning, for one more.

The ground floor: imports nothing of langneurons, so every room can mark its renamed keywords.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def renamed_keywords(**renamed: str) -> Callable[[F], F]:
    """Accept the old name of each renamed keyword (``old="new"``), with a DeprecationWarning.

    Passing both names at once is a TypeError, as passing one argument twice is.

    Examples
    --------
    >>> @renamed_keywords(url="store")
    ... def open_store(store, mode="r"): ...
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renamed.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(
                        f"{func.__name__}() got both {old!r} and {new!r}; pass only {new!r}"
                    )
                warnings.warn(
                    f"{func.__name__}({old}=...) is deprecated; use {new}=... instead",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
