//! sbx-guest-init: PID 1 of an sbx microVM.
//!
//! The boot steps, in order: mount /dev, /proc and /sys; open the consoles
//! (`/dev/hvc0` control, `hvc1` stdout, `hvc2` stderr, `hvc3` stdin); read
//! the spec from the control port; mount the root disk read-only under a
//! tmpfs writable layer and switch into it; report "ready"; start the
//! workload; relay its streams, reap, forward signals; report its exit;
//! sync and reboot (the host runs the guest with `reboot=t` and QEMU's
//! `-no-reboot`, so a reboot ends the VM).
//!
//! Diagnostics go to stderr, which the kernel connected to /dev/console:
//! the serial port, which the host keeps as the VM's log.

mod changes;
mod console;
mod exec;
mod mounts;
mod net;
mod output;
mod relay;
mod tar;
mod volumes;
mod workload;

use sbx_vm_protocol::{GuestEvent, GuestSpec};

use crate::console::Control;

/// Exit status Docker gives a sandbox that failed before its workload ran.
const SETUP_FAILED: i32 = 125;

fn main() {
    let init_start_ns = boottime_ns();
    if std::process::id() != 1 {
        eprintln!("sbx-guest-init: must run as PID 1 of an sbx VM");
        std::process::exit(1);
    }
    if let Err(e) = boot(init_start_ns) {
        eprintln!("sbx-guest-init: {e}");
    }
    power_off();
}

fn boot(init_start_ns: u64) -> Result<(), String> {
    mounts::early()?;
    // Fault injection for sbx's tests: an init that exits panics the kernel.
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline
        .split_whitespace()
        .any(|w| w == "sbx.fault=init-exit")
    {
        eprintln!("sbx-guest-init: exiting at once (sbx.fault=init-exit)");
        std::process::exit(1);
    }
    let trace = cmdline.split_whitespace().any(|w| w == "sbx.debug");
    let consoles = console::open_all()?;
    if trace {
        eprintln!("sbx-guest-init: consoles open");
    }
    let [ctl, stdout, stderr, stdin] = consoles;
    let mut ctl = Control::new(ctl);
    ctl.send(&GuestEvent::Hello {
        init_start_ns,
        hello_ns: boottime_ns(),
    });
    let spec: GuestSpec = ctl.read_spec()?;
    if trace {
        eprintln!("sbx-guest-init: spec read");
    }

    let started = setup(&spec).and_then(|()| {
        ctl.send(&GuestEvent::Ready {
            ready_ns: boottime_ns(),
        });
        workload::start(&spec)
    });
    let started = match started {
        Ok(w) => w,
        Err((code, message)) => {
            eprintln!("sbx-guest-init: {message}");
            ctl.send(&GuestEvent::ExecFailed { code, message });
            return Ok(());
        }
    };
    ctl.send(&GuestEvent::Started {
        pid: started.pid.as_raw(),
    });
    let consoles = relay::Consoles {
        stdout,
        stderr,
        stdin,
    };
    let (mut ctl, code, signal) = relay::Relay::new(ctl, consoles, started, &spec, trace).run();
    volumes::unmount_volumes(&spec);
    if let Some(disk) = &spec.changes_disk {
        ctl.send(&write_changes(&spec, disk));
    }
    ctl.send(&GuestEvent::Exit { code, signal });
    ctl.drain();
    Ok(())
}

/// Everything before the workload: root filesystem, hostname, loopback.
fn setup(spec: &GuestSpec) -> Result<(), (i32, String)> {
    mounts::root(spec).map_err(|e| (SETUP_FAILED, e))?;
    nix::unistd::sethostname(&spec.hostname)
        .map_err(|e| (SETUP_FAILED, format!("setting the hostname: {}", e.desc())))?;
    // A kernel without networking has no lo to bring up.
    let _ = sbx_workload::net::loopback_up();
    net::configure(&spec.nets).map_err(|e| (SETUP_FAILED, e))?;
    Ok(())
}

/// The writable layer's changes onto the changes disk, and the event that
/// says how that went.
fn write_changes(spec: &GuestSpec, disk: &str) -> GuestEvent {
    // A read-only root has no upper directory: an empty layer.
    match changes::write(spec, mounts::upper_dir().as_deref(), disk) {
        Ok(bytes) => GuestEvent::Changes { bytes },
        Err(message) => {
            eprintln!("sbx-guest-init: {message}");
            GuestEvent::ChangesFailed { message }
        }
    }
}

/// CLOCK_BOOTTIME in nanoseconds: time since the guest kernel started.
fn boottime_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Flush the disks and end the VM. If the reboot call fails, returning
/// from PID 1 panics the kernel, which (`panic=-1`) reboots as well.
fn power_off() {
    nix::unistd::sync();
    // SAFETY: reboot(2) with RB_AUTOBOOT takes no pointer; PID 1 holds
    // CAP_SYS_BOOT.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
}
