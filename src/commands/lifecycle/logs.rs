//! `sbx logs`: the monitor's log of a sandbox, stdout to stdout and stderr
//! to stderr; `-f` follows until the sandbox (and its monitor) ends.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sbx_shared::logs::{self, Entry, Stream};
use sbx_shared::monitor::lifecycle::Lifecycle;
use sbx_shared::paths::Root;
use sbx_shared::state::State;

use super::find;
use crate::cli::LogsArgs;

pub fn logs(root: &Root, args: &LogsArgs) -> Result<u8> {
    let tail = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(
            n.parse::<usize>()
                .with_context(|| format!("invalid --tail {n:?}: a number of lines or \"all\""))?,
        ),
    };
    let state = State::new(root);
    let f = find(root, &state, &args.id)?;
    let dir = state.dir(&f.record.id);
    let path = logs::path(&dir);
    let (entries, mut offset) =
        logs::read_from(&path, 0).with_context(|| format!("reading {}", path.display()))?;
    print_entries(&logs::tail(entries, tail), args.timestamps)?;
    if !args.follow {
        return Ok(0);
    }
    loop {
        // Whether it was alive before this read: its last words are read
        // after it ended, and none are missed.
        let alive = Lifecycle::load(&dir).monitor_alive();
        let (entries, next) = match logs::read_from(&path, offset) {
            Ok(r) => r,
            // Removed meanwhile (`rm -f`, an `--rm` sandbox): the end.
            Err(_) => return Ok(0),
        };
        offset = next;
        print_entries(&entries, args.timestamps)?;
        if !alive {
            return Ok(0);
        }
        if !dir.exists() {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn print_entries(entries: &[Entry], timestamps: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for e in entries {
        let w: &mut dyn Write = match e.stream {
            Stream::Stdout => &mut out,
            Stream::Stderr => &mut err,
        };
        let written = if timestamps {
            let t = e.time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            write!(w, "{t} {}", e.log)
        } else {
            w.write_all(e.log.as_bytes())
        };
        if let Err(e) = written {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            bail!("writing the log: {e}");
        }
    }
    let _ = out.flush();
    let _ = err.flush();
    Ok(())
}
