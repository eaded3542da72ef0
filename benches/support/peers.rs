//! The peers sbx is measured beside, each on the same busybox rootfs:
//! crun and runc running an OCI bundle, podman running the image loaded
//! from `sbx save`'s OCI archive, and `qemu-system-x86_64 -M microvm`
//! booting sbx's guest kernel with a minimal init.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sbx_shared::paths::Root;
use sbx_shared::spec::VmEngine;
use sbx_vmm::engine::{self, Accel, HostKvm};

use super::guest::{self, InitThen, INIT_MARKER};
use super::{find_in_path, try_run};

/// A fresh container id for a peer runtime.
pub fn fresh_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "sbx-bench-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The busybox rootfs for the OCI runtimes: the image's unpacked layer,
/// copied once (bundles point at it; it is mounted read-only).
pub fn shared_rootfs(sbx_root: &Path, dest: &Path) -> Result<PathBuf, String> {
    let layers: Vec<PathBuf> = fs::read_dir(Root::new(sbx_root).layers().join("sha256"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    let [layer] = layers.as_slice() else {
        return Err(format!(
            "expected one busybox layer, found {}",
            layers.len()
        ));
    };
    let mut cp = Command::new("cp");
    cp.arg("-a").arg(layer).arg(dest);
    try_run(&mut cp)?;
    Ok(dest.to_path_buf())
}

/// An OCI bundle: `crun spec`'s default config with `args` as the process,
/// a read-only root at `rootfs`, and an optional memory limit.
pub fn make_bundle(
    dir: &Path,
    rootfs: &Path,
    args: &[&str],
    memory: Option<u64>,
) -> Result<PathBuf, String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tool = find_in_path("crun")
        .or_else(|| find_in_path("runc"))
        .ok_or("neither crun nor runc is installed")?;
    let _ = fs::remove_file(dir.join("config.json"));
    try_run(Command::new(tool).arg("spec").current_dir(dir))?;
    let path = dir.join("config.json");
    let text = fs::read(&path).map_err(|e| e.to_string())?;
    let mut config: serde_json::Value = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    config["process"]["args"] = serde_json::json!(args);
    config["process"]["terminal"] = serde_json::json!(false);
    config["root"]["path"] = serde_json::json!(rootfs);
    config["root"]["readonly"] = serde_json::json!(true);
    if let Some(m) = memory {
        config["linux"]["resources"]["memory"] = serde_json::json!({ "limit": m });
    }
    fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).map_err(|e| e.to_string())?;
    Ok(dir.to_path_buf())
}

/// crun or runc.
pub struct OciRuntime {
    pub name: &'static str,
    pub bin: PathBuf,
}

impl OciRuntime {
    /// The runtime if it is installed and runs `bundle`; else one line on
    /// stderr and None.
    pub fn find(name: &'static str, bundle: &Path) -> Option<OciRuntime> {
        let Some(bin) = find_in_path(name) else {
            eprintln!("skipping {name}: not installed");
            return None;
        };
        let rt = OciRuntime { name, bin };
        match rt.run(bundle) {
            Ok(()) => Some(rt),
            Err(e) => {
                eprintln!("skipping {name}: {e}");
                None
            }
        }
    }

    /// `RUNTIME run --bundle B <fresh id>`; the container is gone once it exits.
    pub fn run(&self, bundle: &Path) -> Result<(), String> {
        let id = fresh_id();
        let r = try_run(self.cmd().args(["run", "--bundle"]).arg(bundle).arg(&id));
        if r.is_err() {
            self.delete(&id);
        }
        r
    }

    /// Start `RUNTIME run` in the foreground (it stays as the container's
    /// parent), its stdout piped.
    pub fn spawn(&self, bundle: &Path) -> std::io::Result<(Child, String)> {
        let id = fresh_id();
        let child = self
            .cmd()
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        Ok((child, id))
    }

    pub fn kill(&self, id: &str) {
        let _ = try_run(self.cmd().args(["kill", id, "KILL"]));
    }

    pub fn delete(&self, id: &str) {
        let _ = try_run(self.cmd().args(["delete", "-f", id]));
    }

    fn cmd(&self) -> Command {
        Command::new(&self.bin)
    }
}

/// podman with its own storage under the bench's scratch directory, runc
/// as its runtime (podman 4.3 and this host's crun disagree), and
/// nofile/nproc ulimits it is allowed to set here.
pub struct Podman {
    bin: PathBuf,
    root: PathBuf,
    runroot: PathBuf,
    ulimits: Vec<String>,
    pub image: String,
}

impl Podman {
    /// `sbx save` busybox to an OCI archive and `podman load` it; None
    /// (with one line) when podman is missing or that fails.
    pub fn prepare(sbx_root: &Path, work: &Path) -> Option<Podman> {
        let Some(bin) = find_in_path("podman") else {
            eprintln!("skipping podman: not installed");
            return None;
        };
        let archive = work.join("busybox-oci.tar");
        let mut save = super::sbx(sbx_root);
        save.args(["save", "-o"]).arg(&archive).arg("busybox");
        if let Err(e) = try_run(&mut save) {
            eprintln!("skipping podman: {e}");
            return None;
        }
        let podman = Podman {
            bin,
            root: work.join("podman/root"),
            runroot: work.join("podman/run"),
            ulimits: ulimits(),
            image: "docker.io/library/busybox:latest".into(),
        };
        let mut load = podman.cmd();
        load.arg("load").arg("-i").arg(&archive);
        let ok = try_run(&mut load).and_then(|()| podman.run_rm(&["true"]));
        match ok {
            Ok(()) => Some(podman),
            Err(e) => {
                eprintln!("skipping podman: {e}");
                podman.cleanup();
                None
            }
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .args(["--runtime", "runc", "--events-backend", "file"]);
        c
    }

    fn run_args(&self, c: &mut Command) {
        c.args(["run", "--pull", "never", "--network", "none"]);
        for u in &self.ulimits {
            c.args(["--ulimit", u]);
        }
    }

    /// `podman run --rm IMAGE ARGS`.
    pub fn run_rm(&self, args: &[&str]) -> Result<(), String> {
        let mut c = self.cmd();
        self.run_args(&mut c);
        c.arg("--rm").arg(&self.image).args(args);
        try_run(&mut c)
    }

    /// `podman run -d`: the container's name once it runs.
    pub fn run_detached(&self, args: &[&str], memory: Option<&str>) -> Result<String, String> {
        let name = fresh_id();
        let mut c = self.cmd();
        self.run_args(&mut c);
        c.args(["-d", "--name", &name]);
        if let Some(m) = memory {
            c.args(["--memory", m]);
        }
        c.arg(&self.image).args(args);
        try_run(&mut c)?;
        Ok(name)
    }

    /// The host pid of a running container's process.
    pub fn pid(&self, name: &str) -> Option<i32> {
        let out = self
            .cmd()
            .args(["inspect", "--format", "{{.State.Pid}}", name])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    pub fn remove(&self, name: &str) {
        let _ = try_run(self.cmd().args(["rm", "-f", "-t", "0", name]));
    }

    /// Unmount podman's storage (it stays mounted otherwise).
    pub fn cleanup(&self) {
        let _ = try_run(self.cmd().args(["system", "reset", "-f"]));
    }
}

/// `--ulimit` values for podman: the current nofile and nproc, at most 32768.
fn ulimits() -> Vec<String> {
    use nix::sys::resource::{getrlimit, Resource};
    let mut out = Vec::new();
    for (name, res) in [
        ("nofile", Resource::RLIMIT_NOFILE),
        ("nproc", Resource::RLIMIT_NPROC),
    ] {
        let (soft, hard) = getrlimit(res).unwrap_or((1024, 1024));
        let cap = |v: u64| v.min(32768);
        out.push(format!("{name}={}:{}", cap(soft), cap(hard)));
    }
    out
}

/// `qemu-system-x86_64 -M microvm` on sbx's kernel and command line, with
/// the minimal init instead of sbx's, configured as sbx's qemu engine
/// configures it.
pub struct QemuPeer {
    pub bin: PathBuf,
    pub accel: Accel,
    kernel: PathBuf,
    initramfs_reboot: PathBuf,
    initramfs_pause: PathBuf,
}

/// Times of one boot, from spawning QEMU.
#[derive(Debug, Clone, Copy)]
pub struct QemuBoot {
    /// The init wrote its marker on the serial console.
    pub init: Duration,
    /// QEMU exited (the init rebooted).
    pub exit: Duration,
}

impl QemuPeer {
    pub fn prepare(work: &Path) -> Option<QemuPeer> {
        let bin = match sbx_vmm::qemu::binary() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("skipping qemu microvm: {e}");
                return None;
            }
        };
        let kernel = match sbx_vmm::kernel::locate(None) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("skipping qemu microvm: {e}");
                return None;
            }
        };
        let (accel, _) = match engine::choose(Some(VmEngine::Qemu), HostKvm::detect()) {
            Ok((engine::Engine::Qemu(a), why)) => (a, why),
            _ => (Accel::Tcg, None),
        };
        let peer = (|| {
            Some(QemuPeer {
                bin,
                accel,
                kernel,
                initramfs_reboot: guest::tiny_initramfs(work, InitThen::Reboot).ok()?,
                initramfs_pause: guest::tiny_initramfs(work, InitThen::Pause).ok()?,
            })
        })()?;
        match peer.boot() {
            Ok(_) => Some(peer),
            Err(e) => {
                eprintln!("skipping qemu microvm: {e}");
                None
            }
        }
    }

    fn command(&self, then: InitThen, memory_mib: u64) -> Command {
        let mut cmdline = String::from("console=ttyS0 reboot=t panic=-1 rdinit=/init quiet");
        let mut c = Command::new(&self.bin);
        c.args(["-M", "microvm,acpi=off,x-option-roms=off", "-nodefaults"])
            .args(["-no-user-config", "-display", "none", "-no-reboot"])
            .args(["-m", &format!("{memory_mib}M"), "-smp", "1"]);
        match self.accel {
            Accel::Tcg => {
                c.args(["-accel", "tcg"]);
                cmdline.push_str(" noapictimer no_timer_check");
            }
            Accel::Kvm => {
                c.args(["-accel", "kvm", "-cpu", "host,-arch-capabilities"]);
            }
        }
        let initramfs = match then {
            InitThen::Reboot => &self.initramfs_reboot,
            InitThen::Pause => &self.initramfs_pause,
        };
        c.arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(initramfs)
            .args(["-append", &cmdline, "-serial", "stdio"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        c
    }

    /// Boot to the init and on to QEMU's exit.
    pub fn boot(&self) -> Result<QemuBoot, String> {
        let t0 = Instant::now();
        let mut child = self
            .command(InitThen::Reboot, sbx_vmm::DEFAULT_MEMORY_MIB)
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.bin.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let seen = wait_for_line(stdout, INIT_MARKER);
        let init = t0.elapsed();
        let status = child.wait().map_err(|e| e.to_string())?;
        let exit = t0.elapsed();
        if !seen || !status.success() {
            return Err(format!(
                "qemu microvm did not reach the init and reboot ({status})"
            ));
        }
        Ok(QemuBoot { init, exit })
    }

    /// Start an idle VM (the init pauses); returns once the init runs.
    pub fn spawn_idle(&self, memory_mib: u64) -> Result<Child, String> {
        let mut child = self
            .command(InitThen::Pause, memory_mib)
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.bin.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        if !wait_for_line(stdout, INIT_MARKER) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("qemu microvm did not reach the init".into());
        }
        Ok(child)
    }
}

/// Read lines until one contains `marker` (true) or the stream ends.
/// After the marker the rest is drained by a thread, so the writer never
/// blocks.
pub fn wait_for_line(stdout: ChildStdout, marker: &str) -> bool {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) if line.contains(marker) => break,
            Ok(_) => {}
        }
    }
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    true
}

/// `qemu-system-x86_64 -M microvm` booting one of the kvm engine's test
/// payloads (vmm/payloads/pvh.S) through its Xen PVH note: no firmware
/// tables, no option ROMs, only the serial port and `isa-debug-exit` on the
/// kvm engine's exit port. KVM as the kvm engine uses it (`-cpu host` less
/// arch-capabilities, which aborts on MSR 0x10a under PVM), TCG only where
/// QEMU cannot use KVM.
pub struct QemuPayloadPeer {
    pub bin: PathBuf,
    pub accel: Accel,
    payload: PathBuf,
    memory_mib: u64,
}

impl QemuPayloadPeer {
    /// The peer if QEMU runs `payload` to the expected line and exit; else
    /// one line on stderr and None.
    pub fn prepare(payload: &Path, memory_mib: u64) -> Option<QemuPayloadPeer> {
        let bin = match sbx_vmm::qemu::binary() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("skipping qemu microvm on the payload: {e}");
                return None;
            }
        };
        let mut last = String::new();
        for accel in [Accel::Kvm, Accel::Tcg] {
            let peer = QemuPayloadPeer {
                bin: bin.clone(),
                accel,
                payload: payload.to_owned(),
                memory_mib,
            };
            match peer.run() {
                Ok(_) => {
                    if accel == Accel::Tcg {
                        eprintln!("qemu microvm on the payload: KVM failed ({last}), using TCG");
                    }
                    return Some(peer);
                }
                Err(e) => last = e,
            }
        }
        eprintln!("skipping qemu microvm on the payload: {last}");
        None
    }

    /// `kvm` or `tcg`.
    pub fn accel_name(&self) -> &'static str {
        match self.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.args([
            "-M",
            "microvm,x-option-roms=off,isa-serial=on,rtc=off,pit=off,pic=off",
        ]);
        match self.accel {
            Accel::Kvm => c.args(["-accel", "kvm", "-cpu", "host,-arch-capabilities"]),
            Accel::Tcg => c.args(["-accel", "tcg"]),
        };
        c.args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-m", &format!("{}M", self.memory_mib), "-smp", "1"])
            .args(["-serial", "stdio"])
            .args(["-device", "isa-debug-exit,iobase=0x501,iosize=2"])
            .arg("-kernel")
            .arg(&self.payload);
        c
    }

    /// Spawn → exit of one QEMU on the payload. isa-debug-exit makes QEMU
    /// exit with (v << 1) | 1: 1 for the payload's 0.
    pub fn run(&self) -> Result<super::Exited, String> {
        let run = super::spawn_to_exit(&self.command())?;
        if run.status.code() != Some(1) || !run.stdout.contains(guest::PVH_LINE) {
            return Err(format!(
                "qemu microvm ({}) on {}: {}, stdout: {:?}",
                self.accel_name(),
                self.payload.display(),
                run.status,
                run.stdout
            ));
        }
        Ok(run)
    }
}
