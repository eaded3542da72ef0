//! `sbx run`: image config + flags → SandboxSpec → a backend → exit status.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sbx_shared::backend::{Backend, Sandbox, Stdio};
use sbx_shared::monitor::{self, Lifecycle, RestartPolicy};
use sbx_shared::paths::Root;
use sbx_shared::spec::{
    self, ImageInfo, Isolation, Limits, Process, Rootfs, SandboxSpec, VmEngine, VmOptions,
};
use sbx_shared::state::{Record, State, Status};
use sbx_shared::store::{Image, Store};
use sbx_shared::volumes::{usage, Volumes};

use crate::cli::{IsolationArg, RunArgs, VmEngineArg};

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn run(root: &Root, args: RunArgs) -> Result<u8> {
    let isolation = match args.isolation {
        IsolationArg::Container => Isolation::Container,
        IsolationArg::Vm => Isolation::Vm,
    };
    let limits = limits(&args)?;
    let rlimits = args
        .ulimit
        .iter()
        .map(|u| spec::parse_ulimit(u).map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()?;
    let timeout = match args.timeout {
        Some(t) if !(t.is_finite() && t > 0.0) => {
            bail!("invalid --timeout {t}: must be a positive number of seconds")
        }
        Some(t) => Some(Duration::from_secs_f64(t)),
        None => None,
    };
    let net_request = super::network::Request::from_args(&args, isolation)?;
    let flag_env = environment(&args)?;
    let restart = RestartPolicy::parse(&args.restart).map_err(anyhow::Error::msg)?;
    if restart != RestartPolicy::No && !args.detach {
        bail!("--restart needs -d: only a detached sandbox has a monitor to restart it");
    }
    if restart != RestartPolicy::No && args.rm {
        bail!("conflicting options: --restart and --rm");
    }
    let mount_requests = super::volume::requests(&args.volumes, &args.mounts, &args.tmpfs)?;

    let store = Store::open(root).context("opening the image store")?;
    let image = store.resolve(&args.image)?;
    let layers = store.rootfs(&image)?;
    // Published ports are bound now: a taken one fails before anything
    // is created.
    let bound = net_request.bind_ports(&image)?;

    let id = sbx_shared::ids::new_id();
    let process = process(&image, &args, flag_env, rlimits)?;
    let hostname = args
        .hostname
        .clone()
        .unwrap_or_else(|| sbx_shared::ids::short(&id).to_string());
    // Volumes are created here (a named one on first use, anonymous ones
    // for the image's VOLUMEs); bind sources and VM limits are checked.
    let image_volumes = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.volumes().clone())
        .unwrap_or_default();
    let mounts = Volumes::new(root).resolve(&mount_requests, &image_volumes, isolation)?;
    let state = State::new(root);
    let mut record = Record {
        id: id.clone(),
        name: args.name.clone(),
        image: ImageInfo {
            name: image.name.clone(),
            manifest: image.manifest_digest.to_string(),
            config: image.config_digest.to_string(),
        },
        isolation,
        command: process.args.clone(),
        created: chrono::Utc::now(),
        status: Status::Created,
        pid: None,
        pid_start: None,
        exit_code: None,
        finished: None,
        auto_remove: args.rm,
    };
    let dir = match state.create(&record) {
        Ok(dir) => dir,
        Err(e) => {
            super::volume::drop_anonymous(root, &mounts.used);
            return Err(e.into());
        }
    };
    if let Err(e) = usage::save(&dir, &mounts.used) {
        super::volume::drop_anonymous(root, &mounts.used);
        let _ = state.remove(&record);
        return Err(e.into());
    }
    // An address on each network, once the sandbox's directory exists.
    let (network_mode, networks) = match net_request.attach(root, &record, &hostname) {
        Ok(n) => n,
        Err(e) => {
            super::volume::drop_anonymous(root, &mounts.used);
            let _ = state.remove(&record);
            return Err(e);
        }
    };
    let mut process = process;
    process.env.push(format!("HOSTNAME={hostname}"));
    let spec = SandboxSpec {
        id,
        name: args.name.clone(),
        dir,
        image: record.image.clone(),
        rootfs: Rootfs {
            layers,
            read_only: args.read_only,
        },
        process,
        hostname,
        network: network_mode,
        limits,
        isolation,
        timeout,
        vm: VmOptions {
            engine: args.vm_engine.map(|e| match e {
                VmEngineArg::Kvm => VmEngine::Kvm,
                VmEngineArg::Qemu => VmEngine::Qemu,
            }),
            kernel: args.kernel.clone(),
        },
        mounts: mounts.mounts,
        networks,
        ports: bound.iter().map(|b| b.mapping).collect(),
    };

    if args.detach {
        let life = Lifecycle {
            restart,
            stop_signal: image
                .config
                .config()
                .as_ref()
                .and_then(|c| c.stop_signal().clone()),
            ..Lifecycle::default()
        };
        return run_detached(root, &spec, &state, record, life, bound);
    }
    let result = run_spec(root, &spec, &state, &mut record, bound);
    if args.rm || result.is_err() && record.status == Status::Created {
        sbx_shared::network::backend::release(root, &spec);
        let _ = usage::remove_anonymous(root, &spec.dir);
        let _ = state.remove(&record);
    }
    result
}

/// `run -d`: the sandbox under its own monitor; the id is printed once the
/// workload runs, and a start failure is this command's.
fn run_detached(
    root: &Root,
    spec: &SandboxSpec,
    state: &State,
    record: Record,
    life: Lifecycle,
    bound: Vec<sbx_shared::network::ports::Bound>,
) -> Result<u8> {
    let backend = super::network::backend(root, spec.isolation, bound);
    let started = monitor::lifecycle::save_spec(spec)
        .and_then(|()| monitor::detach(&*backend, spec, state, record.clone(), life));
    match started {
        Ok(_) => {
            println!("{}", spec.id);
            Ok(0)
        }
        Err(e) => {
            sbx_shared::network::backend::release(root, spec);
            let _ = usage::remove_anonymous(root, &spec.dir);
            let _ = state.remove(&record);
            Err(match e {
                monitor::MonitorError::Start(b) => b.into(),
                e => e.into(),
            })
        }
    }
}

fn run_spec(
    root: &Root,
    spec: &SandboxSpec,
    state: &State,
    record: &mut Record,
    bound: Vec<sbx_shared::network::ports::Bound>,
) -> Result<u8> {
    let backend: Box<dyn Backend> = super::network::backend(root, spec.isolation, bound);
    // Handlers go in before the workload starts, so a signal that arrives
    // while it starts is queued and forwarded rather than killing sbx. The
    // thread that forwards them starts only after the backend has cloned:
    // the clone must happen in a single-threaded process.
    let signals =
        signal_hook::iterator::Signals::new(FORWARDED).context("installing signal handlers")?;
    let mut sandbox = backend.start(spec, Stdio::Inherit)?;
    let io = sandbox.take_io();
    let sandbox: Arc<dyn Sandbox> = Arc::from(sandbox);

    record.status = Status::Running;
    record.pid = Some(sandbox.pid());
    record.pid_start = sbx_shared::state::proc_start_time(sandbox.pid());
    state.save(record)?;

    forward_signals(signals, &sandbox, io.tty.is_some());
    let timed_out = Arc::new(AtomicBool::new(false));
    if let Some(limit) = spec.timeout {
        let sb = Arc::clone(&sandbox);
        let flag = Arc::clone(&timed_out);
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            flag.store(true, Ordering::SeqCst);
            let _ = sb.signal(libc::SIGKILL);
        });
    }
    let tty_guard = match io.tty {
        Some(master) => Some(relay_tty(&sandbox, master, spec.process.stdin)?),
        None => None,
    };
    let status = sandbox.wait()?;
    drop(tty_guard);

    record.status = Status::Exited;
    record.exit_code = Some(status.code);
    record.finished = Some(chrono::Utc::now());
    record.pid = None;
    if !record.auto_remove {
        state.save(record)?;
    }
    if timed_out.load(Ordering::SeqCst) {
        eprintln!(
            "sbx: timeout: sandbox killed after {}s",
            spec.timeout.unwrap_or_default().as_secs_f64()
        );
    }
    Ok(status.code.clamp(0, 255) as u8)
}

fn limits(args: &RunArgs) -> Result<Limits> {
    let memory = match &args.memory {
        Some(m) => {
            let bytes = spec::parse_size(m).map_err(anyhow::Error::msg)?;
            if bytes < 6 << 20 {
                bail!("invalid --memory {m}: the minimum is 6m");
            }
            Some(bytes)
        }
        None => None,
    };
    if let Some(c) = args.cpus {
        let max = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as f64;
        if !(c.is_finite() && c > 0.0) {
            bail!("invalid --cpus {c}: must be a positive number");
        }
        if c > max {
            bail!("invalid --cpus {c}: this host has only {max} CPUs");
        }
    }
    if let Some(p) = args.pids_limit {
        if p == 0 || p < -1 {
            bail!("invalid --pids-limit {p}: must be positive, or -1 for unlimited");
        }
    }
    Ok(Limits {
        memory,
        cpus: args.cpus,
        pids: args.pids_limit.filter(|p| *p > 0),
    })
}

/// `--env-file` entries, then `-e`; `KEY` alone takes the host's value.
fn environment(args: &RunArgs) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut add = |entry: &str, origin: &str| -> Result<()> {
        let entry = entry.trim_start();
        match entry.split_once('=') {
            Some(("", _)) => {
                bail!("invalid environment variable {entry:?} in {origin}: empty name")
            }
            Some(_) => out.push(entry.to_string()),
            None if entry.is_empty() => bail!("invalid environment variable in {origin}: empty"),
            None => {
                if let Ok(v) = std::env::var(entry) {
                    out.push(format!("{entry}={v}"));
                }
            }
        }
        Ok(())
    };
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading --env-file {}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            add(line, &format!("{}:{}", file.display(), n + 1))?;
        }
    }
    for e in &args.env {
        add(e, "-e")?;
    }
    Ok(out)
}

/// The workload as Docker composes it: ENTRYPOINT + CMD, either replaced by
/// flags; env = image Env, then flags; cwd and user from flags or image.
fn process(
    image: &Image,
    args: &RunArgs,
    flag_env: Vec<String>,
    rlimits: Vec<spec::Rlimit>,
) -> Result<Process> {
    let config = image.config.config().clone().unwrap_or_default();
    let entrypoint: Vec<String> = match &args.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => config.entrypoint().clone().unwrap_or_default(),
    };
    // A new entrypoint drops the image's CMD, as in Docker.
    let cmd: Vec<String> = if !args.command.is_empty() {
        args.command.clone()
    } else if args.entrypoint.is_some() {
        Vec::new()
    } else {
        config.cmd().clone().unwrap_or_default()
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        bail!("no command specified: the image {} has no CMD or ENTRYPOINT; give one after the image name", image.name);
    }
    let mut env: Vec<String> = config.env().clone().unwrap_or_default();
    for e in flag_env {
        let key = e.split('=').next().unwrap_or_default().to_string();
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(e);
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    if args.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let cwd = args
        .workdir
        .clone()
        .or_else(|| config.working_dir().clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !Path::new(&cwd).is_absolute() {
        bail!("invalid working directory {cwd:?}: it must be an absolute path");
    }
    let user = args
        .user
        .clone()
        .or_else(|| config.user().clone())
        .unwrap_or_default();
    Ok(Process {
        args: argv,
        env,
        cwd,
        user,
        terminal: args.tty,
        stdin: args.interactive,
        rlimits,
    })
}

/// SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2 go to the workload; SIGWINCH
/// resizes its terminal.
pub(crate) const FORWARDED: [i32; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

pub(crate) fn forward_signals(
    mut signals: signal_hook::iterator::Signals,
    sandbox: &Arc<dyn Sandbox>,
    tty: bool,
) {
    let sb = Arc::clone(sandbox);
    if tty {
        resize_from_host(&*sb);
    }
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig == libc::SIGWINCH {
                if tty {
                    resize_from_host(&*sb);
                }
            } else {
                let _ = sb.signal(sig);
            }
        }
    });
}

fn resize_from_host(sandbox: &dyn Sandbox) {
    // SAFETY: TIOCGWINSZ writes into the winsize we own.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    if unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0 {
        let _ = sandbox.resize(ws.ws_row, ws.ws_col);
    }
}

/// Puts the caller's terminal back as it was.
pub(crate) struct RawMode(Option<nix::sys::termios::Termios>);

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

/// Copy between the caller's terminal and the workload's pty until the
/// workload closes it.
pub(crate) fn relay_tty(
    sandbox: &Arc<dyn Sandbox>,
    master: std::fs::File,
    stdin: bool,
) -> Result<RawMode> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::termios;
    let _ = sandbox;
    let saved = termios::tcgetattr(std::io::stdin()).ok();
    if let Some(t) = &saved {
        let mut raw = t.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(std::io::stdin(), termios::SetArg::TCSANOW, &raw);
    }
    let guard = RawMode(saved);
    let mut master_w = master.try_clone().context("duplicating the pty")?;
    let mut master_r = master;
    let mut stdin_open = stdin;
    let mut buf = [0u8; 8192];
    let mut out = std::io::stdout();
    loop {
        let stdin_fd = std::io::stdin();
        let mut fds = vec![PollFd::new(
            std::os::fd::AsFd::as_fd(&master_r),
            PollFlags::POLLIN,
        )];
        if stdin_open {
            fds.push(PollFd::new(
                std::os::fd::AsFd::as_fd(&stdin_fd),
                PollFlags::POLLIN,
            ));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => bail!("polling the terminal: {e}"),
        }
        let master_ready = fds[0].revents().unwrap_or(PollFlags::empty());
        let stdin_ready = fds
            .get(1)
            .and_then(|f| f.revents())
            .unwrap_or(PollFlags::empty());
        if !master_ready.is_empty() {
            match master_r.read(&mut buf) {
                Ok(0) | Err(_) => break, // EIO: the workload's side is closed.
                Ok(n) => {
                    let _ = out.write_all(&buf[..n]);
                    let _ = out.flush();
                }
            }
        }
        if !stdin_ready.is_empty() {
            // SAFETY: read(2) into our buffer from fd 0.
            let n = unsafe { libc::read(stdin_fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                stdin_open = false;
                // End of input: send the terminal's EOF character.
                let _ = master_w.write_all(&[4]);
            } else {
                let _ = master_w.write_all(&buf[..n as usize]);
            }
        }
    }
    Ok(guard)
}
