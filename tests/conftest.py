"""Shared fixtures: one SparkSession and one encoder for the whole test session."""

from __future__ import annotations

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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# exported ONNX models of this test session stay out of the user's cache
os.environ.setdefault("DMINE_ONNX_CACHE", tempfile.mkdtemp(prefix="dmine_onnx_"))
# models, reports and the MLflow store of configs without a work_dir stay out of the checkout
os.environ.setdefault("DMINE_WORK_DIR", tempfile.mkdtemp(prefix="dmine_test_work_"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this machine")
    for item in items:
        if "gpu" in item.keywords:
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
    from dmine_spark.config import load_profile
    from dmine_spark.spark.session import build_session

    profile = load_profile("local", REPO / "conf")
    # the JDBC source tests read from PostgreSQL through its driver from Maven Central
    session = build_session(profile, work_dir, app_name="dmine-tests", packages=[POSTGRES_DRIVER])
    yield session
    session.stop()
    shutil.rmtree(work_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def encoder():
    """The default model, loaded once for every test that needs it."""
    from dmine_spark.features.encoder import ModelSpec, get_encoder

    return get_encoder(ModelSpec(), num_threads=2)


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
