//! The Docker lifecycle verbs over sandbox records and their monitors:
//! ps, logs, stop, kill, start, restart, wait, rm, inspect, exec, system.
//!
//! Every ID argument is a full id, a unique prefix of one, or a name.

mod control;
mod exec;
mod inspect;
mod logs;
mod ps;
mod remove;

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use sbx_shared::backend::Backend;
use sbx_shared::monitor::lifecycle::{self, Lifecycle, Shown, View};
use sbx_shared::paths::Root;
use sbx_shared::spec::Isolation;
use sbx_shared::state::{Record, State};

pub use control::{kill, restart, start, stop, wait};
pub use exec::exec;
pub use inspect::inspect;
pub use logs::logs;
pub use ps::ps;
pub use remove::{df, prune, rm};

/// The backend, with networking around it (taps, port proxy, and the
/// addresses released at removal).
pub fn backend_for(root: &Root, isolation: Isolation) -> Box<dyn Backend> {
    crate::commands::network::backend(root, isolation, Vec::new())
}

/// A sandbox as the verbs see it: record, lifecycle, and the status those
/// and the live processes give.
pub struct Found {
    pub record: Record,
    pub life: Lifecycle,
    pub view: View,
}

impl Found {
    fn of(state: &State, record: Record) -> Found {
        let life = Lifecycle::load(&state.dir(&record.id));
        let view = lifecycle::view(&record, &life);
        Found { record, life, view }
    }

    pub fn running(&self) -> bool {
        matches!(self.view.status, Shown::Running | Shown::Restarting)
    }

    pub fn short(&self) -> &str {
        sbx_shared::ids::short(&self.record.id)
    }
}

/// Every sandbox, newest first.
pub fn all(state: &State) -> Result<Vec<Found>> {
    Ok(state
        .list()?
        .into_iter()
        .map(|r| Found::of(state, r))
        .collect())
}

/// The sandbox `arg` names: its name, its id, or a unique prefix of an id.
pub fn find(root: &Root, state: &State, arg: &str) -> Result<Found> {
    if arg.is_empty() {
        bail!("no such sandbox: an empty id");
    }
    if sbx_shared::state::valid_name(arg) {
        if let Ok(id) = std::fs::read_to_string(root.names().join(arg)) {
            if let Ok(r) = state.load(id.trim()) {
                return Ok(Found::of(state, r));
            }
        }
    }
    if arg.bytes().all(|b| b.is_ascii_hexdigit()) {
        let ids: Vec<String> = std::fs::read_dir(root.sandboxes())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|id| id.starts_with(arg))
                    .collect()
            })
            .unwrap_or_default();
        match ids.as_slice() {
            [id] => return Ok(Found::of(state, state.load(id)?)),
            [] => {}
            _ => bail!("{arg} matches {} sandboxes: give more of the id", ids.len()),
        }
    }
    bail!("no such sandbox: {arg}")
}

/// Wait up to `limit` for the monitor to be gone (it closes its socket and
/// finishes its records last), so what follows sees it ended.
pub fn await_monitor_exit(state: &State, id: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !Lifecycle::load(&state.dir(id)).monitor_alive() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Run `f` on each id; errors are printed as they come (one line each)
/// and make the whole command fail at the end, as Docker's verbs do.
pub fn each(ids: &[String], mut f: impl FnMut(&str) -> Result<()>) -> Result<u8> {
    let mut failed = 0;
    for id in ids {
        if let Err(e) = f(id) {
            eprintln!("sbx: {}", format!("{e:#}").replace('\n', " "));
            failed += 1;
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}
