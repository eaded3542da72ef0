//! Start→exit of `true`: `sbx run --rm busybox true` as a container and as
//! a VM (cold boot: a new VMM and guest kernel per run), beside its peers on
//! the same rootfs: crun and runc running an OCI bundle, podman running the
//! image loaded from `sbx save`'s archive, and `qemu -M microvm` booting
//! sbx's guest kernel with a minimal init that reboots at once. The floor is
//! `unshare -mpuin --fork true`. A peer that is not installed is skipped
//! with one line.
//!
//! Needs root. `cargo bench --bench start_to_exit -- --quick` takes about
//! a minute. Everything runs in a private mount namespace with
//! /sys/fs/cgroup/unified unmounted (see support/mod.rs).

mod support;

use std::process::Command;
use std::time::Duration;

use criterion::{Criterion, SamplingMode};
use support::peers::{make_bundle, shared_rootfs, OciRuntime, Podman, QemuPeer};
use support::{run_ok, Env};

fn main() {
    let env = Env::setup("start_to_exit");
    let rootfs = shared_rootfs(&env.sbx_root, &env.path().join("rootfs"));
    let bundle = rootfs.and_then(|r| make_bundle(&env.path().join("bundle"), &r, &["true"], None));
    let runtimes: Vec<OciRuntime> = match &bundle {
        Ok(b) => ["crun", "runc"]
            .into_iter()
            .filter_map(|n| OciRuntime::find(n, b))
            .collect(),
        Err(e) => {
            eprintln!("skipping crun and runc: cannot make the OCI bundle: {e}");
            Vec::new()
        }
    };
    let podman = env
        .sbx_container
        .then(|| Podman::prepare(&env.sbx_root, env.path()))
        .flatten();
    let qemu = QemuPeer::prepare(env.path());

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = c.benchmark_group("start_to_exit");

    // Each run of any of these creates and drops a network namespace; the
    // kernel frees those in the background, and a backlog slows whoever
    // runs next (sbx measured 7 ms alone, 18 ms right after the unshare
    // baseline). Each bench starts after a pause, and the baseline runs
    // last of the containers.
    if env.sbx_container {
        settle();
        group.bench_function("sbx_container", |b| {
            b.iter(|| run_ok(env.sbx().args(["run", "--rm", "busybox", "true"])))
        });
    }
    if let Ok(bundle) = &bundle {
        for rt in &runtimes {
            settle();
            group.bench_function(rt.name, |b| b.iter(|| rt.run(bundle).unwrap()));
        }
    }
    if let Some(p) = &podman {
        settle();
        group.bench_function("podman_runc", |b| b.iter(|| p.run_rm(&["true"]).unwrap()));
    }

    settle();
    group.bench_function("baseline_unshare", |b| {
        b.iter(|| run_ok(Command::new("unshare").args(["-mpuin", "--fork", "true"])))
    });

    // The VMs take a third of a second or more per run under TCG: one run
    // per sample.
    group.sampling_mode(SamplingMode::Flat);
    if env.sbx_vm {
        settle();
        eprintln!(
            "sbx_vm: cold boot per run, engine chosen as `sbx run` chooses it ({})",
            vm_engine_note()
        );
        group.bench_function("sbx_vm", |b| {
            b.iter(|| {
                run_ok(
                    env.sbx()
                        .args(["run", "--rm", "--isolation=vm", "busybox", "true"]),
                )
            })
        });
    }
    if let Some(q) = &qemu {
        eprintln!(
            "qemu_microvm: {} -M microvm ({:?}), sbx's kernel and cmdline, an init that reboots",
            q.bin.display(),
            q.accel
        );
        group.bench_function("qemu_microvm", |b| b.iter(|| q.boot().unwrap()));
    }
    group.finish();

    if let Some(p) = &podman {
        p.cleanup();
    }
    c.final_summary();
}

/// Let the kernel finish freeing the previous bench's namespaces.
fn settle() {
    std::thread::sleep(Duration::from_secs(3));
}

fn vm_engine_note() -> &'static str {
    match sbx_vmm::engine::HostKvm::detect() {
        sbx_vmm::engine::HostKvm::Pvm => {
            "qemu with TCG here: /dev/kvm is PVM, so guest boot is emulated and slow"
        }
        sbx_vmm::engine::HostKvm::Missing => "qemu with TCG here: no /dev/kvm",
        sbx_vmm::engine::HostKvm::Hardware => "hardware KVM",
    }
}
