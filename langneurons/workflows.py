"""Workflows: several analyses run together, the way the command line and the demo run them.

``compare_runs`` compares a base run with an aligned (or any later) run; ``compare_groups``
compares two groups of replicate runs (run-to-run variance as the error term);
``compare_checkpoints`` follows an ordered series of runs. Each returns its parts as
``{part: Dataset}`` and saves nothing; :func:`save_parts` saves them under one naming rule:

- a comparison with base run ``BASE`` is saved under the compared run, in ``compare/``, as
  ``vs-BASE/PART`` with the slashes of ``BASE`` written as ``_`` (``vs-mistral-7b_base/types``);
- a checkpoint series is saved under its last run as ``NAME/PART`` (``checkpoints/trajectories``);
- a comparison of groups A and B is saved under the first run of A as ``groups-A-vs-B/PART``.

The demo of langneurons 0.1 saved its comparison as ``vs-base/PART`` (the last part of the base
run's path); :func:`find_comparison` and :func:`open_comparison` read that name too.

Imports nothing heavy until called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from langneurons.names import SEQ_N_ACTIVE

if TYPE_CHECKING:
    import xarray as xr

    from langneurons.analysis.params import IdentifyParams
    from langneurons.store import ActivationStore

T = TypeVar("T")

#: Every result name of a comparison with a base run starts with this.
COMPARE_PREFIX = "vs-"

#: The parts :func:`compare_runs` returns (``type_change``, ``shared_by_change`` need per-sequence
#: counts in both runs; ``spontaneous`` needs the trained languages). ``mcnemar`` holds every
#: membership test (:func:`~langneurons.analysis.compare.membership_change`).
COMPARE_PARTS: tuple[str, ...] = (
    "types",
    "overlap",
    "transitions",
    "mcnemar",
    "type_change",
    "shared_by_change",
    "spontaneous",
)


def comparison_name(base: str) -> str:
    """The name a comparison with run ``base`` is saved under: ``vs-BASE``, ``_`` for ``/``.

    >>> comparison_name("mistral-7b/base")
    'vs-mistral-7b_base'
    """
    return COMPARE_PREFIX + base.replace("/", "_")


def _names_read(base: str) -> list[str]:
    """The names a comparison with ``base`` may be saved under: the rule's, then the 0.1 demo's."""
    return list(dict.fromkeys([comparison_name(base), COMPARE_PREFIX + base.rsplit("/", 1)[-1]]))


def find_comparison(store: ActivationStore, run: str, base: str) -> str | None:
    """The name under which ``run``'s comparison with ``base`` is saved, or None when none is."""
    prefixes = {name.split("/", 1)[0] for name in store.results(run, "compare")}
    return next((name for name in _names_read(base) if name in prefixes), None)


def open_comparison(store: ActivationStore, run: str, base: str) -> dict[str, xr.Dataset]:
    """The saved parts of ``run``'s comparison with ``base`` (empty when there is none)."""
    prefix = find_comparison(store, run, base)
    if prefix is None:
        return {}
    names = [n for n in store.results(run, "compare") if n.startswith(prefix + "/")]
    return {n[len(prefix) + 1 :]: store.open_result(run, "compare", n) for n in names}


def save_parts(
    save: Callable[[str, str, str, xr.Dataset], T],
    run: str,
    name: str,
    parts: Mapping[str, xr.Dataset],
) -> dict[str, tuple[xr.Dataset, T]]:
    """Save each part as ``compare/NAME/PART`` of ``run`` with ``save(run, kind, name, ds)``.

    ``save`` is :meth:`ActivationStore.save_result` or anything with its signature (the command
    line's results target); the result is ``{part: (dataset, what save returned)}``.
    """
    return {part: (ds, save(run, "compare", f"{name}/{part}", ds)) for part, ds in parts.items()}


def _params(params: IdentifyParams | None) -> IdentifyParams:
    from langneurons.analysis.params import IdentifyParams

    return IdentifyParams() if params is None else params


def compare_runs(
    base_run: xr.Dataset,
    aligned_run: xr.Dataset,
    params: IdentifyParams | None = None,
    *,
    trained_languages: Sequence[str] | None = None,
    n_boot: int = 200,
    n_perm: int = 10000,
    n_swap: int = 99,
    seed: int = 0,
    paired: bool | str = "auto",
    equivalence_margin: float | None = None,
) -> dict[str, xr.Dataset]:
    """Identify language neurons in two runs with the same parameters and compare them.

    Parameters
    ----------
    base_run, aligned_run : xarray.Dataset
        Two runs (``ActivationStore.open_run``) of the same model shape and languages.
    params : IdentifyParams, optional
        The identification of both runs (default ``IdentifyParams()``).
    trained_languages : sequence of str, optional
        The languages the aligned model was trained on: adds the ``spontaneous`` test.
    n_boot, n_perm, seed
        Bootstrap replicates (0: no bootstrap parts), permutations of the spontaneous-alignment
        test, and the seed of both.
    n_swap
        Label-swap permutations of ``type_change`` and ``mask_change`` (the tests that respect
        a fixed selection; see :func:`~langneurons.analysis.distributions.type_change`), run
        when the runs are
        paired (the same seq_ids) and ``n_boot > 0``; 0: none.
    paired : bool or "auto"
        Whether the bootstraps draw both runs' sequences together (``"auto"``: when the runs
        share their seq_ids; see :func:`~langneurons.analysis.distributions.resolve_paired`).
    equivalence_margin : float > 0, optional
        With ``trained_languages``: the margin of the equivalence test of the ``spontaneous``
        part (:func:`~langneurons.analysis.compare.spontaneous_alignment`); none without it.

    Returns
    -------
    dict of str to xarray.Dataset
        ``types`` (:func:`~langneurons.analysis.compare_type_distributions`), ``overlap``,
        ``transitions``, ``mcnemar`` (:func:`~langneurons.analysis.compare.membership_change`:
        McNemar of the selection -- flagged ``degenerate`` when its size is fixed by
        ``top_rate`` -- of each language's mask and each type, Bowker and Stuart-Maxwell);
        with per-sequence counts in both runs and ``n_boot > 0``
        also ``type_change`` and ``shared_by_change``, and when the runs are paired and
        ``n_swap > 0`` ``mask_change`` (each language's mask size) and ``type_switches``
        (neurons switching type, and the direction of the switches), label-swap tests; with
        ``trained_languages``, ``spontaneous`` (bootstrap intervals only with per-sequence counts).
    """
    from langneurons.analysis import compare as cmp
    from langneurons.analysis import distributions as dist
    from langneurons.analysis.identify import identify

    params = _params(params)
    n_boot = dist.check_n_boot(n_boot)  # before any work
    if trained_languages:
        from langneurons.analysis.alignment import check_trained

        check_trained(list(trained_languages), [str(x) for x in base_run["language"].values])
    a = identify(base_run, params.method, **params.keywords())
    b = identify(aligned_run, params.method, **params.keywords())
    parts: dict[str, xr.Dataset] = {
        "types": dist.compare_type_distributions(a, b),
        "overlap": cmp.overlap(a, b),
        "transitions": cmp.transition_table(a, b),
        "mcnemar": cmp.membership_change(a, b),
    }
    has_seq = SEQ_N_ACTIVE in base_run and SEQ_N_ACTIVE in aligned_run
    if has_seq and n_boot > 0:
        # the label-swap test needs the same items in both runs (paired)
        swaps = n_swap if dist.resolve_paired(base_run, aligned_run, paired, "sequence", 1) else 0
        parts["type_change"] = dist.type_change(
            base_run,
            aligned_run,
            params=params,
            n_boot=n_boot,
            seed=seed,
            paired=paired,
            n_perm=swaps,
        )
        if swaps:
            from langneurons.analysis.switches import type_switches

            parts["mask_change"] = dist.mask_change(
                base_run, aligned_run, params=params, n_perm=swaps, seed=seed + 2, paired=paired
            )
            parts["type_switches"] = type_switches(
                base_run, aligned_run, params=params, n_perm=swaps, seed=seed + 3, paired=paired
            )
        parts["shared_by_change"] = dist.shared_by_change(
            base_run, aligned_run, params=params, n_boot=n_boot, seed=seed, paired=paired
        )
    if trained_languages:
        parts["spontaneous"] = cmp.spontaneous_alignment(
            base_run,
            aligned_run,
            list(trained_languages),
            params=params,
            n_boot=n_boot if has_seq else 0,
            n_perm=n_perm,
            seed=seed,
            paired=paired,
            equivalence_margin=equivalence_margin,
        )
    return parts


def groups_name(groups: Sequence[str]) -> str:
    """The name a group comparison is saved under: ``groups-A-vs-B`` (``_`` for ``/``).

    >>> groups_name(["aligned", "base"])
    'groups-aligned-vs-base'
    """
    return "groups-" + "-vs-".join(g.replace("/", "_") for g in groups)


def compare_groups(
    groups: Mapping[str, Sequence[xr.Dataset]],
    params: IdentifyParams | None = None,
    *,
    names: Mapping[str, Sequence[str]] | None = None,
    test: str = "auto",
    n_perm: int = 10000,
    n_boot: int = 200,
    seed: int = 0,
) -> dict[str, xr.Dataset]:
    """Compare two groups of replicate runs (``{name: runs}``, exactly two groups).

    Returns ``groups`` (:func:`~langneurons.analysis.compare.group_comparison`: type counts per
    layer and the headline counts, permutation across runs and Welch's t). With one run per
    group the comparison is descriptive; then, when both runs carry per-sequence counts and
    ``n_boot > 0``, ``type_change`` adds the bootstrap over sequences, whose ``attrs["note"]``
    says that it measures text-sampling noise only, not training variance.
    """
    from langneurons.analysis import compare as cmp
    from langneurons.analysis import distributions as dist
    from langneurons.analysis.groups import ONE_RUN_NOTE

    params = _params(params)
    test_: Any = test
    parts = {
        "groups": cmp.group_comparison(
            groups, params, test=test_, n_perm=n_perm, seed=seed, names=names
        )
    }
    members = [list(runs) for runs in groups.values()]
    if all(len(m) == 1 for m in members) and n_boot > 0:
        (first,), (second,) = members
        if SEQ_N_ACTIVE in first and SEQ_N_ACTIVE in second:
            change = dist.type_change(second, first, params=params, n_boot=n_boot, seed=seed)
            change.attrs["note"] = ONE_RUN_NOTE
            parts["type_change"] = change
    return parts


def compare_checkpoints(
    runs: Sequence[xr.Dataset],
    labels: Sequence[str],
    params: IdentifyParams | None = None,
) -> dict[str, xr.Dataset]:
    """Identify language neurons in an ordered series of runs and follow every count along it.

    Returns ``trajectories`` (:func:`~langneurons.analysis.trajectories`) and ``cochran_q``
    (:func:`~langneurons.analysis.cochran_q`), with ``labels`` naming the runs in order.
    """
    from langneurons.analysis import compare as cmp
    from langneurons.analysis.identify import identify

    params = _params(params)
    results = [identify(run, params.method, **params.keywords()) for run in runs]
    return {
        "trajectories": cmp.trajectories(results, list(labels)),
        "cochran_q": cmp.cochran_q(results, labels=list(labels)),
    }
