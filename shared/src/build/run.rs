//! One RUN step through the backend: a throwaway sandbox over the stage's
//! layers (network none), its output streamed to ours, its filesystem
//! changes taken with [`crate::backend::Sandbox::diff`], then removed.

use std::fs::File;
use std::io::{self, Seek, Write};
use std::path::PathBuf;

use crate::backend::{Backend, BackendError, Stdio};
use crate::spec::{ImageInfo, Isolation, Limits, NetworkMode, Process, Rootfs, SandboxSpec};
use crate::state::{Record, State, Status};
use crate::store::Store;

/// What a RUN step runs, and in what.
pub struct RunStep<'a> {
    pub layers: Vec<PathBuf>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub isolation: Isolation,
    pub backend: &'a dyn Backend,
}

pub enum RunError {
    /// The command ran and failed.
    Exit(i32),
    Backend(BackendError),
    Other(String),
}

impl From<BackendError> for RunError {
    fn from(e: BackendError) -> Self {
        RunError::Backend(e)
    }
}

/// Removes the step's sandbox directory on every path out.
struct Cleanup<'a> {
    state: State,
    record: &'a Record,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.state.remove(self.record);
    }
}

/// Run the step; returns the layer it made (a temp file holding an OCI
/// layer tar), or None when it changed nothing.
pub fn run(store: &Store, step: RunStep<'_>) -> Result<Option<File>, RunError> {
    let root = store.root();
    let id = crate::ids::new_id();
    let image = ImageInfo {
        name: "sbx-build".into(),
        manifest: String::new(),
        config: String::new(),
    };
    let record = Record {
        id: id.clone(),
        name: None,
        image: image.clone(),
        isolation: step.isolation,
        command: step.args.clone(),
        created: chrono::Utc::now(),
        status: Status::Created,
        pid: None,
        pid_start: None,
        exit_code: None,
        finished: None,
        auto_remove: true,
    };
    let state = State::new(root);
    let dir = state
        .create(&record)
        .map_err(|e| RunError::Other(format!("creating the step's sandbox: {e}")))?;
    let _cleanup = Cleanup {
        state: State::new(root),
        record: &record,
    };
    // Built through serde so that spec fields added later with defaults
    // (the VM options) need no change here.
    let spec: SandboxSpec = serde_json::from_value(serde_json::json!({
        "id": id,
        "name": null,
        "dir": dir,
        "image": image,
        "rootfs": Rootfs { layers: step.layers, read_only: false },
        "process": Process {
            args: step.args,
            env: step.env,
            cwd: step.cwd,
            user: step.user,
            terminal: false,
            stdin: false,
            rlimits: Vec::new(),
        },
        "hostname": crate::ids::short(&id),
        "network": NetworkMode::None,
        "limits": Limits::default(),
        "isolation": step.isolation,
        "timeout": null,
    }))
    .map_err(|e| RunError::Other(format!("making the step's sandbox spec: {e}")))?;
    let mut sandbox = step.backend.start(&spec, Stdio::Piped)?;
    let io = sandbox.take_io();
    let relays: Vec<_> = [io.stdout.map(|f| (f, false)), io.stderr.map(|f| (f, true))]
        .into_iter()
        .flatten()
        .map(|(mut f, err)| {
            std::thread::spawn(move || {
                let _ = if err {
                    io::copy(&mut f, &mut io::stderr())
                } else {
                    io::copy(&mut f, &mut io::stdout())
                };
            })
        })
        .collect();
    let status = sandbox.wait()?;
    for r in relays {
        let _ = r.join();
    }
    if status.code != 0 {
        return Err(RunError::Exit(status.code));
    }
    let tmp = root.tmp();
    std::fs::create_dir_all(&tmp)
        .map_err(|e| RunError::Other(format!("create {}: {e}", tmp.display())))?;
    let mut file = tempfile::tempfile_in(&tmp)
        .map_err(|e| RunError::Other(format!("create a temp file in {}: {e}", tmp.display())))?;
    sandbox.diff(&mut file)?;
    file.flush()
        .and_then(|_| file.rewind())
        .map_err(|e| RunError::Other(format!("write the step's layer: {e}")))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    // An archive with no entries is its two 512-byte end blocks.
    Ok((len > 1024).then_some(file))
}
