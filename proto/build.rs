//! Compiles `crowd/v1` (gRPC API: rider and operator services),
//! `crowd/store/v1` (Redis records) and the vendored GTFS-Realtime schema
//! (the operators' feed) with a vendored protoc, so a fresh machine needs no
//! system protobuf compiler.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("crowd_descriptor.bin"))
        .build_server(true)
        .build_client(true)
        .codec_path("crate::grpc_codec::LeanCodec")
        .compile_with_config(
            config,
            &[
                PathBuf::from("crowd/v1/crowd.proto"),
                PathBuf::from("crowd/v1/operator.proto"),
                PathBuf::from("crowd/store/v1/store.proto"),
                PathBuf::from("gtfs-realtime/gtfs-realtime.proto"),
            ],
            &[PathBuf::from("."), well_known],
        )?;
    println!("cargo:rerun-if-changed=crowd");
    println!("cargo:rerun-if-changed=gtfs-realtime");
    Ok(())
}
