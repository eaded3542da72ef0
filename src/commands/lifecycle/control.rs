//! `stop`, `kill`, `start`, `restart`, `wait`: requests to a sandbox's
//! monitor (or, for a foreground `sbx run` that has none, to its pid).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use sbx_shared::monitor::lifecycle::{self, Lifecycle};
use sbx_shared::monitor::protocol::{self, Request, Response};
use sbx_shared::monitor::{self, signals, MonitorError};
use sbx_shared::paths::Root;
use sbx_shared::state::State;

use super::{await_monitor_exit, backend_for, each, find, Found};
use crate::cli::StopArgs;

/// How long a verb waits for a monitor to finish after its workload ended.
const MONITOR_EXIT: Duration = Duration::from_secs(10);

fn check_time(t: f64) -> Result<()> {
    if !(t.is_finite() && t >= 0.0) {
        bail!("invalid --time {t}: must be a number of seconds, 0 or more");
    }
    Ok(())
}

pub fn stop(root: &Root, args: &StopArgs) -> Result<u8> {
    check_time(args.time)?;
    let state = State::new(root);
    each(&args.ids, |arg| {
        let f = find(root, &state, arg)?;
        stop_one(&state, &f, args.time).with_context(|| format!("stopping {arg}"))?;
        println!("{arg}");
        Ok(())
    })
}

/// Stop signal, then SIGKILL after `secs`; returns once the workload and
/// its monitor are gone.
fn stop_one(state: &State, f: &Found, secs: f64) -> Result<()> {
    if !f.running() {
        return Ok(());
    }
    let signal = signals::stop_signal(f.life.stop_signal.as_deref());
    let dir = state.dir(&f.record.id);
    let req = Request::Stop {
        signal,
        timeout_secs: secs,
    };
    match protocol::request(&dir, &req) {
        Ok(Response { error: Some(e), .. }) => bail!("{e}"),
        Ok(_) => {}
        Err(MonitorError::NoMonitor) => stop_pid(f, signal, secs)?,
        Err(e) => return Err(e.into()),
    }
    await_monitor_exit(state, &f.record.id, MONITOR_EXIT);
    Ok(())
}

/// A sandbox with no monitor (a foreground `sbx run`): signal its pid.
fn stop_pid(f: &Found, signal: i32, secs: f64) -> Result<()> {
    let (Some(pid), Some(start)) = (f.record.pid, f.record.pid_start) else {
        return Ok(());
    };
    let alive = || lifecycle::alive(pid, start);
    let send = |sig: i32| {
        if alive() {
            if let Ok(s) = Signal::try_from(sig) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), s);
            }
        }
    };
    send(signal);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    send(libc::SIGKILL);
    let deadline = Instant::now() + MONITOR_EXIT;
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub fn kill(root: &Root, signal: &str, ids: &[String]) -> Result<u8> {
    let signal = signals::parse(signal).map_err(anyhow::Error::msg)?;
    let state = State::new(root);
    each(ids, |arg| {
        let f = find(root, &state, arg)?;
        if !f.running() {
            bail!("cannot kill {arg}: sandbox {} is not running", f.short());
        }
        let dir = state.dir(&f.record.id);
        let req = Request::Signal { signal, stop: true };
        match protocol::request(&dir, &req) {
            Ok(Response { error: Some(e), .. }) => bail!("killing {arg}: {e}"),
            Ok(_) => {}
            Err(MonitorError::NoMonitor) => {
                if let (Some(pid), Some(start)) = (f.record.pid, f.record.pid_start) {
                    if lifecycle::alive(pid, start) {
                        let s = Signal::try_from(signal)?;
                        nix::sys::signal::kill(Pid::from_raw(pid), s)
                            .with_context(|| format!("killing {arg}"))?;
                    }
                }
            }
            Err(e) => return Err(anyhow::Error::from(e).context(format!("killing {arg}"))),
        }
        println!("{arg}");
        Ok(())
    })
}

pub fn start(root: &Root, ids: &[String]) -> Result<u8> {
    let state = State::new(root);
    each(ids, |arg| {
        let f = find(root, &state, arg)?;
        start_one(root, &state, f).with_context(|| format!("starting {arg}"))?;
        println!("{arg}");
        Ok(())
    })
}

/// A new monitor over the saved spec and the same upper dir.
fn start_one(root: &Root, state: &State, f: Found) -> Result<()> {
    if f.running() {
        return Ok(());
    }
    // A monitor finishing its last records must be gone before the next
    // one binds the socket.
    await_monitor_exit(state, &f.record.id, MONITOR_EXIT);
    let dir = state.dir(&f.record.id);
    let spec = lifecycle::load_spec(&dir)?;
    let backend = backend_for(root, spec.isolation);
    let life = Lifecycle {
        restart: f.life.restart,
        stop_signal: f.life.stop_signal.clone(),
        ..Lifecycle::default()
    };
    match monitor::detach(&*backend, &spec, state, f.record, life) {
        Ok(_) => Ok(()),
        Err(MonitorError::Start(b)) => Err(b.into()),
        Err(e) => Err(e.into()),
    }
}

pub fn restart(root: &Root, args: &StopArgs) -> Result<u8> {
    check_time(args.time)?;
    let state = State::new(root);
    each(&args.ids, |arg| {
        let f = find(root, &state, arg)?;
        stop_one(&state, &f, args.time).with_context(|| format!("restarting {arg}"))?;
        let f = find(root, &state, &f.record.id)?;
        start_one(root, &state, f).with_context(|| format!("restarting {arg}"))?;
        println!("{arg}");
        Ok(())
    })
}

pub fn wait(root: &Root, ids: &[String]) -> Result<u8> {
    let state = State::new(root);
    each(ids, |arg| {
        let f = find(root, &state, arg)?;
        let code = if f.running() {
            match protocol::request(&state.dir(&f.record.id), &Request::Wait) {
                Ok(Response {
                    exit_code: Some(c), ..
                }) => c,
                Ok(Response { error: Some(e), .. }) => bail!("waiting for {arg}: {e}"),
                // No monitor (died, or a foreground run): poll the record.
                _ => wait_record(root, &state, &f.record.id)?,
            }
        } else {
            f.view.exit_code.unwrap_or(0)
        };
        println!("{code}");
        Ok(())
    })
}

fn wait_record(root: &Root, state: &State, id: &str) -> Result<i32> {
    loop {
        let f = find(root, state, id)?;
        if !f.running() {
            return Ok(f.view.exit_code.unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
