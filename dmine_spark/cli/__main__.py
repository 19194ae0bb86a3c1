"""``python -m dmine_spark.cli``: the ``dmine`` command."""

from dmine_spark.cli import main

raise SystemExit(main())
