"""The identification defaults, written once (ground floor).

:class:`langneurons.analysis.IdentifyParams` takes its field defaults from here and the command
line shows the same values in ``--help``, without importing the analysis room (which loads
xarray and scipy) to start up.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Final

#: Default of every :class:`~langneurons.analysis.IdentifyParams` field.
IDENTIFY: Final[MappingProxyType[str, Any]] = MappingProxyType(
    {
        "method": "ternary",
        "role": "response",
        "top_rate": 0.01,
        "bar": 0.95,
        "filter_rate": 0.95,
        "lam": "auto",
        "lam_range": (0.0, 0.2),
        "eps": 1e-3,
        "lam_widen": 0,
    }
)
