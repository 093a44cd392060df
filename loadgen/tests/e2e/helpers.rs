//! helpers tests.
