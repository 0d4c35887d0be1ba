//! Compiles `fleet/v1/*.proto` with protox (pure Rust), so no system `protoc`
//! is needed to build the workspace.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["fleet/v1/fleet.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("fleet_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::FleetCodec")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
