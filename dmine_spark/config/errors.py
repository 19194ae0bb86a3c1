"""The config error every user mistake becomes, and the base of every config section."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["ConfigError", "Strict", "spark_strings"]


class ConfigError(ValueError):
    """A configuration or input problem, reported as one line naming the key, column or file.

    The ``dmine`` command prints it as ``dmine: error: <message>`` and exits
    with status 2; it never shows a traceback.
    """


class Strict(BaseModel):
    """A config section: unknown keys are refused, and each field's docstring is its reference text."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


def spark_strings(v: Any) -> Any:
    """Spark options and conf values are strings; YAML gives bools (``true``) and numbers."""
    if isinstance(v, dict):
        return {str(k): (str(x).lower() if isinstance(x, bool) else str(x)) for k, x in v.items()}
    return v
