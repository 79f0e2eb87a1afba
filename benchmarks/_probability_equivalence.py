"""A one-off check, not run by ``make bench`` (it takes no ``--json``): the cluster
interval of ``activation_probability`` (numpy per language, fast Beta
quantile) against the xarray formula with ``scipy.special.betaincinv`` it replaced, on the
calibration's ``tests`` cells (``calibration.full_grid``): the largest relative difference of
the bounds and the coverage of the true probability by each (which must be identical).

Usage: python benchmarks/_probability_equivalence.py [--reps N]
"""

from __future__ import annotations

import argparse
import warnings

import calibration
import numpy as np
import stats
from _simulate import as_layer_neuron_language, make_truth, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="replicates per cell")
    args = parser.parse_args()
    from langneurons.analysis.uncertainty import activation_probability

    warnings.simplefilter("ignore", RuntimeWarning)
    worst, pairs, changed = 0.0, 0, 0
    for i, cell in enumerate(c for c in calibration.full_grid() if c.family == "tests"):
        truth = make_truth(cell.shape, 0)
        rng = np.random.default_rng([0, 1])
        p_true = as_layer_neuron_language(truth.p_true, cell.shape)
        for _ in range(args.reps):
            run = simulate(truth, rng)
            for kw in ({}, {"cluster": "sequence"}):
                new = activation_probability(run, method="cluster", ci=calibration.CI, **kw)
                with stats.old_path("probability"):
                    old = activation_probability(run, method="cluster", ci=calibration.CI, **kw)
                for v in ("lower", "upper"):
                    a, b = new[v].values, old[v].transpose(*new[v].dims).values
                    with np.errstate(divide="ignore", invalid="ignore"):
                        rel = np.where(a == b, 0.0, np.abs(a - b) / np.abs(b))
                    worst = max(worst, float(np.nanmax(rel)))
                cover = [
                    (r["lower"].values <= p_true) & (p_true <= r["upper"].values)
                    for r in (new, old)
                ]
                pairs += cover[0].size
                changed += int((cover[0] != cover[1]).sum())
        print(f"cell {i}: worst so far {worst:.2e}, coverage changed {changed}")
    print(
        f"{pairs} (neuron, language) intervals: largest relative difference {worst:.2e}; "
        f"coverage of the true probability changed for {changed}"
    )


if __name__ == "__main__":
    main()
