//! Builds the XDP program (`lb-ebpf`) with the nightly toolchain and bpf-linker, and leaves the
//! object in OUT_DIR for `dataplane::OBJECT` to embed. `cargo xtask build` installs what this
//! needs (nightly rust-src, bpf-linker) before cargo runs it.

fn main() -> anyhow::Result<()> {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let ebpf_dir = format!("{manifest}/../lb-ebpf");
    // The program also compiles lb-common's layouts and hash: rebuild when they change.
    println!("cargo:rerun-if-changed={manifest}/../lb-common/src");
    aya_build::build_ebpf(
        [aya_build::Package { name: "lb-ebpf", root_dir: &ebpf_dir, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
