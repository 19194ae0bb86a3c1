"""Schema checks shared by every pyspark.ml stage of dmine_spark, done before any Spark job runs."""

from __future__ import annotations

from pyspark.sql.types import DataType, StructField, StructType

__all__ = ["ColumnSpec", "SchemaChecked"]

ColumnSpec = tuple[tuple[type[DataType], ...], str]
"""The data types an input column may have, and how to name them in an error (``"a string"``)."""


class SchemaChecked:
    """Mixin for a stage that declares its columns; :meth:`transformSchema` checks them in one place.

    A stage lists its input columns (:meth:`_input_columns`: name → accepted
    types and their description) and its output columns
    (:meth:`_output_columns`: (name, type) pairs). ``transformSchema`` fails on a
    missing or mistyped input, or on an output that would overwrite a column
    the stage does not own (an output may replace its own input), and returns
    the output schema. Stages call it first thing in ``_transform``.
    """

    def _input_columns(self) -> dict[str, ColumnSpec]:
        return {}

    def _output_columns(self) -> list[tuple[str, DataType]]:
        return []

    def transformSchema(self, schema: StructType) -> StructType:
        """Check ``schema`` against the stage's columns and return the schema of its output.

        Raises
        ------
        ValueError
            An input column is missing, or an output column already exists.
        TypeError
            An input column has a type the stage cannot read.
        """
        stage = type(self).__name__
        fields = {f.name: f for f in schema.fields}
        inputs = self._input_columns()
        for name, (types, want) in inputs.items():
            if name not in fields:
                raise ValueError(f"{stage}: input column {name!r} not found in {sorted(fields)}")
            if not isinstance(fields[name].dataType, types):
                raise TypeError(
                    f"{stage}: input column {name!r} must be {want}, got {fields[name].dataType.simpleString()}"
                )
        outputs = [(n, t) for n, t in self._output_columns() if n]
        names = [n for n, _ in outputs]
        if len(set(names)) != len(names):
            raise ValueError(f"{stage}: two output columns share a name: {names}")
        out = [f for f in schema.fields if f.name not in names]
        for name, dtype in outputs:
            if name in fields and name not in inputs:
                raise ValueError(f"{stage}: output column {name!r} already exists")
            out.append(StructField(name, dtype, True))
        return StructType(out)
