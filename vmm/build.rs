//! Builds the guest init (vmm/guest-init) as a static executable and hands
//! it to sbx-vmm, which embeds it: sbx carries its own guest init and needs
//! no install step.
//!
//! A nested `cargo rustc` with `-C target-feature=+crt-static` on the final
//! link only (in RUSTFLAGS the flag would break proc-macro builds), into its
//! own target dir beside the outer one so that every profile shares one
//! incremental build.

use std::collections::hash_map::DefaultHasher;
use std::env;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let init_dir = manifest_dir.join("guest-init");
    for p in [
        "guest-init/src",
        "guest-init/Cargo.toml",
        "protocol/src",
        "protocol/Cargo.toml",
        "../shared/workload/src",
        "../shared/workload/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-env-changed=SBX_GUEST_INIT");

    // An init built elsewhere (a packager's) may be given instead.
    let binary = match env::var_os("SBX_GUEST_INIT") {
        Some(p) => PathBuf::from(p),
        None => build_static(&init_dir, &out_dir),
    };
    let bytes = std::fs::read(&binary)
        .unwrap_or_else(|e| panic!("reading the guest init {}: {e}", binary.display()));
    let dest = out_dir.join("sbx-guest-init");
    std::fs::write(&dest, &bytes).expect("copying the guest init into OUT_DIR");
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    println!("cargo:rustc-env=SBX_GUEST_INIT_HASH={:016x}", h.finish());
}

/// `<target>/<profile>/build/<pkg>/out` → `<target>/guest-init`.
fn nested_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .nth(4)
        .map(|t| t.join("guest-init"))
        .unwrap_or_else(|| out_dir.join("guest-init-target"))
}

fn build_static(init_dir: &Path, out_dir: &Path) -> PathBuf {
    let target_dir = nested_target_dir(out_dir);
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(init_dir)
        .args([
            "rustc",
            "--release",
            "--bin",
            "sbx-guest-init",
            "--target-dir",
        ])
        .arg(&target_dir)
        .args([
            "--",
            "-C",
            "target-feature=+crt-static",
            "-C",
            "strip=symbols",
        ]);
    // What the outer cargo tells its build scripts (and clippy's wrapper)
    // must not leak into the nested build.
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy();
        if (k.starts_with("CARGO_") && k != "CARGO_HOME" && !k.starts_with("CARGO_NET"))
            || k.starts_with("RUSTC")
            || k == "RUSTFLAGS"
            || k == "RUSTDOC"
        {
            cmd.env_remove(k.as_ref());
        }
    }
    let status = cmd.status().expect("running cargo for the guest init");
    assert!(status.success(), "building the static guest init failed");
    target_dir.join("release").join("sbx-guest-init")
}
