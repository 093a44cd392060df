//! Every contract between crowd processes, defined once.
//!
//! - [`pb`]: the public `crowd.v1` gRPC API and the `crowd.store.v1` records
//!   that live in Redis, generated from `proto/`.
//! - [`domain`]: validated domain types; [`validate`] turns an untrusted
//!   `CrowdingReport` into a [`domain::Report`] or a precise error.
//! - [`layout`]: Redis key names and partitioning, shared by server and
//!   aggregator so that they meet only in Redis.
//! - [`codec`]: encoding of stream entries and published estimates;
//!   [`grpc_codec`], the gRPC calls' protobuf codec.
//! - [`metrics`]: the process-wide Prometheus registry behind `/metrics`.
//! - [`connection`]: one Redis connection type for a single node or a cluster.
//! - [`shutdown`]: the signals that stop a process.

pub mod codec;
pub mod connection;
pub mod domain;
pub mod grpc_codec;
pub mod layout;
pub mod level;
pub mod metrics;
pub mod shutdown;
pub mod validate;

/// Generated protobuf code.
pub mod pb {
    /// The public gRPC API.
    pub mod v1 {
        #![allow(missing_docs, missing_debug_implementations, clippy::all)]
        tonic::include_proto!("crowd.v1");
    }
    /// Records stored in Redis.
    pub mod store {
        #![allow(missing_docs, missing_debug_implementations, clippy::all)]
        tonic::include_proto!("crowd.store.v1");
    }
    /// GTFS-Realtime (`transit_realtime`), vendored from the specification,
    /// for the operators' feed.
    pub mod gtfs_rt {
        #![allow(missing_docs, missing_debug_implementations, clippy::all)]
        tonic::include_proto!("transit_realtime");
    }
    /// Encoded `FileDescriptorSet` of both packages, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("crowd_descriptor");
}
