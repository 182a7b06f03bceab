//! Compiles the gRPC contract in `proto/` (needs `protoc`, installed by
//! `./scripts/devnet install` from Debian's protobuf-compiler).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(true)
        .file_descriptor_set_path(out_dir.join("coffer_descriptor.bin"))
        .compile_protos(
            &[
                "proto/coffer/v1/auth.proto",
                "proto/coffer/v1/wallet.proto",
                "proto/coffer/v1/history.proto",
                "proto/coffer/v1/settlement.proto",
                "proto/coffer/v1/withdrawal.proto",
            ],
            &["proto"],
        )
        .map_err(|err| format!("{err}; is protoc installed? run ./scripts/devnet install"))?;
    Ok(())
}
