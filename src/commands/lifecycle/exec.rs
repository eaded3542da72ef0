//! `sbx exec`: another process in a running sandbox, through
//! [`Backend::exec`](sbx_shared::backend::Backend::exec), relayed like a
//! foreground `sbx run` (signals, terminal) and ending with its exit code.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use sbx_shared::backend::{Sandbox, SandboxRef, Stdio};
use sbx_shared::monitor::lifecycle;
use sbx_shared::paths::Root;
use sbx_shared::spec::Process;
use sbx_shared::state::State;

use super::{backend_for, find};
use crate::cli::ExecArgs;
use crate::commands::run::{forward_signals, relay_tty, FORWARDED};

pub fn exec(root: &Root, args: &ExecArgs) -> Result<u8> {
    let state = State::new(root);
    let f = find(root, &state, &args.id)?;
    if !f.running() {
        bail!(
            "cannot exec in {}: sandbox {} is not running (sbx start it first)",
            args.id,
            f.short()
        );
    }
    let (Some(pid), pid_start) = (f.record.pid, f.record.pid_start) else {
        bail!("cannot exec in {}: its record has no pid", args.id);
    };
    let spec = lifecycle::load_spec(&state.dir(&f.record.id)).with_context(|| {
        format!(
            "cannot exec in {}: it has no saved spec (only detached sandboxes do)",
            args.id
        )
    })?;
    let process = process(&spec.process, args)?;
    let backend = backend_for(root, spec.isolation);
    // As in `run`: handlers first, so a signal during the start is queued;
    // the forwarding thread only after the backend has cloned.
    let signals =
        signal_hook::iterator::Signals::new(FORWARDED).context("installing signal handlers")?;
    let target = SandboxRef {
        spec: &spec,
        pid,
        pid_start,
    };
    let mut sandbox = backend.exec(&target, &process, Stdio::Inherit)?;
    let io = sandbox.take_io();
    let sandbox: Arc<dyn Sandbox> = Arc::from(sandbox);
    forward_signals(signals, &sandbox, io.tty.is_some());
    let tty_guard = match io.tty {
        Some(master) => Some(relay_tty(&sandbox, master, process.stdin)?),
        None => None,
    };
    let status = sandbox.wait()?;
    drop(tty_guard);
    Ok(status.code.clamp(0, 255) as u8)
}

/// The sandbox's own process settings, with the flags on top.
fn process(base: &Process, args: &ExecArgs) -> Result<Process> {
    let mut env = base.env.clone();
    for e in &args.env {
        let entry = match e.split_once('=') {
            Some(("", _)) => bail!("invalid environment variable {e:?}: empty name"),
            Some(_) => e.clone(),
            None => match std::env::var(e) {
                Ok(v) => format!("{e}={v}"),
                Err(_) => continue,
            },
        };
        let key = entry.split('=').next().unwrap_or_default().to_string();
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(entry);
    }
    if args.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let cwd = args.workdir.clone().unwrap_or_else(|| base.cwd.clone());
    if !cwd.starts_with('/') {
        bail!("invalid working directory {cwd:?}: it must be an absolute path");
    }
    Ok(Process {
        args: args.command.clone(),
        env,
        cwd,
        user: args.user.clone().unwrap_or_else(|| base.user.clone()),
        terminal: args.tty,
        stdin: args.interactive,
        rlimits: base.rlimits.clone(),
    })
}
