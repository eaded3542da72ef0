//! VM boot phases: sbx's own VMM (the kvm engine) and Linux to init on the
//! engine `sbx run --isolation=vm` uses, beside QEMU microvm booting the
//! same kernel.
//!
//! - `kvm_payload/*`: a fresh launcher process (this binary, re-executed)
//!   boots the freestanding test guest vmm/payloads/hello.S with
//!   `sbx_vmm::kvm::Vmm`; times from just before the spawn to the first
//!   KVM_RUN, to the guest's first I/O (its first serial write), and to its
//!   reset. On a PVM host (/dev/kvm without VT-x) the kvm engine cannot run
//!   Linux past /init, so its Linux boot is not measured here; these phases
//!   are the VMM's own and do not depend on the host's virtualization.
//! - `sbx_vm/*`: `sbx run --rm --isolation=vm busybox true`, phases as sbx
//!   reports them (`SBX_DEBUG=1`): VMM start → guest init running → init
//!   ready (root mounted, spec applied). On a PVM host that engine is QEMU
//!   with TCG: guest boot is emulated and slow.
//! - `qemu_microvm/*`: QEMU started directly on the same kernel and command
//!   line with a minimal init: spawn → init runs → QEMU exits.
//!
//! Needs root and /dev/kvm. `cargo bench --bench vm_boot -- --quick` takes
//! about a minute.

mod support;

use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, SamplingMode};
use support::launcher::{self, LaunchFigures};
use support::peers::QemuPeer;
use support::{guest, sbx_vm_run, Env, VmPhases};

fn main() {
    launcher::maybe_run();
    let env = Env::setup("vm_boot");
    let host = sbx_vmm::engine::HostKvm::detect();
    eprintln!(
        "vm_boot: /dev/kvm is {host:?}; kvm engine phases come from the freestanding payload \
         vmm/payloads/hello.S (VMM-side, host-independent); Linux boot to init ready comes from \
         `sbx run --isolation=vm` on its default engine{}",
        if host == sbx_vmm::engine::HostKvm::Hardware {
            ""
        } else {
            " (qemu with TCG here: the kvm engine cannot run Linux past /init on this host)"
        }
    );
    let payload = match guest::payload("hello", env.path()) {
        Ok(p) => match launcher::launch(&p) {
            Ok(_) => Some(p),
            Err(e) => {
                eprintln!("skipping kvm_payload: {e}");
                None
            }
        },
        Err(e) => {
            eprintln!("skipping kvm_payload: {e}");
            None
        }
    };
    let qemu = QemuPeer::prepare(env.path());

    let mut c = Criterion::default().sample_size(10).configure_from_args();
    let mut group = c.benchmark_group("vm_boot");
    group.sampling_mode(SamplingMode::Flat);

    if let Some(p) = &payload {
        group
            .warm_up_time(Duration::from_millis(100))
            .measurement_time(Duration::from_millis(300));
        let phases: [Phase<LaunchFigures, Duration>; 5] = [
            ("kvm_payload/spawn_to_main", |f| f.to_main),
            ("kvm_payload/main_to_first_kvm_run", |f| {
                f.to_first_run.saturating_sub(f.to_main)
            }),
            ("kvm_payload/spawn_to_first_kvm_run", |f| f.to_first_run),
            ("kvm_payload/spawn_to_first_guest_io", |f| f.to_first_io),
            ("kvm_payload/spawn_to_guest_exit", |f| f.to_exit),
        ];
        for (name, pick) in phases {
            custom(&mut group, name, || pick(&launcher::launch(p).unwrap()));
        }
    }

    group
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(2));
    if env.sbx_vm {
        let phases: [Phase<VmPhases, f64>; 3] = [
            ("sbx_vm/vmm_to_init", |p| p.vmm_to_init_ms),
            ("sbx_vm/guest_kernel_to_init", |p| p.guest_kernel_ms),
            ("sbx_vm/vmm_to_init_ready", |p| p.vmm_to_init_ready_ms),
        ];
        for (name, pick) in phases {
            custom(&mut group, name, || {
                ms(pick(&sbx_vm_run(&env.sbx_root).unwrap()))
            });
        }
    }
    if let Some(q) = &qemu {
        custom(&mut group, "qemu_microvm/spawn_to_init", || {
            q.boot().unwrap().init
        });
        custom(&mut group, "qemu_microvm/spawn_to_exit", || {
            q.boot().unwrap().exit
        });
    }
    group.finish();
    c.final_summary();
}

/// A bench name and the figure it takes from one run.
type Phase<R, T> = (&'static str, fn(&R) -> T);

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0) / 1e3)
}

/// A bench whose iteration time is what `one` returns (a phase of a run),
/// not the run's whole wall time.
fn custom(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    one: impl Fn() -> Duration,
) {
    group.bench_function(name, |b| {
        b.iter_custom(|iters| (0..iters).map(|_| one()).sum())
    });
}
