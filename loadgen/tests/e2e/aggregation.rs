//! aggregation tests.
