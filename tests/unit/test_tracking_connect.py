"""MLflow's Spark model logging in a process whose ``__main__`` has no file (``python -c``, a pytest-xdist worker)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import REPO

IMPORT = """
import sys
{guard}
try:
    import pyspark.ml.connect
    print("imported")
except ImportError:
    print("import error")
"""
GUARDED = """
from dmine_spark.analyze.tracking import _connect_import_cannot_exit
ctx = _connect_import_cannot_exit()
ctx.__enter__()
"""


def _run(guard: str) -> subprocess.CompletedProcess[str]:
    code = IMPORT.format(guard=guard)
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(importlib.util.find_spec("grpc") is not None, reason="with grpcio, pyspark's connect imports")
def test_the_connect_import_fails_instead_of_ending_a_python_c_process() -> None:
    bare = _run("")
    guarded = _run(GUARDED)
    # the guarded import always reaches the next line: "imported" where this pyspark's connect package needs
    # no grpcio (3.5), else the ImportError MLflow handles
    assert guarded.returncode == 0 and guarded.stdout.strip() in {"imported", "import error"}, guarded.stderr[-2000:]
    if not bare.stdout.strip():
        # what the guard is for: pyspark (4.x) took `python -c` for its doctest runner and exited with status 0
        assert bare.returncode == 0 and "Skipping doctests" in bare.stderr
        assert guarded.stdout.strip() == "import error"


def test_the_guard_changes_only_a_process_without_a_main_file_and_restores_it() -> None:
    from dmine_spark.analyze.tracking import _connect_import_cannot_exit

    main = sys.modules["__main__"]
    bare = getattr(main, "__spec__", None) is None and not hasattr(main, "__file__") and not hasattr(sys, "ps1")
    had = hasattr(sys, "ps1")
    with _connect_import_cannot_exit():
        # pytest's own __main__ has a file (nothing changes); a pytest-xdist worker's has none
        assert hasattr(sys, "ps1") == (had or bare)
    assert hasattr(sys, "ps1") == had
