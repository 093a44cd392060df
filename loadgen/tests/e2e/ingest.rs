//! ingest tests.
