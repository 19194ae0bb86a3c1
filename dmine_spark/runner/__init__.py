"""The stage runner: the stage table (:mod:`~dmine_spark.runner.stages`) and the loop that runs it (:mod:`~dmine_spark.runner.run`)."""
