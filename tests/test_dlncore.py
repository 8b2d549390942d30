"""Tests of the package itself: what ``import dlncore`` loads and what it exports."""

import subprocess
import sys

import dlncore as dc


def test_import_loads_no_plotting_library_and_no_compiler():
    code = (
        "import sys, dlncore\n"
        "print(sorted(m for m in ('matplotlib', 'seaborn', 'numba') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_exported_name_exists():
    assert all(hasattr(dc, name) for name in dc.__all__)
    assert "plotting" not in dc.__all__
