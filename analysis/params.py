"""The parameters of an identification, in one frozen value (one place for every default)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from langneurons.errors import ParameterError

Method = Literal["ternary", "lape"]
#: Most doublings of the automatic lambda's range :func:`identify` will try.
MAX_LAMBDA_WIDEN = 10


@dataclasses.dataclass(frozen=True)
class IdentifyParams:
    """Everything :func:`~langneurons.analysis.identify` takes besides the run.

    The functions that re-run the identification (bootstraps, type change, stages,
    spontaneous alignment) take one of these as ``params=`` instead of loose keywords, so a
    default is written once, here, and a typo is an error where it is made.

    >>> IdentifyParams(top_rate=0.02).replace(method="lape").method
    'lape'
    """

    method: Method = "ternary"
    role: Literal["response", "prompt", "all"] = "response"
    top_rate: float = 0.01
    bar: float = 0.95
    filter_rate: float = 0.95
    lam: float | Literal["auto"] = "auto"
    lam_range: tuple[float, float] = (0.0, 0.2)
    eps: float = 1e-3
    lam_widen: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("ternary", "lape"):
            raise ParameterError(f"method must be 'ternary' or 'lape', got {self.method!r}")
        if self.role not in ("response", "prompt", "all"):
            raise ParameterError(f"role must be 'response', 'prompt' or 'all', got {self.role!r}")
        lo_hi = tuple(self.lam_range)
        object.__setattr__(self, "lam_range", (float(lo_hi[0]), float(lo_hi[1])))

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """The parameter names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, where: str = "identify") -> IdentifyParams:
        """Parameters from keywords (e.g. a result's ``attrs``); an unknown key is an error."""
        unknown = sorted(set(values) - set(cls.fields()))
        if unknown:
            raise ParameterError(
                f"{where} got an unknown identification parameter {unknown[0]!r}; "
                f"it takes {', '.join(cls.fields())}"
            )
        return cls(**dict(values))

    def replace(self, **changes: Any) -> IdentifyParams:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def keywords(self) -> dict[str, Any]:
        """The keyword arguments of ``identify(run, method, **keywords)`` (method excluded)."""
        out = dataclasses.asdict(self)
        out.pop("method")
        return out

    def to_attrs(self) -> dict[str, Any]:
        """A JSON-ready record of every parameter (for a result's attrs)."""
        out = dataclasses.asdict(self)
        out["lam_range"] = list(self.lam_range)
        return out
