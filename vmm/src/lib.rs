//! sbx-vmm: the microVM backend.
//!
//! Starting a sandbox, in order: choose the engine (kvm, or QEMU where KVM
//! cannot run a standard guest); find the guest kernel; write the initramfs
//! holding sbx's guest init (once per build); build the image's root disk
//! (once per image); connect the consoles (control, stdout, stderr, stdin);
//! start the VMM; send the spec over the control port; wait for the init
//! to report the workload started. Then the [`Sandbox`] waits for its exit
//! event, forwards signals and resizes, and reports how the VM booted.

pub mod changes;
pub mod config;
pub mod engine;
mod exec;
mod exec_client;
mod guest_init;
pub mod initramfs;
pub mod kernel;
pub mod kvm;
mod kvm_engine;
pub mod mounts;
pub mod qemu;
pub mod rootdisk;
mod sandbox;
mod stdio;

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sbx_shared::backend::{Backend, BackendError, Sandbox, SandboxRef, Stdio};
use sbx_shared::paths::Root;
use sbx_shared::spec::SandboxSpec;
use sbx_vm_protocol::{GuestEvent, GuestSpec};

use crate::config::{Disk, VmConfig};
use crate::engine::{Engine, EngineError, HostKvm, RunningVm};
use crate::sandbox::{log_tail, ms, BootRecord, EventReader, VmSandbox};

/// Guest RAM without `--memory`.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// Below this the guest kernel and init do not fit.
pub const MIN_MEMORY_MIB: u64 = 32;
/// How long the guest may take to start its workload.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// The kernel command line before the engine's device entries: kernel
/// messages on the serial port only; a panic or a reboot ends the VM
/// (`reboot=t`: triple fault, which QEMU's `-no-reboot` and our VMM turn
/// into an exit).
const CMDLINE: &str = "console=ttyS0 reboot=t panic=-1 rdinit=/init quiet";
/// Under TCG the local APIC timer's calibration (a 100 ms busy loop, then
/// a verification that fails there anyway) is half the kernel's boot:
/// measured 0.42 s → 0.21 s to "Run /init" without it. The PIT drives the
/// ticks instead.
const CMDLINE_TCG: &str = "noapictimer no_timer_check";

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Kernel(#[from] kernel::KernelError),
    #[error(transparent)]
    Qemu(#[from] qemu::QemuError),
    #[error("vm engine kvm: {0}")]
    Kvm(#[from] kvm::KvmError),
    #[error(transparent)]
    Initramfs(#[from] initramfs::InitramfsError),
    #[error(transparent)]
    Disk(#[from] rootdisk::DiskError),
    #[error(transparent)]
    Mount(#[from] mounts::MountError),
    #[error("--memory {0}m is too little for a VM: the minimum is {MIN_MEMORY_MIB}m")]
    MemoryTooSmall(u64),
    #[error("vm: {what}: {}", source.desc())]
    Plumbing {
        what: &'static str,
        source: nix::errno::Errno,
    },
    #[error("vm: {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the VM stopped before its workload started (VMM {vmm}){log}")]
    DiedAtBoot { vmm: String, log: String },
    #[error("the VM did not start its workload within {secs}s{log}")]
    BootTimeout { secs: u64, log: String },
    #[error("the VM stopped without reporting its workload's exit: guest kernel panic or crash (VMM {vmm}){log}")]
    Died { vmm: String, log: String },
}

impl From<VmError> for BackendError {
    fn from(e: VmError) -> Self {
        BackendError::Setup(e.to_string())
    }
}

pub struct VmBackend {
    root: Root,
    /// Give each VM a changes disk, for [`Sandbox::diff`] (build steps).
    changes: bool,
}

impl VmBackend {
    pub fn new(root: &Root) -> Self {
        VmBackend {
            root: root.clone(),
            changes: false,
        }
    }

    /// Every VM this backend starts gets a changes disk, onto which its
    /// guest init writes what the workload changed when it ends, so that
    /// [`Sandbox::diff`] works (a build's `RUN` steps).
    ///
    /// ```
    /// let root = sbx_shared::paths::Root::new("/var/lib/sbx");
    /// let _builder = sbx_vmm::VmBackend::new(&root).with_changes();
    /// ```
    pub fn with_changes(mut self) -> Self {
        self.changes = true;
        self
    }
}

impl Backend for VmBackend {
    fn start(&self, spec: &SandboxSpec, stdio: Stdio) -> Result<Box<dyn Sandbox>, BackendError> {
        // A volume is one VM's disk at a time: locked until the VM is gone.
        let lease = sbx_shared::volumes::Lease::acquire(spec)
            .map_err(|e| BackendError::Setup(e.to_string()))?;
        let sandbox = self.boot(spec, stdio)?;
        Ok(sbx_shared::volumes::hold(Box::new(sandbox), lease))
    }

    /// Through the monitor that holds the VM (a detached sandbox).
    fn exec(
        &self,
        target: &SandboxRef<'_>,
        process: &sbx_shared::spec::Process,
        stdio: Stdio,
    ) -> Result<Box<dyn Sandbox>, BackendError> {
        exec_client::exec(target, process, stdio)
    }
}

impl VmBackend {
    fn boot(&self, spec: &SandboxSpec, stdio: Stdio) -> Result<VmSandbox, BackendError> {
        let t0 = Instant::now();
        let (volume_disks, guest_mounts) = mounts::plan(spec).map_err(VmError::from)?;
        // The changes disk goes last, after the volumes' disks.
        let (volume_disks, changes_disk, changes_device) = self.changes_disk(spec, volume_disks)?;
        let (engine, why) =
            engine::choose(spec.vm.engine, HostKvm::detect()).map_err(VmError::from)?;
        let kernel = kernel::locate(spec.vm.kernel.as_deref()).map_err(VmError::from)?;
        let qemu = match engine {
            Engine::Qemu(_) => Some(qemu::binary().map_err(VmError::from)?),
            Engine::Kvm => None,
        };
        let memory_mib = match spec.limits.memory {
            Some(b) => b.div_ceil(1 << 20),
            None => DEFAULT_MEMORY_MIB,
        };
        if memory_mib < MIN_MEMORY_MIB {
            return Err(VmError::MemoryTooSmall(memory_mib).into());
        }
        let vcpus = spec
            .limits
            .cpus
            .map_or(1, |c| c.ceil().clamp(1.0, 255.0) as u8);
        if let Some(why) = why {
            eprintln!("{why}");
        }

        let vm_dir = self.root.dir().join("vm");
        let initramfs = initramfs::ensure(&vm_dir).map_err(VmError::from)?;
        let (disk, disk_built) = rootdisk::ensure(
            &vm_dir.join("disks"),
            &self.root.tmp(),
            &rootdisk::key(&spec.image.config, &spec.rootfs.layers),
            &spec.rootfs.layers,
        )
        .map_err(VmError::from)?;

        let plumbing = stdio::plumb(spec, stdio).map_err(|source| VmError::Plumbing {
            what: "connecting the consoles",
            source,
        })?;
        let mut cmdline = CMDLINE.to_string();
        if engine == Engine::Qemu(engine::Accel::Tcg) {
            cmdline.push(' ');
            cmdline.push_str(CMDLINE_TCG);
        }
        // Fault injection for the tests: `init-exit` makes the guest init
        // exit at once, which panics the guest kernel.
        // SBX_DEBUG=2: the guest init says what it does on the serial log.
        if std::env::var("SBX_DEBUG").is_ok_and(|v| v == "2") {
            cmdline.push_str(" sbx.debug");
        }
        if let Some(f) = std::env::var("SBX_VM_FAULT").ok().filter(|f| !f.is_empty()) {
            cmdline.push_str(&format!(" sbx.fault={f}"));
        }
        let serial_log = spec.dir.join("serial.log");
        let vmm_log = spec.dir.join("vmm.log");
        let config = VmConfig {
            kernel: kernel.clone(),
            initramfs: Some(initramfs),
            cmdline,
            memory_mib,
            vcpus,
            disks: std::iter::once(Disk {
                path: disk.clone(),
                read_only: true,
            })
            .chain(volume_disks)
            .collect(),
            consoles: plumbing.consoles,
            // Bridge networks: taps sbx_shared::network::backend made.
            nets: spec
                .networks
                .iter()
                .map(|a| config::Net {
                    tap: sbx_shared::network::tap_name(&spec.id, &a.network_id),
                    mac: a.mac_bytes(),
                })
                .collect(),
            serial_log: Some(serial_log.clone()),
        };
        let mut record = BootRecord {
            engine: engine.to_string(),
            memory_mib,
            vcpus,
            kernel,
            root_disk: disk,
            root_disk_built: disk_built,
            prepare_ms: ms(t0.elapsed()),
            ..BootRecord::default()
        };

        let vmm_start = Instant::now();
        let vm: Box<dyn RunningVm> = match (engine, qemu) {
            (Engine::Qemu(accel), Some(qemu)) => {
                Box::new(qemu::spawn(&qemu, accel, config, &vmm_log).map_err(VmError::from)?)
            }
            _ => Box::new(kvm_engine::spawn(config).map_err(VmError::from)?),
        };
        record.vmm_pid = vm.pid();
        let control = Arc::new(Mutex::new(File::from(plumbing.control)));
        let relays = plumbing
            .outputs
            .into_iter()
            .map(|(console, ours, dest)| {
                let control = Arc::clone(&control);
                std::thread::spawn(move || stdio::relay_output(console, ours, dest, control))
            })
            .collect();
        let reader = (control.lock().unwrap_or_else(|p| p.into_inner()))
            .try_clone()
            .map_err(|source| VmError::Io {
                what: "duplicating the control port",
                source,
            });
        let reader = match reader {
            Ok(r) => r,
            Err(e) => {
                vm.kill();
                vm.wait_timeout(None);
                return Err(e.into());
            }
        };
        let guest_spec = GuestSpec {
            args: spec.process.args.clone(),
            env: spec.process.env.clone(),
            cwd: spec.process.cwd.clone(),
            user: spec.process.user.clone(),
            hostname: spec.hostname.clone(),
            rlimits: spec
                .process
                .rlimits
                .iter()
                .map(|r| (r.resource, r.soft, r.hard))
                .collect(),
            terminal: spec.process.terminal,
            stdin: spec.process.stdin,
            read_only: spec.rootfs.read_only,
            changes_disk: changes_device,
            rootfs_type: rootdisk::FSTYPE.into(),
            tty_size: plumbing.tty_size,
            mounts: guest_mounts,
            nets: spec
                .networks
                .iter()
                .map(|a| sbx_vm_protocol::GuestNet {
                    mac: a.mac.clone(),
                    address: a.cidr(),
                })
                .collect(),
            hosts: (!spec.networks.is_empty()).then(|| sbx_shared::network::hosts::for_spec(spec)),
        };
        let sandbox = VmSandbox {
            vm,
            control,
            relays: Mutex::new(relays),
            events: Mutex::new(EventReader::new(reader)),
            io: Mutex::new(plumbing.io),
            killed: AtomicBool::new(false),
            finished: Mutex::new(None),
            record: Mutex::new(record),
            started_at: vmm_start,
            stdin_sink: None,
            dir: spec.dir.clone(),
            serial_log,
            vmm_log,
            execs: Arc::default(),
            changes_disk,
            changes: Mutex::new(None),
        };
        let mut sandbox = sandbox;
        if let Err(e) = wait_started(&mut sandbox, &guest_spec, spec.timeout, vmm_start) {
            sandbox.vm.kill();
            sandbox.vm.wait_timeout(None);
            return Err(e);
        }
        if let Some((source, sink)) = plumbing.stdin {
            let sink = Arc::new(File::from(sink));
            sandbox.stdin_sink = Some(Arc::clone(&sink));
            let control = Arc::clone(&sandbox.control);
            std::thread::spawn(move || stdio::relay_stdin(source, sink, control));
        }
        Ok(sandbox)
    }
}

/// Send the spec, then read events until the workload runs (or could not
/// be started, or the VM died, or it took too long).
fn wait_started(
    sandbox: &mut VmSandbox,
    guest_spec: &GuestSpec,
    timeout: Option<Duration>,
    vmm_start: Instant,
) -> Result<(), BackendError> {
    use std::io::Write;
    let limit = timeout.map_or(BOOT_TIMEOUT, |t| t.min(BOOT_TIMEOUT));
    let deadline = vmm_start + limit;
    let mut spec_sent = false;
    loop {
        let event = sandbox
            .events
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .next(Some(deadline));
        let record = sandbox.record.get_mut().unwrap_or_else(|p| p.into_inner());
        match event {
            Ok(Some(GuestEvent::Hello {
                init_start_ns,
                hello_ns,
            })) if !spec_sent => {
                record.vmm_to_init_ms = Some(ms(vmm_start.elapsed()));
                record.guest_kernel_ms = Some(init_start_ns as f64 / 1e6);
                record.guest_init_start_ns = init_start_ns;
                let _ = hello_ns;
                spec_sent = true;
                let line = sbx_vm_protocol::to_line(guest_spec);
                let sent = sandbox
                    .control
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .write_all(&line);
                if let Err(source) = sent {
                    let e = VmError::Io {
                        what: "sending the spec to the guest",
                        source,
                    };
                    return Err(e.into());
                }
            }
            Ok(Some(GuestEvent::Ready { ready_ns })) => {
                record.vmm_to_init_ready_ms = Some(ms(vmm_start.elapsed()));
                record.guest_init_ms =
                    Some(ready_ns.saturating_sub(record.guest_init_start_ns) as f64 / 1e6);
            }
            Ok(Some(GuestEvent::Started { .. })) => {
                record.vmm_to_workload_ms = Some(ms(vmm_start.elapsed()));
                record.save(&sandbox.dir);
                sandbox.started_at = Instant::now();
                return Ok(());
            }
            Ok(Some(GuestEvent::ExecFailed { code, message })) => {
                // The init powers off by itself after reporting.
                sandbox.vm.wait_timeout(Some(Duration::from_secs(5)));
                let e = if code == 126 || code == 127 {
                    BackendError::Exec { message, code }
                } else {
                    BackendError::Setup(message)
                };
                return Err(e);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) if event.as_ref().is_ok() => {
                let vmm = sandbox
                    .vm
                    .wait_timeout(Some(Duration::from_secs(5)))
                    .unwrap_or_default();
                let log = log_tail(&sandbox.serial_log, &sandbox.vmm_log);
                return Err(VmError::DiedAtBoot { vmm, log }.into());
            }
            Ok(None) | Err(_) => {
                sandbox.vm.kill();
                sandbox.vm.wait_timeout(None);
                let log = log_tail(&sandbox.serial_log, &sandbox.vmm_log);
                let secs = limit.as_secs();
                return Err(VmError::BootTimeout { secs, log }.into());
            }
        }
    }
}

impl VmBackend {
    /// With [`VmBackend::with_changes`]: the volumes' disks and the changes
    /// disk after them, its path and its name in the guest.
    #[allow(clippy::type_complexity)]
    fn changes_disk(
        &self,
        spec: &SandboxSpec,
        mut disks: Vec<Disk>,
    ) -> Result<(Vec<Disk>, Option<PathBuf>, Option<String>), BackendError> {
        if !self.changes {
            return Ok((disks, None, None));
        }
        let path = changes::create(&spec.dir).map_err(|e| BackendError::Setup(e.to_string()))?;
        disks.push(Disk {
            path: path.clone(),
            read_only: false,
        });
        // The root disk is index 0.
        let device = sbx_vm_protocol::disk_device(disks.len());
        Ok((disks, Some(path), Some(device)))
    }
}

/// Where the root disks live under an sbx root.
pub fn disks_dir(root: &Root) -> PathBuf {
    root.dir().join("vm").join("disks")
}
