//! The rider simulator.
