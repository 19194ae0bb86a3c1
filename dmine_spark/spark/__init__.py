"""The Spark wiring: session construction, config-driven jobs and progress output."""
