//! Compiles the Mesos wire messages Agora's Mesos adapter speaks (`proto/proto/mesos/v1/*.proto`)
//! into a descriptor set, with the pure-Rust `protox`; `src/mesos/protobuf.rs` reads
//! `application/x-protobuf` bodies and writes events and answers with it.

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "../proto/proto";
    let files = [
        "mesos/v1/mesos.proto",
        "mesos/v1/scheduler.proto",
        "mesos/v1/master.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={root}/{f}");
    }
    let descriptors = protox::compile(files, [root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("mesos_descriptors.bin");
    std::fs::write(out, descriptors.encode_to_vec())?;
    Ok(())
}
