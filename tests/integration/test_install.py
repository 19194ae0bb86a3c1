"""Installing dmine_spark into an environment that already has a supported pyspark keeps that pyspark.

A Databricks runtime or an EMR image brings its own pyspark; pip must not replace it. Each case makes a
fresh virtual environment, installs the runtime's pyspark from PyPI, then asks pip what installing this
checkout would change (``--dry-run --report``, so nothing heavy is downloaded).
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.install


@pytest.mark.parametrize("runtime", ["3.5.1", "4.0.1"])
def test_installing_keeps_the_runtimes_pyspark(runtime: str, tmp_path: Path) -> None:
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    py = str(env / "bin" / "python")
    pip = [py, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", f"pyspark=={runtime}"], check=True, timeout=900)
    report = tmp_path / "report.json"
    subprocess.run([*pip, "install", "--dry-run", "--report", str(report), str(REPO)], check=True, timeout=900)
    planned = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "dmine-spark" in planned or "dmine_spark" in planned
    assert "pyspark" not in planned, f"pip would replace the runtime's pyspark {runtime}"
    got = subprocess.run([py, "-c", "import pyspark; print(pyspark.__version__)"], capture_output=True, text=True)
    assert got.stdout.strip() == runtime
    assert sys.version_info >= (3, 10)
