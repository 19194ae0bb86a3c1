"""What differs between the Spark lines dmine_spark runs on, in one place.

dmine_spark supports two lines:

========  =======  ===============  ===========  =================
line      Scala    pyspark          Delta Lake   Spark NLP
========  =======  ===============  ===========  =================
``3.5``   2.12     3.5.0 - 3.5.x    3.3.3        5.5.3 (ONNX only)
``4.x``   2.13     4.0, 4.1, 4.2    4.0.1-4.4.0  none published
========  =======  ===============  ===========  =================

Code elsewhere asks this module, never ``pyspark.__version__`` itself: which
line runs (:func:`current_line`), the JVM packages of that line
(:attr:`SparkLine.delta`, :attr:`SparkLine.kafka`,
:attr:`SparkLine.sparknlp`), and the few APIs one line lacks
(:func:`arrow_udf`, :func:`schema_from_ddl`, :func:`ml_io_context`). Reading the version imports ``pyspark.version`` only,
so no JVM starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

__all__ = [
    "SparkLine",
    "UnsupportedSpark",
    "LINES",
    "pyspark_version",
    "line_for",
    "current_line",
    "databricks_line",
    "arrow_udf",
    "schema_from_ddl",
    "ml_io_context",
]


class UnsupportedSpark(RuntimeError):
    """The running (or requested) Spark is not a line dmine_spark supports."""


@dataclass(frozen=True)
class SparkLine:
    """One supported Spark line and the Maven coordinates that match it.

    Attributes
    ----------
    name : str
        ``"3.5"`` or ``"4.x"``.
    scala : str
        The Scala binary version of the line's jars (``2.12``, ``2.13``).
    delta : dict of (int, int) to str
        Delta Lake's ``delta-spark`` coordinate per Spark minor version.
    kafka : dict of (int, int) to str
        The Structured Streaming Kafka connector per Spark minor version.
    sparknlp : bool
        Whether Spark NLP publishes a build of this line on Maven Central.
    """

    name: str
    scala: str
    delta: dict[tuple[int, int], str]
    kafka: dict[tuple[int, int], str]
    sparknlp: bool

    def coordinate(self, package: str, version: tuple[int, ...]) -> str:
        """The Maven coordinate of ``package`` (``delta`` or ``kafka``) for Spark ``version``."""
        table = getattr(self, package)
        minor = tuple(version[:2])
        if minor in table:
            return table[minor]
        return table[max(table)]  # a newer patch line of a known minor: its newest known coordinate


# Delta's versions follow the Spark each was built on (its pom's spark-sql dependency):
# 4.0.x on 4.0, 4.3.x on 4.1, 4.4.x on 4.2; 3.3.3 on 3.5.6 (3.3.2 cannot overwrite a table on Spark 3.5.6+). The Kafka connector is Spark's own module.
LINES: dict[str, SparkLine] = {
    "3.5": SparkLine(
        name="3.5",
        scala="2.12",
        delta={(3, 5): "io.delta:delta-spark_2.12:3.3.3"},
        kafka={(3, 5): "org.apache.spark:spark-sql-kafka-0-10_2.12:3.5.7"},
        sparknlp=True,
    ),
    "4.x": SparkLine(
        name="4.x",
        scala="2.13",
        delta={
            (4, 0): "io.delta:delta-spark_2.13:4.0.1",
            (4, 1): "io.delta:delta-spark_2.13:4.3.1",
            (4, 2): "io.delta:delta-spark_2.13:4.4.0",
        },
        kafka={
            (4, 0): "org.apache.spark:spark-sql-kafka-0-10_2.13:4.0.1",
            (4, 1): "org.apache.spark:spark-sql-kafka-0-10_2.13:4.1.0",
            (4, 2): "org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0",
        },
        sparknlp=False,
    ),
}


def _parse(version: str) -> tuple[int, int, int]:
    m = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", version)
    if not m:
        raise UnsupportedSpark(f"cannot read a Spark version from {version!r}")
    return int(m[1]), int(m[2]), int(m[3] or 0)


def pyspark_version() -> tuple[int, int, int]:
    """The installed pyspark's ``(major, minor, patch)``, read without starting a JVM."""
    from pyspark.version import __version__

    return _parse(__version__)


def line_for(version: str | tuple[int, ...]) -> SparkLine:
    """The supported line of Spark ``version`` (``"3.5.9"``, ``(4, 2)``...).

    Raises
    ------
    UnsupportedSpark
        For versions before 3.5 or after 4.2, naming the supported lines.
    """
    v = _parse(version) if isinstance(version, str) else tuple(version)
    if v[:2] == (3, 5):
        return LINES["3.5"]
    if v[0] == 4 and v[1] <= 2:
        return LINES["4.x"]
    shown = ".".join(map(str, v))
    raise UnsupportedSpark(
        f"Spark {shown} is not supported; dmine_spark runs on the 3.5 line (pyspark 3.5.x) "
        "and the 4.x line (pyspark 4.0 to 4.2)"
    )


@cache
def current_line() -> SparkLine:
    """The line of the installed pyspark (see :func:`line_for`)."""
    return line_for(pyspark_version())


def databricks_line(runtime_key: str) -> SparkLine:
    """The Spark line of a Databricks runtime key such as ``16.4.x-cpu-ml-scala2.12``.

    Databricks Runtime 14.x to 16.x run Spark 3.5; 17.x runs Spark 4.0.

    Raises
    ------
    UnsupportedSpark
        For runtimes before 14.0 (Spark 3.4 and older), or a Scala suffix that
        does not match the line.
    """
    m = re.match(r"^(\d+)\.(\d+)\.x-.*scala(\d+\.\d+)$", runtime_key)
    if not m:
        raise UnsupportedSpark(f"cannot read a Databricks runtime from {runtime_key!r}")
    major, scala = int(m[1]), m[3]
    if major < 14:
        raise UnsupportedSpark(
            f"Databricks runtime {runtime_key} runs Spark 3.4 or older; dmine_spark needs 14.3 LTS or newer "
            "(Spark 3.5, e.g. 15.4.x or 16.4.x) or 17.x (Spark 4.0)"
        )
    line = LINES["3.5"] if major < 17 else LINES["4.x"]
    if scala != line.scala:
        raise UnsupportedSpark(
            f"Databricks runtime {runtime_key}: Spark {line.name} jars are built for Scala {line.scala}, "
            f"not {scala}; pick the runtime's scala{line.scala} variant"
        )
    return line


def arrow_udf(return_type: Any) -> Callable[[Callable[[Any], Any]], Any]:
    """A decorator making a ``pyarrow.Array -> pyarrow.Array`` function a Spark UDF.

    Spark 4.1 and newer run it as ``pyspark.sql.functions.arrow_udf``: batches
    arrive as Arrow arrays with no pandas round trip. On Spark 3.5, which has
    no Arrow UDFs, it runs inside a pandas UDF that converts each batch to an
    Arrow array and back (structs come back as pandas DataFrames, maps as
    dictionaries, as Spark 3.5 expects). The function sees the same arrays on
    both lines; a batch of only nulls arrives as a string array.
    """
    from pyspark.sql import functions as F

    native = getattr(F, "arrow_udf", None)
    if native is not None:
        return native(return_type)

    def wrap(fn: Callable[[Any], Any]) -> Any:
        import pandas as pd
        import pyarrow as pa

        def on_pandas(series):  # annotated below, with real types
            arr = pa.Array.from_pandas(series)
            if pa.types.is_null(arr.type):
                arr = arr.cast(pa.string())
            out = fn(arr)
            if isinstance(out, pa.ChunkedArray):
                out = out.combine_chunks()
            if pa.types.is_struct(out.type):
                names = [out.type.field(i).name for i in range(out.type.num_fields)]
                table = pa.Table.from_arrays(out.flatten(), names=names)
                return table.to_pandas(maps_as_pydicts="strict")
            return out.to_pandas(maps_as_pydicts="strict")

        # a scalar pandas UDF: Series in, Series (or a DataFrame for a struct) out
        on_pandas.__annotations__ = {"series": pd.Series, "return": pd.Series}
        return F.pandas_udf(on_pandas, return_type)

    return wrap


def schema_from_ddl(ddl: str) -> Any:
    """The ``StructType`` of a DDL string such as ``"text STRING, label STRING"`` (needs a running Spark).

    ``StructType.fromDDL`` on Spark 4; Spark 3.5 parses it with its type
    parser, which also accepts a single type (the caller checks for a struct).
    """
    from pyspark.sql.types import StructType

    native = getattr(StructType, "fromDDL", None)
    if native is not None:
        return native(ddl)
    from pyspark.sql.types import _parse_datatype_string

    return _parse_datatype_string(ddl)


def ml_io_context(spark: Any) -> Any:
    """What ``DefaultParamsWriter.saveMetadata`` and ``DefaultParamsReader.loadMetadata`` take.

    Spark 4 passes the ``SparkSession``; Spark 3.5 its ``SparkContext``.
    """
    return spark if pyspark_version() >= (4, 0, 0) else spark.sparkContext
