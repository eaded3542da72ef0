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
//! - `payload_start_to_exit/*`: one guest, two VMMs, in the same run:
//!   vmm/payloads/pvh.S (an ELF whose e_entry is the kvm engine's 64-bit
//!   entry and whose Xen PVH note names a 32-bit entry for QEMU) from spawn
//!   until wait4 returns, on the kvm engine (a fresh launcher process) and
//!   under `qemu-system-x86_64 -M microvm -accel kvm` (TCG only if QEMU
//!   cannot use KVM); both print one line on the serial port (to stdout)
//!   and exit through port 0x501; both get the same guest RAM. Each is
//!   spawned and reaped by a small reaper process (see
//!   `support::spawn_to_exit`), which also gives its peak RSS from wait4's
//!   rusage → `target/payload_start_to_exit.json`.
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

use std::cell::RefCell;
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, SamplingMode};
use support::launcher::{self, LaunchFigures};
use support::peers::{QemuPayloadPeer, QemuPeer};
use support::{guest, median, sbx_vm_run, Env, VmPhases};

fn main() {
    support::maybe_reap();
    launcher::maybe_run();
    let env = Env::setup("vm_boot");
    let load_at_start = support::load_average();
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
    let pvh = prepare_pvh(&env);
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

    if let Some((p, q)) = &pvh {
        group
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_secs(2));
        let kvm_rss = RefCell::new(Vec::new());
        let kvm_guest = RefCell::new(Vec::new());
        let kvm_hwm = RefCell::new(Vec::new());
        let kvm_guest_exit_us = RefCell::new(Vec::new());
        let qemu_rss = RefCell::new(Vec::new());
        custom(&mut group, "payload_start_to_exit/sbx_kvm_engine", || {
            let run = launcher::launch_to_exit(p, guest::PVH_LINE).unwrap();
            kvm_rss.borrow_mut().push(run.max_rss_kib);
            kvm_guest
                .borrow_mut()
                .push(figure(&run.stdout, "guest_kib"));
            kvm_hwm
                .borrow_mut()
                .push(figure(&run.stdout, "max_rss_kib"));
            let exit_ns = figure(&run.stdout, "exit_ns").saturating_sub(run.spawned_ns);
            kvm_guest_exit_us.borrow_mut().push(exit_ns / 1000);
            run.wall
        });
        let qemu_name = format!("payload_start_to_exit/qemu_microvm_{}", q.accel_name());
        custom(&mut group, &qemu_name, || {
            let run = q.run().unwrap();
            qemu_rss.borrow_mut().push(run.max_rss_kib);
            run.wall
        });
        write_payload_rss(
            q.accel_name(),
            load_at_start,
            &kvm_rss.borrow(),
            &kvm_guest.borrow(),
            &kvm_hwm.borrow(),
            &kvm_guest_exit_us.borrow(),
            &qemu_rss.borrow(),
        );
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

/// vmm/payloads/pvh.S and QEMU on it, once each run to the end; None (with
/// one line) when either cannot run it.
fn prepare_pvh(env: &Env) -> Option<(std::path::PathBuf, QemuPayloadPeer)> {
    let p = guest::payload("pvh", env.path())
        .and_then(|p| launcher::launch_to_exit(&p, guest::PVH_LINE).map(|_| p))
        .map_err(|e| eprintln!("skipping payload_start_to_exit: {e}"))
        .ok()?;
    let q = QemuPayloadPeer::prepare(&p, launcher::PAYLOAD_MEMORY_MIB)?;
    Some((p, q))
}

/// A `key=value` figure of the launcher's line (0 if absent).
fn figure(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Median peak RSS (wait4) of the launcher and of QEMU over the
/// payload_start_to_exit runs, printed and written to
/// target/payload_start_to_exit.json.
fn write_payload_rss(
    accel: &str,
    load: f64,
    kvm: &[u64],
    kvm_guest: &[u64],
    kvm_hwm: &[u64],
    kvm_guest_exit_us: &[u64],
    qemu: &[u64],
) {
    if kvm.is_empty() || qemu.is_empty() {
        return; // filtered out
    }
    let (kvm, guest, hwm, exit_us, qemu) = (
        median(kvm),
        median(kvm_guest),
        median(kvm_hwm),
        median(kvm_guest_exit_us),
        median(qemu),
    );
    eprintln!(
        "payload_start_to_exit: max RSS (wait4, median) sbx kvm launcher {kvm} KiB \
         (its own VmHWM {hwm} KiB, guest RAM {guest} KiB), qemu microvm ({accel}) {qemu} KiB; \
         kvm engine spawn → guest's exit-port write {:.2} ms (median; the rest is the VM's \
         teardown and the launcher's exit)",
        exit_us as f64 / 1e3
    );
    let doc = serde_json::json!({
        "date": chrono::Utc::now().to_rfc3339(),
        "commit": support::commit(),
        "load_average_at_start": load,
        "payload": "vmm/payloads/pvh.S",
        "guest_memory_mib": launcher::PAYLOAD_MEMORY_MIB,
        "qemu_accel": accel,
        "sbx_kvm_launcher_max_rss_kib": kvm,
        "sbx_kvm_launcher_guest_kib": guest,
        "sbx_kvm_launcher_vmhwm_kib": hwm,
        "sbx_kvm_spawn_to_guest_exit_ms": exit_us as f64 / 1e3,
        "qemu_microvm_max_rss_kib": qemu,
    });
    let out = support::target_dir().join("payload_start_to_exit.json");
    if let Err(e) = std::fs::write(&out, serde_json::to_vec_pretty(&doc).unwrap()) {
        eprintln!("writing {}: {e}", out.display());
    }
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
