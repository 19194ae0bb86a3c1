"""Spark profiles for every place dmine runs: schema, spark-submit options, Databricks jobs; no JVM."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dmine_spark.config import BUILTIN_PROFILES, ConfigError, SparkProfile, load_config, load_profile, profile_path
from dmine_spark.spark import profiles
from dmine_spark.spark.profiles import databricks_job, merge_submit_args, submit_args, submit_env
from tests.conftest import PIPELINE_CONF, REPO

CONF = REPO / "conf"
PROFILE_FILES = sorted(BUILTIN_PROFILES.glob("*.yaml"))

K8S_IMAGE = {"spark.kubernetes.container.image": "registry.example.com/dmine:1"}
K8S = {"kind": "kubernetes", "master": "k8s://https://api.example.com:6443"}
DBX = {"spark_version": "17.3.x-cpu-ml-scala2.13", "node_type_id": "i3.xlarge", "num_workers": 2}


def _profile_file(tmp_path: Path, data: dict[str, Any], name: str = "p") -> Path:
    spark = tmp_path / "conf" / "base" / "spark"
    spark.mkdir(parents=True, exist_ok=True)
    (spark / f"{name}.yaml").write_text(yaml.safe_dump(data))
    return tmp_path / "conf"


def _reject(tmp_path: Path, data: dict[str, Any]) -> str:
    conf = _profile_file(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_profile("p", conf)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(str(conf / "base" / "spark" / "p.yaml") + ": ")
    return msg


def test_every_built_in_profile_validates() -> None:
    kinds = {p.stem: load_profile(p.stem, CONF).kind for p in PROFILE_FILES}
    assert kinds == {
        "local": "local",
        "standalone": "standalone",
        "yarn": "yarn",
        "kubernetes": "kubernetes",
        "databricks": "databricks",
        "databricks-lts35": "databricks",
    }


def test_existing_profiles_and_defaults_unchanged() -> None:
    assert SparkProfile().model_dump(exclude={"kind", "submit", "databricks"}) == {
        "master": "local[2]",
        "app_name": "dmine",
        "catalog": "hive",
        "log_level": "WARN",
        "conf": {},
    }
    assert SparkProfile().kind == "local"
    local = load_profile("local", CONF)
    assert (local.kind, local.master, local.submit, local.databricks) == ("local", "local[2]", None, None)
    assert local.conf["spark.ui.enabled"] == "false"  # YAML booleans still become Spark strings
    standalone = load_profile("standalone", CONF)
    assert (standalone.kind, standalone.master) == ("standalone", "spark://127.0.0.1:7077")


@pytest.mark.parametrize(
    ("master", "kind"),
    [
        ("local[*]", "local"),
        ("local-cluster[2,1,1024]", "local"),
        ("spark://m1:7077,m2:7077", "standalone"),
        ("yarn", "yarn"),
    ],
)
def test_kind_is_read_from_master(master: str, kind: str) -> None:
    assert SparkProfile(master=master).kind == kind


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"kind": "yarn"}, "master: kind yarn needs master yarn"),
        ({"kind": "yarn", "master": "local[4]"}, "master: kind yarn needs master yarn"),
        (
            {"master": "k8s://api.example.com:6443", "conf": K8S_IMAGE},
            "master: kind kubernetes needs master k8s://https://",
        ),
        ({"kind": "standalone", "master": "yarn"}, "master: kind standalone needs master spark://<host>:<port>"),
        ({"master": "mesos://m:5050"}, "master: kind local needs master local[N]"),
        ({**K8S}, "conf: kind kubernetes needs spark.kubernetes.container.image"),
        ({**K8S, "conf": K8S_IMAGE}, "conf: kind kubernetes needs spark.sql.warehouse.dir"),
        ({"kind": "databricks"}, "databricks: kind databricks needs a databricks section"),
        (
            {"kind": "databricks", "master": "yarn", "databricks": DBX},
            "master: a kind: databricks profile has no master",
        ),
        ({"master": "yarn", "databricks": DBX}, "databricks: only a kind: databricks profile has a databricks section"),
        ({"kind": "databricks", "databricks": DBX, "submit": {}}, "submit: Databricks runs jobs, not spark-submit"),
        ({"master": "local[2]", "submit": {"deploy_mode": "cluster"}}, "submit: deploy_mode cluster needs a cluster"),
        ({"master": "spark://h:7077", "submit": {"deploy_mode": "cluster"}}, "submit: deploy_mode cluster: Spark"),
        (
            {**K8S, "conf": {**K8S_IMAGE, "spark.sql.warehouse.dir": "s3a://w"}, "submit": {"deploy_mode": "cluster"}},
            "submit: deploy_mode cluster on kubernetes uploads",
        ),
        (
            {"master": "yarn", "submit": {"env": {"PYSPARK_PYTHON": "./environment/bin/python"}}},
            "submit: env PYSPARK_PYTHON ./environment/bin/python needs an archive unpacked as environment",
        ),
        (
            {
                "master": "yarn",
                "submit": {
                    "deploy_mode": "cluster",
                    "archives": ["hdfs:///envs/venv.tar.gz#environment"],
                    "env": {"PYSPARK_PYTHON": "./environment/bin/python"},
                },
            },
            "submit: deploy_mode cluster runs the driver in the cluster too: set conf spark.pyspark.driver.python",
        ),
        (
            {"master": "yarn", "submit": {"extra_args": ["--py-files", "x.zip"]}},
            "submit.extra_args: --py-files belongs",
        ),
        (
            {
                "master": "yarn",
                "conf": {
                    "spark.dynamicAllocation.enabled": True,
                    "spark.dynamicAllocation.shuffleTracking.enabled": False,
                },
            },
            "conf: spark.dynamicAllocation.enabled needs spark.dynamicAllocation.shuffleTracking.enabled",
        ),
        ({"kind": "databricks", "databricks": {**DBX, "spark_version": "17.3"}}, "databricks.spark_version: expected"),
        (
            {"kind": "databricks", "databricks": {**DBX, "autoscale": {"min_workers": 1, "max_workers": 2}}},
            "databricks: give exactly one of num_workers or autoscale",
        ),
        (
            {
                "kind": "databricks",
                "databricks": {
                    **{k: v for k, v in DBX.items() if k != "num_workers"},
                    "autoscale": {"min_workers": 5, "max_workers": 2},
                },
            },
            "databricks.autoscale: min_workers 5 is above max_workers 2",
        ),
        (
            {"kind": "databricks", "databricks": {**DBX, "wheel": "dist/dmine.whl"}},
            "databricks.wheel: 'dist/dmine.whl' is not a .whl under",
        ),
        (
            {"kind": "databricks", "databricks": {**DBX, "work_dir": "dmine_work"}},
            "databricks.work_dir: expected a path the driver can open",
        ),
        ({"kind": "databricks", "databricks": {**DBX, "node_typ_id": "x"}}, "databricks.node_typ_id: unknown key"),
    ],
)
def test_each_mistake_is_one_line_naming_the_key(tmp_path: Path, data: dict[str, Any], expected: str) -> None:
    assert expected in _reject(tmp_path, data)


def test_an_archive_in_spark_archives_conf_satisfies_pyspark_python() -> None:
    p = SparkProfile.model_validate(
        {
            "master": "yarn",
            "conf": {"spark.archives": "hdfs:///envs/venv.tar.gz#env"},
            "submit": {"env": {"PYSPARK_PYTHON": "./env/bin/python"}},
        }
    )
    assert submit_env(p) == {"PYSPARK_PYTHON": "./env/bin/python"}


def test_submit_args_standalone() -> None:
    args = submit_args(load_profile("standalone", CONF))
    assert args[:4] == ["--master", "spark://127.0.0.1:7077", "--deploy-mode", "client"]
    assert "--py-files" not in args and "--archives" not in args
    assert ["--conf", "spark.executor.memory=4g"] == args[args.index("spark.executor.memory=4g") - 1 :][:2]


def test_submit_args_yarn_ships_the_environment_and_merges_py_files() -> None:
    profile = load_profile("yarn", CONF)
    args = submit_args(
        profile, py_files=["build/spark-submit/dmine_spark.zip"], packages=["org.postgresql:postgresql:42.7.14"]
    )
    assert args[:4] == ["--master", "yarn", "--deploy-mode", "client"]
    assert args[args.index("--archives") + 1] == "hdfs:///apps/dmine/dmine-venv.tar.gz#environment"
    assert args[args.index("--py-files") + 1] == "build/spark-submit/dmine_spark.zip"
    assert args[args.index("--packages") + 1] == "org.postgresql:postgresql:42.7.14"
    confs = {args[i + 1] for i, a in enumerate(args) if a == "--conf"}
    assert {"spark.yarn.queue=analytics", "spark.dynamicAllocation.enabled=true"} <= confs
    assert "spark.dynamicAllocation.shuffleTracking.enabled=true" in confs
    assert submit_env(profile) == {"PYSPARK_PYTHON": "./environment/bin/python"}
    assert args.count("--py-files") == args.count("--archives") == 1


def test_submit_args_kubernetes() -> None:
    args = submit_args(load_profile("kubernetes", CONF))
    assert args[:4] == ["--master", "k8s://https://kubernetes.example.com:6443", "--deploy-mode", "cluster"]
    confs = {args[i + 1].split("=", 1)[0]: args[i + 1].split("=", 1)[1] for i, a in enumerate(args) if a == "--conf"}
    assert confs["spark.kubernetes.container.image"].startswith("registry.example.com/")
    assert confs["spark.kubernetes.namespace"] == "dmine"
    assert confs["spark.kubernetes.authenticate.driver.serviceAccountName"] == "spark"
    assert confs["spark.kubernetes.file.upload.path"].startswith("s3a://")


def test_submit_args_local_has_no_deploy_mode_and_packages_merge_once() -> None:
    p = SparkProfile(master="local[4]", conf={"spark.jars.packages": "a:b:1"})
    assert submit_args(p, packages=["c:d:2", "a:b:1"]) == ["--master", "local[4]", "--packages", "a:b:1,c:d:2"]


def test_submit_args_refuses_databricks() -> None:
    with pytest.raises(ConfigError, match="dmine databricks-job"):
        submit_args(load_profile("databricks", CONF))


def test_command_line_wins_and_list_options_merge() -> None:
    merged = merge_submit_args(
        ["--master", "yarn", "--archives", "env.tgz#environment", "--conf", "spark.executor.memory=8g"],
        ["--master=local[2]", "--archives", "models.zip#models", "--conf", "spark.executor.memory=2g", "--verbose"],
    )
    assert merged.count("--archives") == 1
    assert merged[merged.index("--archives") + 1] == "env.tgz#environment,models.zip#models"
    # spark-submit keeps the last --master and the last value of a --conf key: the command line's
    assert merged[len(merged) - 1 - merged[::-1].index("--master") + 1] == "local[2]"
    assert merged[len(merged) - 1 - merged[::-1].index("--conf") + 1] == "spark.executor.memory=2g"
    assert merged[-1] == "--verbose"


def test_databricks_job_has_the_jobs_2_1_shape() -> None:
    overrides = ["sources.train.path=/Volumes/main/dmine/raw/train.csv", "embed.batch_size=32"]
    job = databricks_job(PIPELINE_CONF, "databricks", overrides=overrides, conf_dir=CONF)
    job = json.loads(json.dumps(job))  # plain JSON all the way down
    assert job["name"] == "dmine-banking77_intents"
    assert job["max_concurrent_runs"] == 1
    [task] = job["tasks"]
    assert task["task_key"] == "banking77_intents"
    wheel_task = task["python_wheel_task"]
    assert (wheel_task["package_name"], wheel_task["entry_point"]) == ("dmine_spark", "dmine")
    assert wheel_task["parameters"] == [
        "run",
        "/Workspace/Shared/dmine/conf/base/pipelines/banking77.yaml",
        "--profile",
        "databricks",
        "--set",
        overrides[0],
        "--set",
        overrides[1],
    ]
    cluster = task["new_cluster"]
    assert cluster["spark_version"] == "17.3.x-cpu-ml-scala2.13"
    assert cluster["autoscale"] == {"min_workers": 1, "max_workers": 4} and "num_workers" not in cluster
    assert cluster["spark_env_vars"]["HF_HUB_OFFLINE"] == "1"
    assert cluster["spark_env_vars"]["DMINE_CONF_DIR"] == "/Workspace/Shared/dmine/conf"
    assert cluster["spark_conf"]["spark.sql.adaptive.enabled"] == "true"
    assert task["libraries"] == [{"whl": "/Volumes/main/dmine/wheels/dmine_spark-0.2.0-py3-none-any.whl"}]
    assert (task["max_retries"], task["timeout_seconds"]) == (1, 7200)


def test_databricks_job_wheel_override_and_fixed_size(tmp_path: Path) -> None:
    conf = _profile_file(tmp_path, {"kind": "databricks", "databricks": DBX}, name="dbx")
    pipeline = tmp_path / "conf" / "base" / "pipelines" / "b.yaml"
    pipeline.parent.mkdir(parents=True)
    pipeline.write_text(PIPELINE_CONF.read_text())
    wheel = "dbfs:/FileStore/wheels/dmine_spark-0.2.0-py3-none-any.whl"
    job = databricks_job(pipeline, "dbx", wheel=wheel, conf_dir=conf)
    task = job["tasks"][0]
    assert task["libraries"] == [{"whl": wheel}]
    assert task["new_cluster"]["num_workers"] == 2 and "autoscale" not in task["new_cluster"]
    assert task["python_wheel_task"]["parameters"][1:4] == [
        "/Workspace/Shared/dmine/conf/base/pipelines/b.yaml",
        "--profile",
        "dbx",
    ]
    with pytest.raises(ConfigError, match=r"databricks.wheel: no wheel to install"):
        databricks_job(pipeline, "dbx", conf_dir=conf)
    with pytest.raises(ConfigError, match=r"--wheel: 'dist/x.whl' is not a .whl under"):
        databricks_job(pipeline, "dbx", wheel="dist/x.whl", conf_dir=conf)


def test_a_databricks_job_reads_a_profile_file_from_the_synced_conf(tmp_path: Path) -> None:
    """A profile given as a file runs on the workspace's copy of conf/; one outside conf/ would not be there."""
    conf = _profile_file(tmp_path, {"kind": "databricks", "databricks": DBX}, name="dbx")
    pipeline = conf / "base" / "pipelines" / "b.yaml"
    pipeline.parent.mkdir(parents=True)
    pipeline.write_text(PIPELINE_CONF.read_text())
    wheel = "dbfs:/FileStore/wheels/dmine_spark-0.2.0-py3-none-any.whl"
    job = databricks_job(pipeline, "../spark/dbx.yaml", wheel=wheel)  # relative to the config's folder
    assert job["tasks"][0]["python_wheel_task"]["parameters"][2:4] == [
        "--profile",
        "/Workspace/Shared/dmine/conf/base/spark/dbx.yaml",
    ]
    outside = tmp_path / "dbx.yaml"
    outside.write_text((conf / "base" / "spark" / "dbx.yaml").read_text())
    with pytest.raises(ConfigError, match=r"reads its profile from /Workspace/Shared/dmine/conf; move the file under"):
        databricks_job(pipeline, str(outside), wheel=wheel)


def test_a_spark_35_lts_runtime_runs_the_spark_nlp_backends() -> None:
    over = ["embed.backend=sparknlp", "clean.backend=sparknlp"]
    job = databricks_job(PIPELINE_CONF, "databricks-lts35", overrides=over, conf_dir=CONF)
    [task] = job["tasks"]
    assert task["new_cluster"]["spark_version"] == "16.4.x-cpu-ml-scala2.12"
    jars = [lib["jar"].rsplit("/", 1)[-1] for lib in task["libraries"] if "jar" in lib]
    from dmine_spark.spark.jars import SPARKNLP_JARS

    assert jars == [j.file_name for j in SPARKNLP_JARS]  # the explicit list, every jar of it
    # the 3.5 runtime's job without a Spark NLP backend is the plain one
    assert databricks_job(PIPELINE_CONF, "databricks-lts35", conf_dir=CONF)["tasks"][0]["new_cluster"]


def test_spark_nlp_backends_need_a_35_runtime_and_their_jars(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^embed.backend: sparknlp: runtime 17\.3\.x.* Spark 4\.x.*16\.4 LTS"):
        databricks_job(PIPELINE_CONF, "databricks", overrides=["embed.backend=sparknlp"], conf_dir=CONF)
    conf = _profile_file(
        tmp_path, {"kind": "databricks", "databricks": {**DBX, "spark_version": "15.4.x-scala2.12"}}, name="lts"
    )
    pipeline = tmp_path / "conf" / "base" / "pipelines" / "b.yaml"
    pipeline.parent.mkdir(parents=True)
    pipeline.write_text(PIPELINE_CONF.read_text())
    wheel = "dbfs:/FileStore/wheels/dmine_spark-0.2.0-py3-none-any.whl"
    with pytest.raises(
        ConfigError, match=r"^databricks.jars: clean.backend sparknlp .*spark-nlp_2.12-5.5.3.jar and 8 more"
    ):
        databricks_job(pipeline, "lts", wheel=wheel, overrides=["clean.backend=sparknlp"], conf_dir=conf)


@pytest.mark.parametrize(
    ("runtime", "error"),
    [("13.3.x-scala2.12", r"Spark 3\.4 or older"), ("16.4.x-scala2.13", r"built for Scala 2\.12, not 2\.13")],
)
def test_databricks_runtimes_off_the_supported_lines_are_refused(tmp_path: Path, runtime: str, error: str) -> None:
    msg = _reject(tmp_path, {"kind": "databricks", "databricks": {**DBX, "spark_version": runtime}})
    assert re.search(rf"databricks.spark_version: .*{error}", msg), msg


def test_databricks_job_validates_overrides_and_profile_kind() -> None:
    with pytest.raises(ConfigError, match="embed.batch_sise: unknown key"):
        databricks_job(PIPELINE_CONF, "databricks", overrides=["embed.batch_sise=3"], conf_dir=CONF)
    with pytest.raises(ConfigError, match="profile 'yarn' is kind yarn; a Databricks job needs kind: databricks"):
        databricks_job(PIPELINE_CONF, "yarn", conf_dir=CONF)


def _cli(argv: list[str]) -> int:
    from dmine_spark.cli import build_parser
    from dmine_spark.cli.registry import COMMANDS

    args = build_parser().parse_args(argv)
    return COMMANDS[args.command].run(args)


def test_profiles_command_lists_kind_and_master(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["profiles", "--conf-dir", str(CONF)]) == 0
    lines = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()}
    assert set(lines) == {p.stem for p in PROFILE_FILES}
    assert lines["yarn"] == ["yarn", "yarn", "built-in"]
    assert lines["local"] == ["local", "local[2]", "built-in"]
    assert lines["databricks"][0] == "databricks"


def test_profiles_command_stops_at_the_first_invalid_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = _profile_file(tmp_path, {"master": "local[2]"}, name="a_ok")
    _profile_file(tmp_path, {"kind": "yarn"}, name="b_bad")
    _profile_file(tmp_path, {"master": "yarn"}, name="c_never")
    with pytest.raises(ConfigError, match=r"b_bad.yaml: master: kind yarn needs master yarn"):
        _cli(["profiles", "--conf-dir", str(conf)])
    out = capsys.readouterr().out
    assert out.startswith("a_ok") and "c_never" not in out


def test_databricks_job_command_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "job.json"
    argv = ["databricks-job", str(PIPELINE_CONF), "--set", "embed.batch_size=16", "--out", str(out)]
    assert _cli(argv) == 0
    job = json.loads(out.read_text())
    assert job["tasks"][0]["python_wheel_task"]["parameters"][-2:] == ["--set", "embed.batch_size=16"]
    assert "databricks jobs create --json @" in capsys.readouterr().out


def test_spark_submit_helper_prints_merged_args(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["submit-args", "yarn", "--conf-dir", str(CONF), "--py-files", "z.zip", "--", "--archives", "m.zip#models"]
    assert profiles._main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[lines.index("--archives") + 1] == "hdfs:///apps/dmine/dmine-venv.tar.gz#environment,m.zip#models"
    assert lines[lines.index("--py-files") + 1] == "z.zip"
    assert profiles._main(["submit-env", "yarn", "--conf-dir", str(CONF)]) == 0
    assert capsys.readouterr().out == "PYSPARK_PYTHON=./environment/bin/python\n"
    assert profiles._main(["submit-args", "databricks", "--conf-dir", str(CONF)]) == 2
    assert "Databricks runs jobs, not spark-submit" in capsys.readouterr().err


# --- where a profile is found: a config file copied anywhere still finds its profile ---------------------

BUILT_IN_NAMES = ["databricks", "databricks-lts35", "kubernetes", "local", "standalone", "yarn"]


def _copied_config(folder: Path, **changes: Any) -> Path:
    """banking77.yaml copied into ``folder`` with absolute data paths, as a user copies it for their own data."""
    data = yaml.safe_load(PIPELINE_CONF.read_text(encoding="utf-8"))
    for src in data["sources"].values():
        src["path"] = str(REPO / src["path"])
    data.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "my_pipeline.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with no conf/ folder, and no $DMINE_CONF_DIR."""
    monkeypatch.delenv("DMINE_CONF_DIR", raising=False)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_a_config_copied_out_of_the_repository_finds_the_built_in_profile(tmp_path: Path, elsewhere: Path) -> None:
    import dmine_spark as dm

    path = _copied_config(tmp_path / "mine")
    cfg = load_config(path)
    assert cfg.profile == "local"
    assert profile_path(cfg.profile, config_path=path) == BUILTIN_PROFILES / "local.yaml"
    assert load_profile(cfg.profile, config_path=path).master == "local[2]"
    assert dm.Pipeline.from_yaml(path).spark_profile().master == "local[2]"  # the notebook's way in


def test_the_built_in_profiles_ship_in_the_wheel(tmp_path: Path) -> None:
    """A non-editable install has the profiles: they are package data of the wheel."""
    import shutil
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "dmine_spark", src / "dmine_spark", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=src,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("dmine_spark-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"dmine_spark/config/profiles/{n}.yaml" for n in BUILT_IN_NAMES} <= names
    assert "dmine_spark/spark/log4j2.properties" in names


def test_a_profile_file_is_read_next_to_the_config(tmp_path: Path, elsewhere: Path) -> None:
    folder = tmp_path / "mine"
    (folder / "spark").mkdir(parents=True)
    (folder / "spark" / "four.yaml").write_text("master: local[4]\n")
    (folder / "one.yaml").write_text("master: local[1]\n")
    for profile, master in (
        ("./spark/four.yaml", "local[4]"),
        ("spark/four.yaml", "local[4]"),
        ("one.yaml", "local[1]"),
    ):
        path = _copied_config(folder, profile=profile)
        assert load_profile(load_config(path).profile, config_path=path).master == master
    with pytest.raises(ConfigError) as err:
        load_profile("./spark/missing.yaml", config_path=path)
    assert str(err.value) == (
        f"profile './spark/missing.yaml': file not found: {folder / 'spark' / 'missing.yaml'} "
        "(a relative path is read from the config file's folder)"
    )


def test_profile_lookup_order(tmp_path: Path, elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Explicit conf dir or $DMINE_CONF_DIR, then the config's conf/ tree, then ./conf, then the built-ins."""

    def conf_with(root: Path, sub: str, master: str) -> Path:
        (root / sub / "spark").mkdir(parents=True, exist_ok=True)
        (root / sub / "spark" / "local.yaml").write_text(f"master: {master}\n")
        return root

    project = tmp_path / "project" / "conf"
    path = _copied_config(project / "base" / "pipelines")
    assert load_profile("local", config_path=path).master == "local[2]"  # the built-in one
    conf_with(elsewhere / "conf", "base", "local[5]")
    assert load_profile("local", config_path=path).master == "local[5]"  # ./conf
    conf_with(project, "base", "local[6]")
    assert load_profile("local", config_path=path).master == "local[6]"  # the config's conf/ beats ./conf
    conf_with(project, "local", "local[7]")
    assert load_profile("local", config_path=path).master == "local[7]"  # conf/local beats conf/base
    monkeypatch.setenv("DMINE_CONF_DIR", str(conf_with(tmp_path / "env_conf", "base", "local[8]")))
    assert load_profile("local", config_path=path).master == "local[8]"  # $DMINE_CONF_DIR first
    explicit = conf_with(tmp_path / "cli_conf", "base", "local[9]")
    assert load_profile("local", explicit, config_path=path).master == "local[9]"  # --conf-dir beats the variable
    assert load_profile("yarn", explicit, config_path=path).kind == "yarn"  # what a folder lacks comes from later


def test_an_unknown_profile_is_one_line_naming_where_it_looked(tmp_path: Path, elsewhere: Path) -> None:
    path = _copied_config(tmp_path / "mine", profile="locla")
    with pytest.raises(ConfigError) as err:
        load_profile(load_config(path).profile, config_path=path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("profile 'locla': no such profile (looked in conf/local/spark, conf/base/spark, built-in)")
    assert f"available: {', '.join(BUILT_IN_NAMES)}; or give a path to a YAML file" in msg


def test_the_cli_finds_a_copied_configs_profile_and_fails_in_one_line(
    tmp_path: Path, elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dmine_spark.cli import main

    path = _copied_config(tmp_path / "mine")
    assert main(["profiles", str(path)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.lstrip("* ").split()[0] for line in listed] == BUILT_IN_NAMES
    assert [line.split()[:2] for line in listed if line.startswith("*")] == [["*", "local"]]  # the one it uses
    assert all(line.rstrip().endswith("built-in") for line in listed)

    work = tmp_path / "work"
    assert main(["run", str(path), "--set", "profile=nope", "--work-dir", str(work)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dmine: error: profile 'nope': no such profile (looked in ")
    assert not work.exists()  # failed before any Spark session


def test_dmine_profiles_shows_where_each_profile_comes_from(
    tmp_path: Path, elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dmine_spark.cli import main

    conf = tmp_path / "conf"
    (conf / "local" / "spark").mkdir(parents=True)
    (conf / "local" / "spark" / "yarn.yaml").write_text("kind: yarn\nmaster: yarn\n")
    (conf / "local" / "spark" / "mine.yaml").write_text("master: local[3]\n")
    assert main(["profiles", "--conf-dir", str(conf)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert sorted(rows) == sorted([*BUILT_IN_NAMES, "mine"])
    assert rows["yarn"][-1] == str(conf / "local" / "spark" / "yarn.yaml")
    assert rows["mine"][1:] == ["local", "local[3]", str(conf / "local" / "spark" / "mine.yaml")]
    assert rows["local"][-1] == "built-in"
