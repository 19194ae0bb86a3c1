"""Shared fixtures: one SparkSession, one encoder and one BANKING77 pipeline run for the whole test session."""

from __future__ import annotations

import atexit
import csv
import importlib.util
import io
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("DMINE_DATASETS", REPO.parent / "shared" / "datasets"))
BANKING77 = DATASETS / "banking77"
PIPELINE_CONF = REPO / "conf" / "base" / "pipelines" / "banking77.yaml"
POSTGRES_DRIVER = "org.postgresql:postgresql:42.7.14"

# pyspark 3.5's pyspark.testing imports pyspark.pandas, which still names np.NaN (gone in numpy 2, which
# dmine_spark's language detector needs); the tests' assertDataFrameEqual does not depend on it otherwise
import numpy as _np  # noqa: E402

if not hasattr(_np, "NaN"):
    _np.NaN = _np.nan

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _session_dir(variable: str, prefix: str) -> None:
    """Point ``variable`` at a fresh temporary folder removed when the test session ends, unless the user set it.

    Under pytest-xdist each worker process gets its own folder (a Derby catalog takes one JVM at a time):
    a fresh one where the controller made the folder, else its own part of the folder the user named.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    made_here = f"_DMINE_TEST_MADE_{variable}"
    if variable in os.environ and not (worker and os.environ.get(made_here)):
        if worker:
            os.environ[variable] = str(Path(os.environ[variable]) / worker)
        return
    folder = tempfile.mkdtemp(prefix=prefix)
    os.environ[variable] = folder
    os.environ[made_here] = "1"
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


# exported ONNX models of this test session stay out of the user's cache
_session_dir("DMINE_ONNX_CACHE", "dmine_onnx_")
# models, reports and the MLflow store of configs without a work_dir stay out of the checkout
_session_dir("DMINE_WORK_DIR", "dmine_test_work_")


# The test modules that read the session's demo pipeline run (the `pipeline_run` fixture): under
# pytest-xdist they go to one worker together, so that run happens once, not once per worker.
SHARED_RUN_MODULES = frozenset(
    {"tests/integration/test_deploy.py", "tests/integration/test_pipeline.py", "tests/integration/test_search.py"}
)


def _module(nodeid: str) -> str:
    """The test module's path in a node id (``tests/x/test_y.py::test_z[p]`` -> ``tests/x/test_y.py``)."""
    return nodeid.split("::")[0]


if importlib.util.find_spec("xdist") is not None:

    def pytest_xdist_make_scheduler(config: pytest.Config, log):
        """Whole test modules per worker (their module fixtures run once), the ``pipeline_run`` readers together.

        ``bash dev.sh test`` runs the suite in two workers this way: while one waits on a JVM start, a
        subprocess or a stream trigger, the other computes.
        """
        from xdist.scheduler import LoadFileScheduling

        # modules in collection order (tests/cluster and tests/integration, the longest, first; the many short
        # unit modules last fill the gaps at the end), not xdist's default of the most tests first
        config.option.loadscopereorder = False

        class ModuleScheduling(LoadFileScheduling):
            def _split_scope(self, nodeid: str) -> str:
                module = _module(nodeid)
                return "pipeline_run" if module in SHARED_RUN_MODULES else module

        return ModuleScheduling(config, log)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from dmine_spark.compat import current_line

    line = current_line()
    readers = {_module(item.nodeid) for item in items if "pipeline_run" in getattr(item, "fixturenames", ())}
    if readers - SHARED_RUN_MODULES:
        raise pytest.UsageError(
            f"add {sorted(readers - SHARED_RUN_MODULES)} to SHARED_RUN_MODULES in tests/conftest.py"
        )
    for item in items:
        if "sparknlp" in item.keywords and not line.sparknlp:
            item.add_marker(pytest.mark.skip(reason=f"Spark NLP has no build for the {line.name} line"))
        if "spark4" in item.keywords and line.name != "4.x":
            item.add_marker(pytest.mark.skip(reason=f"checks the 4.x line; this is {line.name}"))
    gpu = [item for item in items if "gpu" in item.keywords]
    if not gpu:
        return  # torch is imported by the tests that need it, not at collection
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this machine")
    for item in gpu:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def banking77() -> Path:
    """The real BANKING77 dataset from ../shared/datasets."""
    if not (BANKING77 / "train.csv").is_file():
        pytest.fail(f"BANKING77 not found at {BANKING77}; set DMINE_DATASETS to the shared datasets folder")
    return BANKING77


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dmine_work")


@pytest.fixture(scope="session")
def spark(work_dir: Path):
    """The test session's SparkSession: the `local` profile with its own catalog."""
    from dmine_spark.compat import current_line
    from dmine_spark.config import load_profile
    from dmine_spark.spark.session import build_session

    profile = load_profile("local", REPO / "conf")
    # on the 3.5 line the Spark NLP tests share this session, so its jars must be cached (bash dev.sh setup)
    extra = ["sparknlp"] if current_line().sparknlp else None
    # the JDBC source tests read from PostgreSQL through its driver from Maven Central
    session = build_session(profile, work_dir, app_name="dmine-tests", packages=[POSTGRES_DRIVER], extra_jars=extra)
    yield session
    session.stop()
    shutil.rmtree(work_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def encoder():
    """The default model in fp32 (the reference the other precisions are compared to), loaded once."""
    from dmine_spark.features.encoder import ModelSpec, get_encoder

    return get_encoder(ModelSpec(precision="fp32"), num_threads=2)


@pytest.fixture(scope="session")
def banking77_texts(banking77: Path) -> list[str]:
    import csv

    with open(banking77 / "test.csv", newline="", encoding="utf-8") as fh:
        return [row["text"] for row in csv.DictReader(fh)]


@pytest.fixture(scope="session")
def jdbc_url() -> str:
    """A real PostgreSQL server: ``bash .ci/postgres.sh`` starts one and prints the URL (CI sets it)."""
    url = os.environ.get("DMINE_TEST_JDBC_URL")
    if not url:
        msg = "DMINE_TEST_JDBC_URL is not set; run `bash .ci/postgres.sh` and export the URL it prints"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return url


# Injected into the training file of the shared pipeline run: how many of each kind, and where they must end up.
MALFORMED = ['"unterminated quote,card_arrival,extra', "only one field"]
MISSING = [",card_arrival", '"where is my money",']
EMPTY = ['"<p>  </p>",card_arrival', '"\u200b\u200b",top_up_failed']


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def csv_lines(rows: list[dict[str, str]]) -> list[str]:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for r in rows:
        w.writerow([r["text"], r["category"]])
    return buf.getvalue().splitlines(keepends=True)


@pytest.fixture(scope="session")
def dirty_slice(banking77: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Every 4th BANKING77 training row and every 3rd test row, plus known dirty records in train.

    ``held_out`` are the test rows the slice leaves out (shuffled: the file is sorted by intent).
    """
    import random

    train = read_csv_rows(banking77 / "train.csv")[::4]
    every = read_csv_rows(banking77 / "test.csv")
    test = every[::3]
    held_out = [r for i, r in enumerate(every) if i % 3 != 0]
    random.Random(0).shuffle(held_out)
    dups = [dict(r, text="  " + r["text"].upper() + " ") for r in train[:5]]  # same text once cleaned and case-folded
    d = tmp_path_factory.mktemp("banking77_dirty")
    body = csv_lines(train) + csv_lines(dups)
    body += [line + "\n" for line in MALFORMED[1:] + MISSING + EMPTY]
    (d / "train.csv").write_text("text,category\n" + "".join(body) + MALFORMED[0] + "\n", encoding="utf-8")
    (d / "test.csv").write_text("text,category\n" + "".join(csv_lines(test)), encoding="utf-8")
    return {
        "dir": d,
        "train": len(train) + len(dups),
        "test": len(test),
        "labels": {r["category"] for r in train},
        "held_out": held_out,
    }


@pytest.fixture(scope="session")
def pipeline_run(spark, dirty_slice, tmp_path_factory: pytest.TempPathFactory):
    """The demo pipeline (every stage, report and MLflow) on the dirty slice, run once for every test that reads it."""
    from dmine_spark.config import load_config
    from dmine_spark.runner.run import run_stages

    d = dirty_slice["dir"]
    overrides = [
        f"sources.train.path={d}/train.csv",
        f"sources.test.path={d}/test.csv",
        "cluster.k=12",
        "search.enabled=true",
        "search.k=5",
        "database=dmine_it",
        f"work_dir={tmp_path_factory.mktemp('pipeline_work')}",
    ]
    cfg = load_config(PIPELINE_CONF, overrides)
    run, reports = run_stages(spark, cfg, progress=False)
    return cfg, run, reports, overrides
