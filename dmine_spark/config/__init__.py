"""Typed configuration: pipeline sections, Spark profiles, names as data, and loading.

One schema validates every YAML file and ``--set key=value`` override before
any Spark code runs, so a typo fails in a second with one line naming the key.
This package imports nothing else of dmine_spark.
"""

from dmine_spark.config.errors import ConfigError, Strict
from dmine_spark.config.estimators import CLASSIFIERS, REGRESSORS, Estimator
from dmine_spark.config.features import (
    FeaturesConfig,
    FeaturesSection,
    SelectConfig,
    TextFeaturesConfig,
    parse_reference_time,
)
from dmine_spark.config.layout import WORK_DIR_ENV, Layer, WorkDir, default_work_dir
from dmine_spark.config.load import (
    BUILTIN_PROFILES,
    apply_overrides,
    config_conf_dir,
    find_profiles,
    is_profile_file,
    load_config,
    load_profile,
    parse_override,
    profile_path,
)
from dmine_spark.config.pipeline import (
    FILE_FORMATS,
    PII_TYPES,
    ClassifyConfig,
    CleanConfig,
    ClusterConfig,
    EmbedConfig,
    FinetuneConfig,
    KafkaConfig,
    LanguageConfig,
    MonitorConfig,
    MonitorThresholds,
    NearDupConfig,
    PiiConfig,
    PipelineConfig,
    RegressConfig,
    ReportConfig,
    SourceConfig,
    StreamConfig,
    TablesConfig,
    TrackingConfig,
)
from dmine_spark.config.spark import DatabricksAutoscale, DatabricksCluster, SparkProfile, SubmitConfig

__all__ = [
    "ConfigError",
    "Strict",
    "Estimator",
    "CLASSIFIERS",
    "REGRESSORS",
    "FeaturesConfig",
    "FeaturesSection",
    "SelectConfig",
    "TextFeaturesConfig",
    "parse_reference_time",
    "Layer",
    "WorkDir",
    "WORK_DIR_ENV",
    "default_work_dir",
    "apply_overrides",
    "load_config",
    "load_profile",
    "parse_override",
    "profile_path",
    "find_profiles",
    "config_conf_dir",
    "is_profile_file",
    "BUILTIN_PROFILES",
    "FILE_FORMATS",
    "PII_TYPES",
    "ClassifyConfig",
    "CleanConfig",
    "ClusterConfig",
    "EmbedConfig",
    "FinetuneConfig",
    "KafkaConfig",
    "LanguageConfig",
    "MonitorConfig",
    "MonitorThresholds",
    "NearDupConfig",
    "PiiConfig",
    "PipelineConfig",
    "RegressConfig",
    "ReportConfig",
    "SourceConfig",
    "StreamConfig",
    "TablesConfig",
    "TrackingConfig",
    "DatabricksAutoscale",
    "DatabricksCluster",
    "SparkProfile",
    "SubmitConfig",
]
