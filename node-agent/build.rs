//! Builds the kernel side (`node-agent-ebpf`) and leaves the object in OUT_DIR for
//! `include_bytes_aligned!` in `src/capture`.
//!
//! The eBPF crate needs `-Z build-std=core` for bpfel-unknown-none, hence a toolchain with
//! rust-src: Debian's rustc/cargo (not the rustup one running this script) plus
//! bpf-linker. scripts/install-ebpf-toolchain.sh installs both. With HERDWATCH_SKIP_EBPF=1
//! an empty stub is written instead, so that `cargo check`/`clippy` of user space work
//! without that toolchain; `Capture::load` refuses a stub with a message saying so.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const OBJECT_NAME: &str = "herdwatch-ebpf.o";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_RUST_SRC: &str = "/usr/lib/rustlib/src/rust/library";
const INSTALL_HINT: &str = "run scripts/install-ebpf-toolchain.sh (or set HERDWATCH_SKIP_EBPF=1 \
                            to build user space only, with a stub eBPF object that cannot load)";

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .context("node-agent has no parent directory")?;
    let ebpf_dir = root.join("node-agent-ebpf");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let object = out_dir.join(OBJECT_NAME);

    println!("cargo:rerun-if-env-changed=HERDWATCH_SKIP_EBPF");
    // Relative to this package: cargo shares one build-script run between checkouts of
    // the same workspace that share a target directory (a working tree and CI's clone), and
    // checks these against whichever checkout it builds. Absolute paths would name the
    // checkout of the last run, and a change in another checkout would keep a stale object.
    for input in [
        "../node-agent-ebpf/src",
        "../node-agent-ebpf/Cargo.toml",
        "../node-agent-ebpf/Cargo.lock",
        "../node-agent-ebpf/.cargo/config.toml",
        "../crates/abi/src",
        "../crates/abi/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={input}");
    }

    if env::var_os("HERDWATCH_SKIP_EBPF").is_some_and(|v| v == "1") {
        fs::write(&object, b"").with_context(|| format!("writing {}", object.display()))?;
        println!(
            "cargo:warning=HERDWATCH_SKIP_EBPF=1: the eBPF object is an empty stub and the \
             agent cannot capture; for the real one run scripts/install-ebpf-toolchain.sh \
             and build without HERDWATCH_SKIP_EBPF"
        );
        return Ok(());
    }

    let linker_dir = find_bpf_linker();
    let missing: Vec<&str> = [
        (!Path::new(DEBIAN_CARGO).exists()).then_some(DEBIAN_CARGO),
        (!Path::new(DEBIAN_RUSTC).exists()).then_some(DEBIAN_RUSTC),
        (!Path::new(DEBIAN_RUST_SRC).exists()).then_some(DEBIAN_RUST_SRC),
        linker_dir.is_none().then_some("bpf-linker"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        bail!(
            "building the eBPF object needs Debian's Rust toolchain and bpf-linker; missing: {}. \
             To install them, {INSTALL_HINT}",
            missing.join(", ")
        );
    }

    // Kept across builds (and shared by every profile of the outer build) so a warm build
    // takes a second: under the outer target dir when there is one, else in OUT_DIR.
    // One directory per checkout: the eBPF object's file name is the same for every
    // checkout, so two of them sharing one directory (a working tree and CI's clone) would
    // each take the other's object for up to date.
    let checkout = {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in ebpf_dir.as_os_str().as_encoded_bytes() {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}")
    };
    let target_dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("ebpf").join(checkout),
        None => out_dir.join("ebpf-target"),
    };

    let mut cargo = Command::new(DEBIAN_CARGO);
    // The outer cargo's variables would make the inner one use the rustup compiler, the
    // outer flags or the outer target dir: start from the user's environment without them.
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let outer = (key.starts_with("CARGO") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key.starts_with("RUSTDOC")
            || matches!(
                key,
                "RUSTFLAGS"
                    | "RUSTUP_TOOLCHAIN"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
            );
        if outer {
            cargo.env_remove(key);
        }
    }
    let path = env::var_os("PATH").unwrap_or_default();
    let mut paths: Vec<PathBuf> = env::split_paths(&path).collect();
    if let Some(dir) = linker_dir {
        // rustc finds bpf-linker on PATH.
        paths.push(dir);
    }
    cargo
        .current_dir(&ebpf_dir)
        .env("PATH", env::join_paths(paths)?)
        .env("RUSTC", DEBIAN_RUSTC)
        // build-std is unstable; Debian's stable compiler allows it with this.
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", &target_dir)
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ]);
    let output = cargo
        .output()
        .with_context(|| format!("running {DEBIAN_CARGO}"))?;
    if !output.status.success() {
        bail!(
            "building node-agent-ebpf failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let built = target_dir.join("bpfel-unknown-none/release/herdwatch-ebpf");
    fs::copy(&built, &object)
        .with_context(|| format!("copying {} to {}", built.display(), object.display()))?;
    Ok(())
}

/// The directory of bpf-linker: on PATH, or where `cargo install` puts it.
fn find_bpf_linker() -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    env::split_paths(&path)
        .chain(cargo_home.map(|home| home.join("bin")))
        .find(|dir| dir.join("bpf-linker").is_file())
}
