//! Shared fixtures for the crowd micro-benchmarks.
