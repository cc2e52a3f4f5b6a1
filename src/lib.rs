//! vecmem: a gRPC vector-memory service in front of Qdrant.
//!
//! Start with [`server::run`] for the whole service, [`core::Core`] for the
//! request logic both transports share, and [`backend::VectorStore`] for the
//! storage boundary. `../shared/ARCHITECTURE.md` fixes the contracts.

pub mod api;
pub mod auth;
pub mod backend;
pub mod backup;
pub mod bench;
pub mod client;
pub mod codec;
pub mod config;
pub mod core;
pub mod deadline;
pub mod error;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod proto_struct;
pub mod server;
pub mod sweeper;
pub mod telemetry;
pub mod tls;

/// Types and stubs generated from `proto/vecmem/v1/*.proto`.
pub mod proto {
    tonic::include_proto!("vecmem.v1");
    // serde impls in the proto3 JSON mapping, for the REST gateway.
    include!(concat!(env!("OUT_DIR"), "/vecmem.v1.serde.rs"));

    /// The payload of a memory (`google.protobuf.Struct`).
    pub use crate::proto_struct::Struct;

    /// The encoded descriptor set of `vecmem.v1`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vecmem_descriptor");
}
