//! Fault tests: the whole system under the failures it must survive. Each
//! test keeps a ledger of the report ids the server acknowledged and checks
//! it against what the aggregators counted (`reports_counted` of the
//! committed train states): nothing acknowledged is lost, nothing counts
//! twice.

mod aggregator_crash;
mod client_kill;
mod cluster;
mod estimate_cache;
mod fencing;
mod flood;
mod helpers;
mod rebalance;
mod redis_pause;
mod redis_restart;
mod retention;
mod shutdown;
