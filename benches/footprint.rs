//! Memory of an idle sandbox (a shell waiting on `sleep`), one row per sbx
//! backend and per installed peer, printed as a table and written to
//! `target/footprint.json`.
//!
//! Each row is the sandbox's memory cgroup usage (containers run with a
//! 64 MiB limit so that they have one) plus the PSS of every host process
//! kept alive for it outside that cgroup: sbx's foreground `sbx run`,
//! crun/runc's foreground `run`, podman's conmon, the VMM. VMs (64 MiB of
//! guest RAM) also split the VMM's RSS into guest RAM the host backed and
//! the VMM's own. The kvm engine row boots the freestanding test payload
//! in a small launcher process (the only guest it runs on a PVM host):
//! its peak RSS less the guest RAM it backed.
//!
//! Needs root. `cargo bench --bench footprint` takes about half a minute.

mod support;

use std::time::Duration;

use serde_json::json;
use support::idle::{self, Kind};
use support::launcher;
use support::memory::{cost_of, vmm_split};
use support::peers::{make_bundle, shared_rootfs, OciRuntime, Podman, QemuPeer};
use support::Env;

/// Time for an idle sandbox's memory to settle after it says ready.
const SETTLE: Duration = Duration::from_millis(500);

fn main() {
    launcher::maybe_run();
    if support::filtered_out("footprint") {
        return;
    }
    let env = Env::setup("footprint");
    let load_at_start = support::load_average();
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
                let r = env.path().join("rootfs");
                let b = make_bundle(&probe, &r, &["true"], None).ok()?;
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
    let qemu = QemuPeer::prepare(env.path());

    let mut kinds: Vec<Kind<'_>> = Vec::new();
    if env.sbx_container {
        kinds.push(Kind::SbxContainer(&env.sbx_root));
    }
    if env.sbx_vm {
        kinds.push(Kind::SbxVm(&env.sbx_root));
    }
    if let Ok(b) = &bundle {
        kinds.extend(runtimes.iter().map(|rt| Kind::Oci(rt, b)));
    }
    if let Some(p) = &podman {
        kinds.push(Kind::Podman(p));
    }
    if let Some(q) = &qemu {
        kinds.push(Kind::Qemu(q));
    }

    let mut rows = Vec::new();
    for kind in &kinds {
        match measure(kind) {
            Ok(row) => rows.push(row),
            Err(e) => eprintln!("skipping {}: {e}", kind.name()),
        }
    }
    match kvm_row(&env) {
        Ok(row) => rows.push(row),
        Err(e) => eprintln!("skipping kvm_engine_payload: {e}"),
    }
    if let Some(p) = &podman {
        p.cleanup();
    }

    print_table(&rows);
    let out = support::target_dir().join("footprint.json");
    let doc = json!({
        "date": chrono::Utc::now().to_rfc3339(),
        "commit": support::commit(),
        "load_average_at_start": load_at_start,
        "rows": rows,
    });
    match std::fs::write(&out, serde_json::to_vec_pretty(&doc).unwrap()) {
        Ok(()) => println!("\nwritten: {}", out.display()),
        Err(e) => eprintln!("footprint: write {}: {e}", out.display()),
    }
}

fn measure(kind: &Kind<'_>) -> Result<serde_json::Value, String> {
    let sandbox = idle::start(kind)?;
    std::thread::sleep(SETTLE);
    let cost = cost_of(sandbox.root_pid);
    let vmm = kind.guest_mib().and_then(|mib| {
        let pid = cost
            .processes
            .iter()
            .find(|p| p.comm.starts_with("qemu"))
            .map_or(sandbox.root_pid, |p| p.pid);
        vmm_split(pid, mib)
    });
    sandbox.stop();
    Ok(json!({
        "name": kind.name(),
        "cgroup_kib": cost.cgroup_kib,
        "host_pss_kib": cost.host_pss_kib,
        "total_kib": cost.total_kib(),
        "vmm": vmm,
        "processes": cost.processes,
    }))
}

/// The kvm engine on the test payload: median of 5 launcher runs.
fn kvm_row(env: &Env) -> Result<serde_json::Value, String> {
    let payload = support::guest::payload("hello", env.path())?;
    let mut runs = (0..5)
        .map(|_| launcher::launch(&payload))
        .collect::<Result<Vec<_>, _>>()?;
    runs.sort_by_key(|f| f.max_rss_kib);
    let f = runs[runs.len() / 2];
    Ok(json!({
        "name": "kvm_engine_payload",
        "cgroup_kib": 0,
        "host_pss_kib": serde_json::Value::Null,
        "total_kib": f.max_rss_kib,
        "vmm": {
            "rss_kib": f.max_rss_kib,
            "guest_rss_kib": f.guest_kib,
            "tcg_code_kib": 0,
            "vmm_rss_kib": f.vmm_rss_kib(),
            "peak": true,
        },
        "processes": [],
    }))
}

fn print_table(rows: &[serde_json::Value]) {
    let kib = |v: &serde_json::Value| match v.as_u64() {
        Some(k) => format!("{:.2} MiB", k as f64 / 1024.0),
        None => "-".into(),
    };
    println!(
        "\n{:<20} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
        "SANDBOX", "CGROUP", "HOST PSS", "TOTAL", "VMM OWN", "TCG CODE", "GUEST RAM"
    );
    for r in rows {
        println!(
            "{:<20} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
            r["name"].as_str().unwrap_or("?"),
            kib(&r["cgroup_kib"]),
            kib(&r["host_pss_kib"]),
            kib(&r["total_kib"]),
            kib(&r["vmm"]["vmm_rss_kib"]),
            kib(&r["vmm"]["tcg_code_kib"]),
            kib(&r["vmm"]["guest_rss_kib"]),
        );
    }
    println!(
        "\nCGROUP: the sandbox's memory cgroup usage; HOST PSS: processes kept alive for it \
         outside that cgroup (sbx run, crun/runc run, conmon, the VMM); VMs: 64 MiB guest; \
         VMM OWN: the VMM's RSS less the guest RAM it backed and QEMU's TCG code buffer \
         (translated guest code, a cost of emulation that KVM does not have). kvm_engine_payload: peak RSS of a launcher \
         booting vmm/payloads/hello.S (freestanding: this host's PVM runs no Linux on it)."
    );
}
