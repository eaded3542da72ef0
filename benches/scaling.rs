//! N idle sandboxes of each kind started at once (N = 1, 8, 32): the time
//! until all of them run (each workload has said `ready`), and the memory
//! per sandbox measured as the footprint bench measures one (cgroup usage
//! plus the PSS of the host processes kept alive for it), with how both
//! grow against N = 1. Printed as a table and written to
//! `target/scaling.json`.
//!
//! VMs under TCG (this PVM host) boot slowly and all share 2 cores: VM N is
//! capped at `SBX_BENCH_VM_MAX_N` (default 32, or 8 with `--quick`; 32
//! TCG guests take about half a minute to be all running here). Needs
//! root. `cargo bench --bench scaling` takes one to two minutes.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::idle::{self, Idle, Kind};
use support::memory::cost_of;
use support::peers::{make_bundle, shared_rootfs, OciRuntime, Podman};
use support::Env;

const COUNTS: [usize; 3] = [1, 8, 32];
const SETTLE: Duration = Duration::from_millis(500);

fn main() {
    if support::filtered_out("scaling") {
        return;
    }
    let env = Env::setup("scaling");
    let load_at_start = support::load_average();
    let vm_max: usize = std::env::var("SBX_BENCH_VM_MAX_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if support::quick() { 8 } else { 32 });
    let rootfs = shared_rootfs(&env.sbx_root, &env.path().join("rootfs"));
    let bundle = rootfs.and_then(|r| {
        make_bundle(
            &env.path().join("bundle"),
            &r,
            &idle::IDLE_ARGS,
            Some(idle::MEMORY_MIB << 20),
        )
    });
    let runtimes: Vec<OciRuntime> = match &bundle {
        Ok(_) => ["crun", "runc"]
            .into_iter()
            .filter_map(|n| {
                let probe = env.path().join(format!("probe-{n}"));
                let b = make_bundle(&probe, &env.path().join("rootfs"), &["true"], None).ok()?;
                OciRuntime::find(n, &b)
            })
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

    let mut kinds: Vec<Kind<'_>> = Vec::new();
    if env.sbx_container {
        kinds.push(Kind::SbxContainer(&env.sbx_root));
    }
    if env.sbx_vm {
        eprintln!(
            "sbx_vm: N capped at {vm_max} (SBX_BENCH_VM_MAX_N): TCG guests share 2 cores here"
        );
        kinds.push(Kind::SbxVm(&env.sbx_root));
    }
    if let Ok(b) = &bundle {
        kinds.extend(runtimes.iter().map(|rt| Kind::Oci(rt, b)));
    }
    if let Some(p) = &podman {
        kinds.push(Kind::Podman(p));
    }

    let mut rows = Vec::new();
    println!(
        "{:<16} {:>4} {:>16} {:>10} {:>16} {:>10}",
        "SANDBOX", "N", "ALL RUNNING", "× N=1", "MEM/SANDBOX", "× N=1"
    );
    for kind in &kinds {
        let mut base: Option<(f64, f64)> = None;
        for n in COUNTS {
            if matches!(kind, Kind::SbxVm(_)) && n > vm_max {
                eprintln!(
                    "{}: N={n} skipped (above SBX_BENCH_VM_MAX_N={vm_max})",
                    kind.name()
                );
                continue;
            }
            let (ms, per_kib) = match run_n(kind, n) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{} N={n}: {e}", kind.name());
                    continue;
                }
            };
            let (t1, m1) = *base.get_or_insert((ms, per_kib));
            println!(
                "{:<16} {:>4} {:>13.1} ms {:>9.2}× {:>12.2} MiB {:>9.2}×",
                kind.name(),
                n,
                ms,
                ms / t1,
                per_kib / 1024.0,
                per_kib / m1
            );
            rows.push(json!({
                "name": kind.name(),
                "n": n,
                "all_running_ms": ms,
                "memory_per_sandbox_kib": per_kib,
                "time_vs_n1": ms / t1,
                "memory_vs_n1": per_kib / m1,
            }));
        }
    }
    if let Some(p) = &podman {
        p.cleanup();
    }
    let out = support::target_dir().join("scaling.json");
    let doc = json!({
        "date": chrono::Utc::now().to_rfc3339(),
        "commit": support::commit(),
        "load_average_at_start": load_at_start,
        "vm_max_n": vm_max,
        "rows": rows,
    });
    match std::fs::write(&out, serde_json::to_vec_pretty(&doc).unwrap()) {
        Ok(()) => println!("\nwritten: {}", out.display()),
        Err(e) => eprintln!("scaling: write {}: {e}", out.display()),
    }
}

/// Start `n` at once; (ms until all run, KiB per sandbox).
fn run_n(kind: &Kind<'_>, n: usize) -> Result<(f64, f64), String> {
    let t0 = Instant::now();
    let started: Vec<Result<Idle<'_>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n).map(|_| s.spawn(|| idle::start(kind))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
            .collect()
    });
    let all_running = t0.elapsed();
    let mut ok = Vec::new();
    let mut err = None;
    for s in started {
        match s {
            Ok(i) => ok.push(i),
            Err(e) => err = Some(e),
        }
    }
    let result = match err {
        Some(e) => Err(format!("{} of {n} failed to start: {e}", n - ok.len())),
        None => {
            std::thread::sleep(SETTLE);
            let total: u64 = ok.iter().map(|i| cost_of(i.root_pid).total_kib()).sum();
            Ok((all_running.as_secs_f64() * 1e3, total as f64 / n as f64))
        }
    };
    std::thread::scope(|s| {
        for i in ok {
            s.spawn(move || i.stop());
        }
    });
    result
}
