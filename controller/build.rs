//! Link settings for the shipped binary: a release build for x86-64 Linux (glibc) linked by
//! Rust's default linker there, lld; see docs/performance.md, "Code pages". Any other build —
//! another target or profile, a cross build, a linker of one's own (`RUSTC_LINKER`, or linker
//! settings in `RUSTFLAGS`), `KAWS_LINK_LAYOUT=off` — is linked as Rust links it by default.
//!
//! - `symbol-order.txt` lays the functions kaws runs (start-up first, then reconciling) out
//!   together at the front of `.text`. The kernel maps a binary's pages 64 KiB around each page
//!   fault, so functions spread over the whole text kept most of it resident; packed, the
//!   resident code is about what runs. The list comes from a profile (`make symbol-order`);
//!   names it has that a build no longer has (dependencies updated, another toolchain) are
//!   skipped, so a stale list costs memory, never correctness.
//! - `-z pack-relative-relocs` (RELR) stores the position-independent binary's relative
//!   relocations in a few KiB instead of 1.8 MiB the loader reads at every start. A binary
//!   linked so needs glibc ≥ 2.36 to start, so only a build host with such a glibc (Debian 12,
//!   the image's build and run base) links it so.

use std::process::Command;

const ORDER: &str = "symbol-order.txt";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=KAWS_LINK_LAYOUT");
    if !lld_release_build() {
        return;
    }
    println!("cargo::rerun-if-changed={ORDER}");
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let mut args = vec![
        format!("-Wl,--symbol-ordering-file={dir}/{ORDER}"),
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ];
    if glibc_at_least(2, 36) {
        args.push("-Wl,-z,pack-relative-relocs".to_string());
    }
    for arg in args {
        println!("cargo::rustc-link-arg-bin=kaws={arg}");
    }
}

/// A release build for this very machine's x86-64 Linux (glibc), linked the default way.
fn lld_release_build() -> bool {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    var("KAWS_LINK_LAYOUT") != "off"
        && var("PROFILE") == "release"
        && var("HOST") == "x86_64-unknown-linux-gnu"
        && var("TARGET") == "x86_64-unknown-linux-gnu"
        && std::env::var_os("RUSTC_LINKER").is_none()
        && !var("CARGO_ENCODED_RUSTFLAGS").contains("link")
}

/// Whether this machine's glibc (`getconf GNU_LIBC_VERSION`: "glibc 2.36") is at least
/// `major.minor`; false when it cannot tell.
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut version = text
        .trim()
        .strip_prefix("glibc ")
        .unwrap_or_default()
        .split('.')
        .map(|n| n.parse::<u32>().ok());
    match (version.next().flatten(), version.next().flatten()) {
        (Some(ma), Some(mi)) => (ma, mi) >= (major, minor),
        _ => false,
    }
}
