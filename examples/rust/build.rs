//! Generates the aigateway.v1 client stubs from ../../protos at build time, with the protoc
//! binary that the protoc-bin-vendored crate ships (and its google/protobuf includes).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = PathBuf::from("../../protos");
    let package = protos.join("aigateway/v1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&package)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| path.extension().is_some_and(|ext| ext == "proto"));
    files.sort();

    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(
            &files,
            &[protos.clone(), protoc_bin_vendored::include_path()?],
        )?;
    println!("cargo:rerun-if-changed={}", package.display());
    Ok(())
}
