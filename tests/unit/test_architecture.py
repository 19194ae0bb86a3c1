"""The package's layering as users and executors meet it: what an import pulls in, what the API exposes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


def _modules_after(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_encoder_core_loads_without_spark() -> None:
    assert "pyspark" not in _modules_after("import dmine_spark.features.encoder")


def test_importing_the_package_starts_nothing_heavy() -> None:
    assert not {"pyspark", "torch", "pandas"} & _modules_after("import dmine_spark")


def test_the_public_api_is_the_documented_names() -> None:
    import dmine_spark as dm

    assert {"Pipeline", "load_model", "embed", "session", "ConfigError", "TextCleaner", "Embedder"} <= set(dm.__all__)
    assert all(getattr(dm, name) is not None for name in dm.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dm.nope  # noqa: B018


def test_the_cli_lists_every_stage_of_the_stage_table() -> None:
    from dmine_spark.cli.registry import COMMANDS
    from dmine_spark.runner.stages import STAGES

    assert {s.name for s in STAGES} <= set(COMMANDS)


def test_the_command_line_parser_loads_no_spark() -> None:
    assert "pyspark" not in _modules_after("from dmine_spark.cli import build_parser; build_parser()")
