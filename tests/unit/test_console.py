"""What reaches the user's console: one line per error, the traceback only with --verbose, and no
library chatter from the JVM's start-up configuration; no JVM."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmine_spark.cli import main
from dmine_spark.config import SparkProfile
from dmine_spark.spark import session as spark_session
from tests.conftest import PIPELINE_CONF


def _log4j_levels() -> dict[str, str]:
    """Logger name -> level of the log4j2 configuration dmine gives the driver."""
    props = {}
    for line in spark_session.LOG4J_CONF.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            props[key.strip()] = value.strip()
    return {
        props[k]: props[k.removesuffix(".name") + ".level"].lower()
        for k in props
        if k.startswith("logger.") and k.endswith(".name")
    }


def test_log4j_keeps_netlibs_blas_warnings_off_the_console() -> None:
    """MLlib's first fit asks netlib for a native BLAS; its "Failed to load implementation" WARN is not ours."""
    assert _log4j_levels()["dev.ludovic.netlib"] == "error"


def test_without_a_system_blas_netlib_does_not_probe_for_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """netlib 3.2 prints its failed dlopen of libblas.so.3 straight to stderr; the driver skips the probe."""
    monkeypatch.setattr(spark_session, "system_blas", lambda: False)
    opts = spark_session.driver_java_options(tmp_path).split()
    assert "-Ddev.ludovic.netlib.blas.allowNative=false" in opts
    assert f"-Dlog4j2.configurationFile=file:{spark_session.LOG4J_CONF}" in opts
    # a machine with a BLAS keeps the native one, and a profile's own netlib setting is left alone
    monkeypatch.setattr(spark_session, "system_blas", lambda: True)
    assert "allowNative" not in spark_session.driver_java_options(tmp_path)
    monkeypatch.setattr(spark_session, "system_blas", lambda: False)
    own = SparkProfile(conf={"spark.driver.extraJavaOptions": "-Ddev.ludovic.netlib.blas.nativeLib=libopenblas.so"})
    opts = spark_session.driver_java_options(tmp_path, own)
    assert "allowNative" not in opts and opts.startswith("-Ddev.ludovic.netlib.blas.nativeLib=libopenblas.so ")


# --- errors on the command line -----------------------------------------------------------------------------


def _bad_config(tmp_path: Path) -> list[str]:
    return ["run", str(PIPELINE_CONF), "--set", "embed.batch_sise=8", "--work-dir", str(tmp_path / "work")]


def test_a_config_mistake_is_one_line_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_bad_config(tmp_path)) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"dmine: error: {PIPELINE_CONF}: embed.batch_sise: unknown key "
        "(did you mean batch_size? every key is listed in docs/configuration.md)"
    ]
    assert out == ""


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_adds_the_traceback(where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--verbose", *_bad_config(tmp_path)] if where == "before" else [*_bad_config(tmp_path), "-v"]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "Traceback (most recent call last):"
    assert err[-1].startswith(f"dmine: error: {PIPELINE_CONF}: embed.batch_sise: unknown key")


def _boom(*args: object, **kwargs: object) -> object:
    raise RuntimeError("boom\nat some.java.Frame(Frame.java:1)")


def test_an_unexpected_error_is_one_line_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("dmine_spark.spark.profiles.list_profiles", _boom)
    assert main(["profiles"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "dmine: error: profiles failed: RuntimeError: boom; rerun with --verbose for the traceback"
    ]
    assert main(["-v", "profiles"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "in _boom" in err
    assert err.splitlines()[-1] == "dmine: error: profiles failed: RuntimeError: boom"


WORKER_TRACE = """An exception was thrown from the Python worker. Please see the stack trace below.
Traceback (most recent call last):
  File "/x/worker.py", line 1, in main
    process()
  File "/x/encoder.py", line 9, in resolve
    raise ConfigError(msg)
dmine_spark.config.errors.ConfigError: embed.model: 'm' is neither a local model directory nor an installed model
	at org.apache.spark.api.python.BasePythonRunner$ReaderIterator.handlePythonException(PythonRunner.scala:1)
"""


def test_a_mistake_found_on_an_executor_is_the_one_line_error() -> None:
    from dmine_spark.cli import worker_error

    assert worker_error(RuntimeError(WORKER_TRACE)) == (
        "embed.model: 'm' is neither a local model directory nor an installed model",
        True,
    )
    crash = WORKER_TRACE.replace(
        "dmine_spark.config.errors.ConfigError: embed.model: 'm' is neither a local model directory nor an installed model",
        "ZeroDivisionError: division by zero",
    )
    assert worker_error(RuntimeError(crash)) == ("ZeroDivisionError: division by zero", False)
    assert worker_error(RuntimeError("plain")) == (None, False)


def test_main_prints_an_executor_s_config_error_as_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dmine_spark import cli

    def fails(args) -> int:
        raise RuntimeError(WORKER_TRACE)

    import dataclasses

    fails.__module__ = cli.COMMANDS["run"].run.__module__  # the parser groups commands by their module
    monkeypatch.setitem(cli.COMMANDS, "run", dataclasses.replace(cli.COMMANDS["run"], run=fails))
    assert main(["run", str(PIPELINE_CONF)]) == 2
    err = capsys.readouterr().err
    assert err == "dmine: error: embed.model: 'm' is neither a local model directory nor an installed model\n"
