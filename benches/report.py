#!/usr/bin/env python3
"""Markdown tables for README's "Performance" from one bench run:
target/criterion/{start_to_exit,vm_boot}/*/new/estimates.json (criterion's
median of the samples), target/footprint.json and target/scaling.json.

    cargo bench && python3 benches/report.py
"""

import json
import os
import sys
from pathlib import Path

TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path(__file__).resolve().parent.parent / "target"))
CRITERION = TARGET / "criterion"


def median_ms(group, name):
    f = CRITERION / group / name / "new" / "estimates.json"
    if not f.exists():
        return None
    return json.loads(f.read_text())["median"]["point_estimate"] / 1e6


def fmt_ms(v):
    if v is None:
        return "skipped"
    return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms" if v < 1000 else f"{v / 1e3:.2f} s"


def mib(kib):
    return "-" if kib is None else f"{kib / 1024:.2f} MiB"


def start_to_exit():
    rows = [
        ("baseline_unshare", "`unshare -mpuin --fork true` (floor)"),
        ("sbx_container", "**sbx** `run --rm busybox true` (container)"),
        ("crun", "crun `run` (OCI bundle, same rootfs)"),
        ("runc", "runc `run` (OCI bundle, same rootfs)"),
        ("podman_runc", "podman `run --rm` (runc; image from `sbx save`)"),
        ("sbx_vm", "**sbx** `run --rm --isolation=vm busybox true` (qemu engine, TCG)"),
        ("qemu_microvm", "qemu `-M microvm` (TCG), same kernel, init that reboots"),
    ]
    crun = median_ms("start_to_exit", "crun")
    print("| start→exit of `true` | median | vs crun |")
    print("|---|---:|---:|")
    for key, label in rows:
        v = median_ms("start_to_exit", key)
        ratio = f"{v / crun:.2f}×" if v is not None and crun else ""
        print(f"| {label} | {fmt_ms(v)} | {ratio} |")


def vm_boot():
    rows = [
        ("kvm_payload_spawn_to_main", "kvm engine: spawn → launcher `main`"),
        ("kvm_payload_main_to_first_kvm_run", "kvm engine: VMM start → first KVM_RUN"),
        ("kvm_payload_spawn_to_first_kvm_run", "kvm engine: spawn → first KVM_RUN"),
        ("kvm_payload_spawn_to_first_guest_io", "kvm engine: spawn → guest's first I/O (serial)"),
        ("kvm_payload_spawn_to_guest_exit", "kvm engine: spawn → guest reset (VM over)"),
        ("payload_start_to_exit_sbx_kvm_engine", "pvh.S, spawn → exit: sbx kvm engine (launcher process)"),
        ("payload_start_to_exit_qemu_microvm_kvm", "pvh.S, spawn → exit: qemu `-M microvm -accel kvm`"),
        ("payload_start_to_exit_qemu_microvm_tcg", "pvh.S, spawn → exit: qemu `-M microvm -accel tcg`"),
        ("sbx_vm_guest_kernel_to_init", "sbx vm (qemu/TCG): guest kernel → init (guest clock)"),
        ("sbx_vm_vmm_to_init", "sbx vm (qemu/TCG): VMM start → guest init runs"),
        ("sbx_vm_vmm_to_init_ready", "sbx vm (qemu/TCG): VMM start → init ready"),
        ("qemu_microvm_spawn_to_init", "qemu microvm (TCG): spawn → init runs"),
        ("qemu_microvm_spawn_to_exit", "qemu microvm (TCG): spawn → exit"),
    ]
    print("| VM boot phase | median |")
    print("|---|---:|")
    for key, label in rows:
        v = median_ms("vm_boot", key)
        if v is not None or "_tcg" not in key:
            print(f"| {label} | {fmt_ms(v)} |")
    f = TARGET / "payload_start_to_exit.json"
    if f.exists():
        d = json.loads(f.read_text())
        print(f"\n(pvh.S max RSS, wait4, median: sbx kvm launcher {mib(d['sbx_kvm_launcher_max_rss_kib'])}, "
              f"qemu microvm ({d['qemu_accel']}) {mib(d['qemu_microvm_max_rss_kib'])}; "
              f"{d['date']}, commit {d['commit']}, load {d['load_average_at_start']})")


def footprint():
    f = TARGET / "footprint.json"
    if not f.exists():
        print("(no footprint.json)")
        return
    doc = json.loads(f.read_text())
    print("| idle sandbox | cgroup | host PSS | total | VMM own RSS | TCG code | guest RAM backed |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in doc["rows"]:
        vmm = r.get("vmm") or {}
        print(
            f"| {r['name']} | {mib(r['cgroup_kib'])} | {mib(r['host_pss_kib'])} | "
            f"{mib(r['total_kib'])} | {mib(vmm.get('vmm_rss_kib'))} | "
            f"{mib(vmm.get('tcg_code_kib'))} | {mib(vmm.get('guest_rss_kib'))} |"
        )
    print(f"\n(footprint: {doc['date']}, commit {doc['commit']}, load {doc['load_average_at_start']})")


def scaling():
    f = TARGET / "scaling.json"
    if not f.exists():
        print("(no scaling.json)")
        return
    doc = json.loads(f.read_text())
    print("| sandboxes | N | all running | × N=1 | memory per sandbox | × N=1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in doc["rows"]:
        print(
            f"| {r['name']} | {r['n']} | {fmt_ms(r['all_running_ms'])} | {r['time_vs_n1']:.1f}× | "
            f"{mib(r['memory_per_sandbox_kib'])} | {r['memory_vs_n1']:.2f}× |"
        )
    print(f"\n(scaling: {doc['date']}, commit {doc['commit']}, load {doc['load_average_at_start']}, VM N ≤ {doc['vm_max_n']})")


def main():
    for title, f in [("start_to_exit", start_to_exit), ("vm_boot", vm_boot),
                     ("footprint", footprint), ("scaling", scaling)]:
        print(f"\n### {title}\n")
        f()
    return 0


if __name__ == "__main__":
    sys.exit(main())
