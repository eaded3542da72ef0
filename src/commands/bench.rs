//! `sbx bench`: a user's own workload, start→exit, under each isolation
//! level N times, through the same code path as `sbx run --rm` (the sbx
//! binary itself, spawned per run). Prints p50/p95 per isolation, the VM's
//! boot phases, peak memory of each run, and the vm/container ratio; JSON
//! and an SVG chart on request.

mod chart;

use std::io::{IsTerminal, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sbx_shared::paths::Root;
use serde::Serialize;

use crate::cli::{IsolationArg, VmEngineArg};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Isolation levels to compare, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "container,vm"
    )]
    pub isolation: Vec<IsolationArg>,
    /// Measured runs per isolation level (after one warm-up run each).
    #[arg(short = 'n', long = "runs", default_value_t = 10)]
    pub runs: usize,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write a chart of the runs to FILE (SVG).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Memory limit for each run (as `sbx run --memory`; a VM's RAM).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// VM engine for --isolation=vm (as `sbx run --vm-engine`).
    #[arg(long = "vm-engine", value_enum)]
    pub vm_engine: Option<VmEngineArg>,
    pub image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub ms: f64,
    /// Peak RSS of `sbx run` and every process it waited for (the
    /// container's processes; QEMU, guest RAM included).
    pub max_rss_kib: u64,
    pub exit_code: i32,
    pub vm: Option<VmPhases>,
}

/// Boot phases `sbx run --isolation=vm` reports (`SBX_DEBUG=1`), ms from
/// the VMM's start; the guest kernel's on the guest clock.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VmPhases {
    pub engine: String,
    pub vmm_to_init_ms: f64,
    pub guest_kernel_ms: f64,
    pub vmm_to_init_ready_ms: f64,
    pub vmm_to_workload_ms: f64,
}

/// All runs of one isolation level, and their summary.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub isolation: &'static str,
    pub runs: Vec<Run>,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub max_rss_kib_p50: u64,
    pub vm_p50: Option<VmPhases>,
}

pub fn bench(root: &Root, args: BenchArgs) -> Result<u8> {
    if args.runs == 0 {
        bail!("invalid -n 0: at least one run is needed");
    }
    let mut isolations = args.isolation.clone();
    isolations.dedup();
    let exe = std::env::current_exe().context("finding the sbx executable")?;
    let total = (isolations.len() * (args.runs + 1)) as u64;
    let bar = if std::io::stderr().is_terminal() && !args.json {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b
    } else {
        ProgressBar::hidden()
    };

    let mut all = Vec::new();
    for iso in isolations {
        let name = match iso {
            IsolationArg::Container => "container",
            IsolationArg::Vm => "vm",
        };
        bar.set_prefix(name);
        bar.set_message("warm-up");
        one_run(&exe, root, &args, iso).with_context(|| format!("warm-up run ({name})"))?;
        bar.inc(1);
        let mut runs = Vec::with_capacity(args.runs);
        for i in 0..args.runs {
            bar.set_message(format!("run {}", i + 1));
            runs.push(
                one_run(&exe, root, &args, iso)
                    .with_context(|| format!("run {} ({name})", i + 1))?,
            );
            bar.inc(1);
        }
        all.push(summarize(name, runs));
    }
    bar.finish_and_clear();

    let ratio = ratio(&all);
    if args.json {
        let doc = serde_json::json!({
            "image": args.image,
            "command": args.command,
            "runs_per_isolation": args.runs,
            "series": all,
            "vm_over_container_p50": ratio,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_table(&args, &all, ratio);
    }
    if let Some(path) = &args.svg {
        let title = format!("sbx bench: {} {}", args.image, args.command.join(" "));
        if let Err(e) = chart::write_svg(path, &title, &all) {
            bail!("writing the chart {}: {e}", path.display());
        }
        if !args.json {
            println!("chart: {}", path.display());
        }
    }
    Ok(0)
}

/// `sbx run --rm` of the workload, its output discarded; wall time from
/// spawn to reap, and its rusage.
fn one_run(exe: &PathBuf, root: &Root, args: &BenchArgs, iso: IsolationArg) -> Result<Run> {
    let mut cmd = Command::new(exe);
    cmd.arg("--root").arg(root.dir()).args(["run", "--rm"]);
    if let Some(m) = &args.memory {
        cmd.args(["--memory", m]);
    }
    if iso == IsolationArg::Vm {
        cmd.arg("--isolation=vm").env("SBX_DEBUG", "1");
        if let Some(e) = args.vm_engine {
            cmd.arg(match e {
                VmEngineArg::Kvm => "--vm-engine=kvm",
                VmEngineArg::Qemu => "--vm-engine=qemu",
            });
        }
    }
    cmd.arg(&args.image)
        .args(&args.command)
        .env_remove("SBX_ROOT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().context("starting sbx run")?;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let (status, rusage) = wait4(child.id() as i32)?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let exit_code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    if exit_code == 125 {
        let last = stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("sbx: ") && !l.starts_with("sbx: vm"));
        bail!("sbx run failed: {}", last.unwrap_or(stderr.trim()));
    }
    Ok(Run {
        ms,
        max_rss_kib: rusage.ru_maxrss.max(0) as u64,
        exit_code,
        vm: parse_vm_phases(&stderr),
    })
}

/// Reap `pid` with wait4(2), for its peak RSS (which covers the
/// descendants it waited for).
fn wait4(pid: i32) -> Result<(std::process::ExitStatus, libc::rusage)> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 writes into the status and rusage we own; pid is
        // our child, not reaped elsewhere.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if r == pid {
            return Ok((std::process::ExitStatus::from_raw(status), rusage));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("waiting for sbx run");
        }
    }
}

/// The `sbx: vm: engine E, ...; prepare X ms, vmm start → init Y ms (guest
/// kernel Z ms) → init ready ... → workload ...` line.
fn parse_vm_phases(stderr: &str) -> Option<VmPhases> {
    let line = stderr.lines().find(|l| l.contains("vmm start → init"))?;
    let after = |key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.trim_start().split(' ').next()?.parse().ok()
    };
    let engine = line
        .split("engine ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or("")
        .to_string();
    Some(VmPhases {
        engine,
        vmm_to_init_ms: after("vmm start → init")?,
        guest_kernel_ms: after("(guest kernel").unwrap_or(0.0),
        vmm_to_init_ready_ms: after("→ init ready").unwrap_or(0.0),
        vmm_to_workload_ms: after("→ workload").unwrap_or(0.0),
    })
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summarize(isolation: &'static str, runs: Vec<Run>) -> Series {
    let mut ms: Vec<f64> = runs.iter().map(|r| r.ms).collect();
    ms.sort_by(f64::total_cmp);
    let mut rss: Vec<f64> = runs.iter().map(|r| r.max_rss_kib as f64).collect();
    rss.sort_by(f64::total_cmp);
    let phases: Vec<&VmPhases> = runs.iter().filter_map(|r| r.vm.as_ref()).collect();
    let vm_p50 = (!phases.is_empty()).then(|| {
        let p50 = |f: fn(&VmPhases) -> f64| {
            let mut v: Vec<f64> = phases.iter().map(|p| f(p)).collect();
            v.sort_by(f64::total_cmp);
            percentile(&v, 50.0)
        };
        VmPhases {
            engine: phases[0].engine.clone(),
            vmm_to_init_ms: p50(|p| p.vmm_to_init_ms),
            guest_kernel_ms: p50(|p| p.guest_kernel_ms),
            vmm_to_init_ready_ms: p50(|p| p.vmm_to_init_ready_ms),
            vmm_to_workload_ms: p50(|p| p.vmm_to_workload_ms),
        }
    });
    Series {
        isolation,
        p50_ms: percentile(&ms, 50.0),
        p95_ms: percentile(&ms, 95.0),
        min_ms: ms[0],
        max_ms: ms[ms.len() - 1],
        max_rss_kib_p50: percentile(&rss, 50.0) as u64,
        vm_p50,
        runs,
    }
}

/// vm p50 over container p50, when both ran.
fn ratio(all: &[Series]) -> Option<f64> {
    let p50 = |name: &str| all.iter().find(|s| s.isolation == name).map(|s| s.p50_ms);
    match (p50("vm"), p50("container")) {
        (Some(v), Some(c)) if c > 0.0 => Some(v / c),
        _ => None,
    }
}

fn print_table(args: &BenchArgs, all: &[Series], ratio: Option<f64>) {
    println!(
        "sbx bench: {} {} — start→exit, {} run(s) per isolation after one warm-up run",
        args.image,
        args.command.join(" "),
        args.runs
    );
    println!(
        "{:<10} {:>5} {:>11} {:>11} {:>11} {:>11} {:>14} {:>5}",
        "ISOLATION", "RUNS", "P50", "P95", "MIN", "MAX", "MAX RSS (P50)", "EXIT"
    );
    for s in all {
        let exits: Vec<i32> = s.runs.iter().map(|r| r.exit_code).collect();
        let exit = if exits.iter().all(|e| *e == exits[0]) {
            exits[0].to_string()
        } else {
            "mixed".into()
        };
        println!(
            "{:<10} {:>5} {:>8.1} ms {:>8.1} ms {:>8.1} ms {:>8.1} ms {:>10.1} MiB {:>5}",
            s.isolation,
            s.runs.len(),
            s.p50_ms,
            s.p95_ms,
            s.min_ms,
            s.max_ms,
            s.max_rss_kib_p50 as f64 / 1024.0,
            exit
        );
    }
    for s in all {
        if let Some(p) = &s.vm_p50 {
            println!(
                "vm boot (p50, engine {}): VMM start → guest init {:.1} ms (guest kernel {:.1} ms) → init ready {:.1} ms → workload {:.1} ms",
                p.engine, p.vmm_to_init_ms, p.guest_kernel_ms, p.vmm_to_init_ready_ms, p.vmm_to_workload_ms
            );
        }
    }
    if let Some(r) = ratio {
        println!("vm/container: {r:.1}× start→exit (p50)");
    }
    println!("MAX RSS: peak of sbx run and the processes it waited for (a VM's QEMU with the guest RAM it touched)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&v, 50.0), 5.0);
        assert_eq!(percentile(&v, 95.0), 10.0);
        assert_eq!(percentile(&[3.0], 95.0), 3.0);
    }

    #[test]
    fn vm_phases_from_debug_line() {
        let line =
            "sbx: vm: engine qemu (tcg), 256 MiB, 1 vCPU, root disk cached; prepare 0.1 ms, \
                    vmm start → init 278.6 ms (guest kernel 225.5 ms) → init ready 312.5 ms \
                    (init setup 41.0 ms) → workload 328.2 ms; workload 23.6 ms, shutdown 7.7 ms";
        let p = parse_vm_phases(line).unwrap();
        assert_eq!(p.engine, "qemu (tcg)");
        assert_eq!(p.vmm_to_init_ms, 278.6);
        assert_eq!(p.guest_kernel_ms, 225.5);
        assert_eq!(p.vmm_to_init_ready_ms, 312.5);
        assert_eq!(p.vmm_to_workload_ms, 328.2);
        assert!(parse_vm_phases("nothing here").is_none());
    }
}
