//! Compiles `proto/vecmem/v1/*.proto` with protox (a pure-Rust protobuf
//! compiler), so building vecmem needs no system `protoc`. The descriptor set
//! is also written to OUT_DIR for gRPC server reflection; it includes
//! `google/rpc/error_details.proto` (vendored from tonic-types) so that
//! grpcurl can decode the `BadRequest` and `RetryInfo` details of our errors.
//!
//! The REST gateway speaks the proto3 JSON mapping of the same messages:
//! pbjson-build derives their serde impls from the descriptors, and the
//! well-known types (`Struct`, `Timestamp`) come from pbjson-types, which
//! carry the matching JSON forms; `Struct`, the payload, is vecmem's own
//! (`src/proto_struct.rs`).

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/vecmem/v1/filter.proto",
    "proto/vecmem/v1/memory.proto",
    "proto/vecmem/v1/namespace.proto",
    "proto/google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // The real-Qdrant test cases run only when a Qdrant is given: a server
    // at QDRANT_URL, or a server binary at QDRANT_BIN (which the tests start
    // themselves, as one node or a cluster; `qdrant_bin`).
    println!("cargo::rustc-check-cfg=cfg(qdrant_real)");
    println!("cargo::rustc-check-cfg=cfg(qdrant_bin)");
    println!("cargo:rerun-if-env-changed=QDRANT_URL");
    println!("cargo:rerun-if-env-changed=QDRANT_BIN");
    let bin = std::env::var_os("QDRANT_BIN").is_some();
    if bin || std::env::var_os("QDRANT_URL").is_some() {
        println!("cargo:rustc-cfg=qdrant_real");
    }
    if bin {
        println!("cargo:rustc-cfg=qdrant_bin");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let encoded = prost::Message::encode_to_vec(&descriptors);
    std::fs::write(out_dir.join("vecmem_descriptor.bin"), &encoded)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Decodes each message from one slice (src/codec.rs says why).
        .codec_path("crate::codec::SliceCodec")
        // Only for reflection: the Rust types come from tonic-types.
        .extern_path(".google.rpc", "::tonic_types")
        // Well-known types from pbjson-types instead of prost-types.
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        // But payloads as the serde_json objects vecmem works with
        // (src/proto_struct.rs says why).
        .extern_path(".google.protobuf.Struct", "crate::proto_struct::Struct")
        .compile_fds(descriptors)?;

    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        // `"count": "0"` rather than `{}`: REST callers expect every field.
        .emit_fields()
        .build(&[".vecmem.v1"])?;
    Ok(())
}
