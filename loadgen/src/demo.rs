//! `loadgen demo`.
