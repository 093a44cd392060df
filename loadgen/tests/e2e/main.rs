//! End-to-end tests: real redis-server processes, the real gRPC server over a
//! socket, the real aggregator.

mod aggregation;
mod batches;
mod feed;
mod helpers;
mod ingest;
mod nudge;
mod observability;
mod operator;
mod page;
mod queries;
mod report_batches;
mod system;
