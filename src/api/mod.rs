//! Transport adapters: gRPC (tonic) and HTTP (axum) over the one core.

pub mod authn;
pub mod calls;
pub mod convert;
pub mod deadline;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod observe;
pub mod openapi;
pub mod rest;
