"""Feature columns for the classifiers: MLlib vectors from embedding arrays.

The classifiers themselves are in :mod:`dmine_spark.mine.models` and their
scores in :mod:`dmine_spark.mine.metrics`.
"""

from __future__ import annotations

from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

__all__ = ["as_vector"]


def as_vector(df: DataFrame, array_col: str = "embedding", out_col: str = "features") -> DataFrame:
    """Add an MLlib vector column from an ``array<float>`` embedding column."""
    return df.withColumn(out_col, array_to_vector(F.col(array_col)))
