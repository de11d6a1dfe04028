//! Link settings for the shipped (release) binary on Linux; see docs/performance.md, "Code pages".
//!
//! - `symbol-order.txt` lays the functions kaws runs (start-up first, then reconciling) out
//!   together at the front of `.text`. The kernel maps a binary's pages 64 KiB around each page
//!   fault, so functions spread over the whole text kept most of it resident; packed, the
//!   resident code is about what runs. The list comes from a profile (`make symbol-order`);
//!   names it has that a build no longer has (dependencies updated, another toolchain) are
//!   skipped, so a stale list costs memory, never correctness.
//! - `-z pack-relative-relocs` (RELR, glibc ≥ 2.36) stores the position-independent binary's
//!   relative relocations in a few KiB instead of 1.8 MiB the loader reads at every start.

fn main() {
    let order = "symbol-order.txt";
    println!("cargo:rerun-if-changed={order}");
    println!("cargo:rerun-if-changed=build.rs");
    let release = std::env::var("PROFILE").as_deref() == Ok("release");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    if !(release && linux) {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    for arg in [
        format!("-Wl,--symbol-ordering-file={dir}/{order}"),
        "-Wl,--no-warn-symbol-ordering".to_string(),
        "-Wl,-z,pack-relative-relocs".to_string(),
    ] {
        println!("cargo:rustc-link-arg-bin=kaws={arg}");
    }
}
