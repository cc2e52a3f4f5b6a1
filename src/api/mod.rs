//! Transport adapters: gRPC (tonic) and HTTP (axum) over the one core.

pub mod calls;
pub mod convert;
pub mod grpc;
pub mod health;
pub mod layers;
pub mod metrics;
pub mod openapi;
pub mod rest;
pub mod rpcs;
