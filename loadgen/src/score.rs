//! Accuracy scoring against the simulator truth.
