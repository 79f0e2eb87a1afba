"""The parameters of an identification, in one frozen value (one place for every default)."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from numbers import Real
from typing import Any, Literal

from langneurons._defaults import IDENTIFY as _D
from langneurons.analysis._validate import check_choice
from langneurons.errors import ParameterError
from langneurons.names import ROLES

Method = Literal["ternary", "lape"]
#: The identification rules, in the order error messages list them.
METHODS: tuple[str, ...] = ("ternary", "lape")
#: The roles an identification reads (``"all"`` sums both stored roles).
READ_ROLES: tuple[str, ...] = ("response", "prompt", "all")
#: Most doublings of the automatic lambda's range :func:`identify` will try (x1024).
MAX_LAMBDA_WIDEN = 10


def _real(value: object) -> float | None:
    """``float(value)`` for a real number other than a bool; None for anything else."""
    if isinstance(value, Real) and not isinstance(value, bool):
        return float(value)
    return None


def _rate(name: str, value: object) -> float:
    """A rate in (0, 1]."""
    x = _real(value)
    if x is None or not 0.0 < x <= 1.0:  # NaN fails too
        raise ParameterError(f"{name} must be in (0, 1], got {value!r}")
    return x


@dataclasses.dataclass(frozen=True)
class IdentifyParams:
    """Everything :func:`~langneurons.analysis.identify` takes besides the run.

    The functions that re-run the identification (bootstraps, type change, stages,
    spontaneous alignment) take one of these as ``params=`` instead of loose keywords, so a
    default is written once, here, and a bad value is an error where it is made (the same
    one-line :class:`~langneurons.errors.ParameterError` as :func:`identify` gives).

    >>> IdentifyParams(top_rate=0.02).replace(method="lape").method
    'lape'
    """

    # the defaults are written once, in langneurons._defaults (the CLI shows the same)
    method: Method = _D["method"]
    role: Literal["response", "prompt", "all"] = _D["role"]
    top_rate: float = _D["top_rate"]
    bar: float = _D["bar"]
    filter_rate: float = _D["filter_rate"]
    lam: float | Literal["auto"] = _D["lam"]
    lam_range: tuple[float, float] = _D["lam_range"]
    eps: float = _D["eps"]
    lam_widen: int = _D["lam_widen"]

    def __post_init__(self) -> None:
        # validated in field order, so the first bad field is the one reported
        check_choice("method", self.method, METHODS)
        check_choice("role", self.role, READ_ROLES)
        for name in ("top_rate", "bar", "filter_rate"):
            object.__setattr__(self, name, _rate(name, getattr(self, name)))
        if not (isinstance(self.lam, str) and self.lam == "auto"):
            lam = _real(self.lam)
            if lam is None or not 0 <= lam < math.inf:
                raise ParameterError(
                    f"lam must be 'auto' or a finite number >= 0, got {self.lam!r}"
                )
            object.__setattr__(self, "lam", lam)
        pair = list(self.lam_range) if isinstance(self.lam_range, (tuple, list)) else []
        bounds = [_real(x) for x in pair]
        lo, hi = (bounds[0], bounds[1]) if len(bounds) == 2 else (None, None)
        if lo is None or hi is None or not 0 <= lo <= hi < math.inf:
            raise ParameterError(
                f"lam_range must be a pair (lo, hi) of finite numbers with 0 <= lo <= hi, "
                f"got {self.lam_range!r}"
            )
        object.__setattr__(self, "lam_range", (lo, hi))
        eps = _real(self.eps)
        if eps is None or not 0 < eps < math.inf:
            raise ParameterError(f"eps must be a finite number > 0, got {self.eps!r}")
        object.__setattr__(self, "eps", eps)
        widen = self.lam_widen
        if (
            not isinstance(widen, int)
            or isinstance(widen, bool)
            or not 0 <= widen <= MAX_LAMBDA_WIDEN
        ):
            raise ParameterError(
                f"lam_widen must be an integer from 0 to {MAX_LAMBDA_WIDEN} (doublings of the top "
                f"of lam_range), got {widen!r}"
            )

    @property
    def auto_lambda(self) -> bool:
        """Whether lambda is searched (``lam="auto"``)."""
        return isinstance(self.lam, str)

    @property
    def stored_roles(self) -> tuple[str, ...]:
        """The stored roles whose counts this identification reads."""
        return tuple(ROLES) if self.role == "all" else (self.role,)

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


#: The defaults, for the signatures that spell the parameters out (:func:`identify`).
DEFAULTS = IdentifyParams()


def resolve_params(
    params: object,
    legacy: Mapping[str, Any],
    *,
    method: object = None,
    where: str,
) -> IdentifyParams:
    """The parameters of a function that re-runs the identification.

    ``params`` is the new ``params=`` argument; ``legacy`` the deprecated ``**identify_kwargs``
    (a :class:`DeprecationWarning`, for one release); ``method`` the function's own ``method``
    argument (None: the one in ``params``).
    """
    if params is not None and not isinstance(params, IdentifyParams):
        raise ParameterError(
            f"{where} takes params=IdentifyParams(...), got {type(params).__name__}"
        )
    if legacy:
        if params is not None:
            raise ParameterError(
                f"{where} got both params= and identification keywords "
                f"({', '.join(sorted(legacy))}); put them all in params=IdentifyParams(...)"
            )
        warnings.warn(
            f"{where}(..., {', '.join(f'{k}=...' for k in legacy)}) is deprecated; pass "
            f"params=IdentifyParams({', '.join(f'{k}=...' for k in legacy)}) instead (the "
            "keywords will be removed in the next release)",
            DeprecationWarning,
            stacklevel=3,
        )
        params = IdentifyParams.from_mapping(legacy, where=where)
    out = params if isinstance(params, IdentifyParams) else DEFAULTS
    if method is not None and method != out.method:
        if params is not None and not legacy and out.method != DEFAULTS.method:
            raise ParameterError(
                f"{where} got method={method!r} and params.method={out.method!r}; give one"
            )
        out = out.replace(method=method)
    return out


def params_of(identification: object) -> IdentifyParams:
    """The :class:`IdentifyParams` an identification result was made with (from its attrs)."""
    attrs = getattr(identification, "attrs", None) or {}
    missing = [k for k in ("method", "role", "top_rate", "bar") if k not in attrs]
    if missing:
        raise ParameterError(
            f"identification must be a Dataset returned by identify(); it lacks attrs {missing}"
        )
    values: dict[str, Any] = {k: attrs[k] for k in ("method", "role", "top_rate", "bar")}
    for key, attr in (
        ("filter_rate", "filter_rate"),
        ("lam", "lam_requested"),
        ("lam_range", "lam_range"),
        ("eps", "eps"),
        ("lam_widen", "lam_widen"),
    ):
        if attr in attrs:
            values[key] = attrs[attr]
    if "lam_range" in values:
        values["lam_range"] = tuple(values["lam_range"])
    return IdentifyParams.from_mapping(values)


def lambda_bound_message(attrs: Mapping[str, Any]) -> str:
    """One line saying that the automatic lambda ended at the top of its range, and what to do."""
    lo, hi = attrs["lam_range_searched"]
    widened = int(attrs.get("lambda_widened", 0))
    head = (
        f"the automatic lambda {attrs['lambda']:.6g} ended at the top of its search range "
        f"[{lo:.6g}, {hi:.6g}]"
    )
    if widened >= int(attrs.get("lam_widen", 0)) and widened > 0:
        return (
            f"{head} after doubling its top {widened} time(s): no selected neuron is general at "
            "any lambda tried, so the condition does not determine lambda on these counts; "
            "choose one with --lambda"
        )
    return (
        f"{head}: the condition still holds there, so the largest lambda may lie above it; "
        f"widen the range (--lambda-range {lo:g},{2 * hi:g}) or let it grow "
        f"(--lambda-widen {MAX_LAMBDA_WIDEN})"
    )


__all__ = [
    "IdentifyParams",
    "Method",
    "METHODS",
    "MAX_LAMBDA_WIDEN",
    "DEFAULTS",
    "resolve_params",
    "params_of",
    "lambda_bound_message",
]
