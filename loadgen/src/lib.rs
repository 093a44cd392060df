//! Load generation, simulation and test harness for crowd.
//!
//! - [`sim`]: a deterministic rider simulator that knows the true occupancy.
//! - [`score`]: compares published estimates with that truth.
//! - [`driver`]: the open-loop load driver behind `loadgen run`.
//! - [`demo`]: `loadgen demo`, the whole system on one machine.
//! - [`bench`](mod@bench): `loadgen bench`, the end-to-end benchmark runner.
//! - [`quality`]: `loadgen quality`, estimate quality against the truth.
//! - [`redis_process`] and [`stack`]: private redis-server processes and
//!   in-process servers and aggregators, for the demo and for tests.

pub mod bench;
pub mod demo;
pub mod driver;
pub mod quality;
pub mod redis_process;
pub mod score;
pub mod sim;
pub mod stack;
