"""Start-up stays light: the front door and the command line import no heavy module until used."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("xarray", "zarr", "scipy", "scipy.stats", "statsmodels", "torch", "matplotlib", "dask")


def _loaded(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_import_langneurons_and_its_errors_load_nothing_heavy() -> None:
    for code in ("import langneurons", "import langneurons.errors", "import langneurons.cli"):
        heavy = _loaded(code) & set(HEAVY)
        assert not heavy, f"{code} imports {sorted(heavy)}"


def test_help_loads_nothing_heavy() -> None:
    code = (
        "import sys\nfrom langneurons.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    heavy = _loaded(code) & set(HEAVY)
    assert not heavy, f"langneurons --help imports {sorted(heavy)}"


def test_public_names_still_resolve_and_register_the_accessor() -> None:
    code = (
        "import langneurons as ln, xarray as xr\n"
        "assert callable(ln.open_store) and callable(ln.identify)\n"
        "assert ln.SCHEMA_VERSION == 2 and ln.__version__\n"
        "assert hasattr(xr.Dataset, 'neurons')\n"
        "assert set(ln.__all__) <= set(dir(ln))\n"
        "try:\n    ln.nope\nexcept AttributeError as e:\n    print('ok', e)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "ok module 'langneurons' has no attribute 'nope'" in out.stdout
    # xarray imported first: ``import langneurons`` registers ds.neurons at once, as it always did
    code = "import xarray as xr\nimport langneurons\nassert hasattr(xr.Dataset, 'neurons')"
    subprocess.run([sys.executable, "-c", code], check=True)
