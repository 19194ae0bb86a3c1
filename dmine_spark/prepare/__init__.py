"""Step 1, prepare: ingest sources with declared schemas and clean their text."""
