"""Tests of ``IdentifyParams`` as ``params=`` and the deprecated ``**identify_kwargs`` path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import xarray as xr

from langneurons import analysis
from langneurons.analysis import (
    IdentifyParams,
    bootstrap_identification,
    bootstrap_stages,
    shared_by_change,
    spontaneous_alignment,
    type_change,
)
from langneurons.errors import ParameterError

from .test_resample import run_of

P = IdentifyParams(top_rate=0.1, lam_range=(0, 2))

#: every public function that re-runs the identification: name -> call(run, **kw)
FORWARDING: dict[str, Callable[..., xr.Dataset]] = {
    "bootstrap_identification": lambda r, **kw: bootstrap_identification(r, n_boot=2, **kw),
    "bootstrap_stages": lambda r, **kw: bootstrap_stages(r, n_stages=2, n_boot=2, **kw),
    "type_change": lambda r, **kw: type_change(r, r, n_boot=2, **kw),
    "shared_by_change": lambda r, **kw: shared_by_change(r, r, n_boot=2, **kw),
    "spontaneous_alignment": lambda r, **kw: spontaneous_alignment(
        r, r, ["en"], n_boot=2, n_perm=5, **kw
    ),
}


def test_identify_params_is_exported() -> None:
    assert "IdentifyParams" in analysis.__all__ and "select" in analysis.__all__
    assert analysis.IdentifyParams is IdentifyParams


@pytest.mark.parametrize("name", list(FORWARDING))
def test_old_keywords_warn_and_give_the_same_result(name: str) -> None:
    run = run_of()
    call = FORWARDING[name]
    new = call(run, params=P)
    with pytest.warns(DeprecationWarning, match=rf"^{name}\(\.\.\., top_rate=\.\.\., lam_range"):
        old = call(run, top_rate=0.1, lam_range=(0, 2))
    xr.testing.assert_identical(new, old)
    assert new.attrs["identify_params"] == P.to_attrs()


@pytest.mark.parametrize("name", list(FORWARDING))
def test_params_and_keywords_together_or_unknown_are_errors(name: str) -> None:
    run = run_of()
    call = FORWARDING[name]
    with (
        pytest.warns(DeprecationWarning),
        pytest.raises(
            ParameterError, match=rf"^{name} got an unknown identification parameter 'top'"
        ),
    ):
        call(run, top=0.1)
    with pytest.raises(ParameterError, match=rf"^{name} got both params= and identification"):
        call(run, params=P, top_rate=0.2)


def test_method_argument_and_params_method() -> None:
    run = run_of()
    lape = bootstrap_identification(run, n_boot=2, params=P.replace(method="lape"))
    assert lape.attrs["method"] == "lape"
    same = bootstrap_identification(run, "lape", n_boot=2, params=P)
    xr.testing.assert_identical(lape, same)
    with pytest.raises(ParameterError, match=r"got method='ternary' and params.method='lape'"):
        bootstrap_identification(run, "ternary", n_boot=2, params=P.replace(method="lape"))


def test_results_record_every_parameter() -> None:
    out: Any = type_change(run_of(), run_of(1), n_boot=0, params=P)
    assert out.attrs["identify_params"] == {
        "method": "ternary",
        "role": "response",
        "top_rate": 0.1,
        "bar": 0.95,
        "filter_rate": 0.95,
        "lam": "auto",
        "lam_range": [0.0, 2.0],
        "eps": 1e-3,
        "lam_widen": 0,
    }
    assert np.isnan(out["change_low"].values).all()
