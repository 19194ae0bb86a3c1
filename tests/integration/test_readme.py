"""The README is a front page whose commands and Python example run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def _python_example() -> str:
    section = README.split("## From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_is_a_front_page() -> None:
    assert len(README.splitlines()) <= 220
    for link in re.findall(r"\]\((docs/[^)]+)\)", README):
        path, _, anchor = link.partition("#")
        assert (REPO / path).is_file(), link
        if anchor:  # a heading of that page, as GitHub makes its anchor
            headings = re.findall(r"^#+ (.+)$", (REPO / path).read_text(encoding="utf-8"), re.M)
            anchors = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in anchors, link


def test_the_two_set_up_commands_exist() -> None:
    dev = (REPO / "dev.sh").read_text(encoding="utf-8")
    assert "bash dev.sh demo" in README and "bash dev.sh test" in README
    assert re.search(r"^  demo\)$", dev, re.M) and re.search(r"^  test\)$", dev, re.M)


@pytest.mark.slow
def test_the_python_example_runs(tmp_path: Path) -> None:
    """The example as written, on a twentieth of the sample, without the report, so the test stays short."""
    small = '"sources.train.sample=0.05", "sources.test.sample=0.05", "tracking.enabled=false", "report.enabled=false"'
    code = _python_example().replace(
        'dm.Pipeline.from_yaml("conf/base/pipelines/banking77.yaml")',
        f'dm.Pipeline.from_yaml("conf/base/pipelines/banking77.yaml", overrides=[{small}])',
    )
    assert "overrides=" in code, "the README example no longer reads the demo config"
    env = {**os.environ, "DMINE_WORK_DIR": str(tmp_path / "work")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"classify  banking77-sk_logreg@v1: test accuracy 0\.\d+", proc.stdout)
    assert re.search(r"\|I still have not received my new card\s*\|\w+\s*\|0\.\d+", proc.stdout)
