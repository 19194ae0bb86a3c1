"""Step 1, prepare: ingest sources with declared schemas (quarantine with a reason), clean, mask PII, dedupe."""
