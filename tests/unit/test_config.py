"""Config schema, overrides and one-line errors; no JVM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dmine_spark.config import ConfigError, apply_overrides, load_config, load_profile, parse_override
from tests.conftest import PIPELINE_CONF, REPO


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)


def test_banking77_config_validates() -> None:
    cfg = load_config(PIPELINE_CONF)
    assert cfg.task == "banking77"
    assert set(cfg.sources) == {"train", "test"}
    assert cfg.sources["train"].options["header"] == "true"
    assert cfg.table("pred") == "dmine.pred_banking77"
    assert cfg.table("runs") == "dmine.runs"


def test_override_sets_typed_value() -> None:
    cfg = load_config(PIPELINE_CONF, ["embed.batch_size=32", "cluster.enabled=false", "sources.train.sample=0.5"])
    assert cfg.embed.batch_size == 32
    assert cfg.cluster.enabled is False
    assert cfg.sources["train"].sample == 0.5


def test_override_changes_config_hash() -> None:
    assert load_config(PIPELINE_CONF).config_hash() != load_config(PIPELINE_CONF, ["embed.batch_size=32"]).config_hash()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("embed.batch_sise=32", "embed.batch_sise: unknown key"),
        ("embed.batch_size=lots", "embed.batch_size: Input should be a valid integer"),
        ("embed.pooling=max", "embed.pooling: Input should be 'mean' or 'cls'"),
        ("classify.reg_param=-1", "classify.reg_param: Input should be greater than or equal to 0"),
        ("sources.train.path=nowhere/*.csv", "sources.train.path: no file matches 'nowhere/*.csv'"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(PIPELINE_CONF, [override])
    msg = str(err.value)
    assert expected in msg
    assert "\n" not in msg
    assert str(PIPELINE_CONF) in msg


def test_missing_required_key(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ntask: x\n")
    with pytest.raises(ConfigError, match=r"sources: required key is missing"):
        load_config(p)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config("nope.yaml")


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ntask: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c.yaml: line \d+ is not valid YAML"):
        load_config(p)


def test_parse_override_rejects_bad_syntax() -> None:
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("embed.batch_size")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("embed..x=1")
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])


def test_override_into_a_value_fails() -> None:
    with pytest.raises(ConfigError, match="embed.model is a value, not a section"):
        apply_overrides({"embed": {"model": "m"}}, ["embed.model.x=1"])


def test_profiles_validate() -> None:
    local = load_profile("local", REPO / "conf")
    assert local.master.startswith("local")
    assert local.catalog == "hive"
    with pytest.raises(ConfigError, match="profile 'nope': no such profile"):
        load_profile("nope", REPO / "conf")


def test_cli_bad_config_fails_with_one_line_before_spark(tmp_path: Path) -> None:
    """The CLI reports the bad key in one stderr line and never starts Spark."""
    work = tmp_path / "work"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dmine_spark.cli",
            "run",
            str(PIPELINE_CONF),
            "--set",
            "embed.batch_sise=8",
            "--work-dir",
            str(work),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"dmine: error: {PIPELINE_CONF}: embed.batch_sise: unknown key "
        "(did you mean batch_size? every key is listed in docs/configuration.md)"
    ]
    assert proc.stdout == ""
    assert not work.exists()  # the session builder would have created it


def test_stream_reads_a_folder_or_a_topic_not_both() -> None:
    from dmine_spark.config import StreamConfig

    with pytest.raises(ValueError, match="either landing .* or kafka"):
        StreamConfig(landing="in/", kafka={"bootstrap_servers": "b:9092", "topic": "t"})
    assert StreamConfig(kafka={"bootstrap_servers": "b:9092", "topic": "t"}).kafka.starting_offsets == "latest"


def test_monitor_thresholds_are_validated() -> None:
    from dmine_spark.config import MonitorConfig

    with pytest.raises(ValueError, match="ood_rate"):
        MonitorConfig(thresholds={"ood_rate": 1.5})


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["classify.params.CC=3"], "classify.params: 'CC' is not a parameter of LogisticRegression; did you mean C?"),
        (["classify.model=logreg", "classify.params={maxIterr: 3}"], "did you mean maxIter?"),
        (["classify.grid.featuresCol=[a]", "classify.model=logreg", "classify.params={}"], "set by dmine_spark"),
        (["regress.params.maxDeph=3"], "regress.params: 'maxDeph' is not a parameter of GBTRegressor"),
    ],
)
def test_an_estimator_parameter_typo_is_one_line_naming_the_key(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(PIPELINE_CONF, overrides)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_a_layer_names_a_task_table_or_a_shared_one() -> None:
    from dmine_spark.config import Layer

    cfg = load_config(PIPELINE_CONF)
    assert cfg.table(Layer.PRED) == "dmine.pred_banking77"
    assert cfg.table(Layer.EMB_CACHE) == "dmine.emb_cache"
    assert cfg.quarantine_view("train") == "dmine.quarantine_banking77_train"
    with pytest.raises(ValueError, match="'predictions' is not a valid Layer"):
        cfg.table("predictions")


def test_the_work_dir_layout_is_spelled_once(tmp_path: Path) -> None:
    from dmine_spark.config import WorkDir

    w = WorkDir(tmp_path)
    assert (w.models, w.metastore, w.warehouse) == (
        tmp_path / "models",
        tmp_path / "metastore_db",
        tmp_path / "warehouse",
    )
    assert w.report("r1") == tmp_path / "reports" / "r1.html"
    assert w.checkpoint("t") == tmp_path / "checkpoints" / "t" / "stream"
    cfg = load_config(PIPELINE_CONF, [f"work_dir={tmp_path}"])
    assert cfg.paths == w and cfg.resolved_work_dir() == tmp_path


def test_every_config_key_has_a_type_a_default_and_a_meaning() -> None:
    from dmine_spark.config.reference import config_reference

    rows = [line for line in config_reference().splitlines() if line.startswith("| `")]
    assert len(rows) > 150
    assert [r for r in rows if r.rstrip().endswith("|  |") or r.count("|") < 5] == []


def test_the_configuration_reference_in_the_docs_is_current() -> None:
    from dmine_spark.config.reference import BEGIN, END, config_reference

    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    block = text[text.index(BEGIN) : text.index(END) + len(END)] + "\n"
    assert block == config_reference(), "stale: run `python -m dmine_spark.config.reference docs/configuration.md`"


@pytest.mark.spark4
@pytest.mark.parametrize("key", ["embed.backend=sparknlp", "clean.backend=sparknlp"])
def test_a_spark_nlp_backend_on_the_4x_line_is_one_line_naming_35(tmp_path: Path, key: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dmine_spark.cli", "run", str(PIPELINE_CONF), "--set", key, "--work-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dmine: error: ")
    assert "Spark NLP has no build for Spark 4" in lines[0] and "--spark 3.5" in lines[0]
    assert not (tmp_path / "metastore_db").exists()  # refused before a JVM started


MOVIELENS_CONF = REPO / "conf" / "base" / "pipelines" / "movielens.yaml"


def test_the_movielens_config_finds_its_interactions_items_and_stages() -> None:
    from dmine_spark.runner.stages import default_stages

    cfg = load_config(MOVIELENS_CONF, check_paths=False)
    assert cfg.text_sources() == ["movies"]
    assert (cfg.recommend.interactions, cfg.recommend.items) == ("ratings", "movies")
    assert cfg.sources["tags"].role == "item_text" and cfg.sources["tags"].attach_on == "movieId"
    assert default_stages(cfg) == ["ingest", "clean", "embed", "recommend"]
    assert cfg.table("recs") == "dmine.recs_movielens"
    assert cfg.table("similar_items") == "dmine.similar_items_movielens"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("recommend.time_col=when", "recommend.time_col: column 'when' is not declared in sources.ratings.schema"),
        ("sources.movies.dedup=true", "sources.movies.dedup: every item must keep its row"),
        ("sources.tags.attach_to=ratings", "sources.tags.attach_to: 'ratings' is not a text source with an id_col"),
        ("sources.tags.attach_on=nope", "sources.tags.attach_on: column 'nope' is not declared in its schema"),
        ("recommend.items=tags", "recommend.items: 'tags' is not a text source with an id_col"),
        ("recommend.interactions=movies", "recommend.interactions: 'movies' is not a source of role interactions"),
        ("recommend.test_fraction=0.95", "test_fraction + val_fraction must leave a training part"),
        ("embed.enabled=false", "recommend: the content-based and hybrid recommenders read the embed stage's vectors"),
        ("sources.movies.role=interactions", "at least one source of role text is required"),
    ],
)
def test_a_recommend_config_mistake_is_one_line_naming_the_key(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(MOVIELENS_CONF, [override], check_paths=False)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


FINANCE_CONF = REPO / "conf" / "base" / "pipelines" / "finance_news.yaml"
_TRENDS = ["trends.enabled=true", "trends.label=bearish", "sources.test.schema=text STRING, label STRING, at TIMESTAMP"]


def test_trends_config_runs_its_stage_after_the_classifier() -> None:
    from dmine_spark.runner.stages import default_stages

    cfg = load_config(FINANCE_CONF, [*_TRENDS, "trends.time_col=at"], check_paths=False)
    stages = default_stages(cfg)
    assert stages.index("trends") == stages.index("classify") + 1
    assert [(r.kind, r.method) for r in cfg.trends.rules] == [
        ("share", "zscore"),
        ("share", "cusum"),
        ("volume", "zscore"),
    ]
    assert cfg.table("alerts") == "dmine.alerts_finance_news"
    assert cfg.table("sentiment_ts") == "dmine.sentiment_ts_finance_news"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trends.time_col=when", "trends.time_col: column 'when' is not declared in any text source's schema"),
        ("trends.label=negative", "trends: the rules watch class 'negative', which is not one of labels"),
        ("trends.window=1 fortnight", "trends.window: '1 fortnight' is not an interval such as '1 hour'"),
        ("trends.watermark=0 days", "trends.watermark: '0 days' is not an interval"),
        ("trends.rules=[{kind: volume}, {kind: volume}]", "trends.rules: two rules are the same rule"),
        ("trends.rules=[{kind: volume, label: bearish}]", "a volume rule counts texts"),
        ("trends.webhook={url: ftp://x}", "is not an http:// or https:// URL"),
    ],
)
def test_a_trends_config_mistake_is_one_line_naming_the_key(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(FINANCE_CONF, [*_TRENDS, override], check_paths=False)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)
