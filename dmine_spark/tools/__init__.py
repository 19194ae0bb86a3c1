"""Tools around the pipeline: benchmarks, the generator of test data at scale, and the SQL endpoint."""
