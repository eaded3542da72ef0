//! Running a parsed Dockerfile: the stages the target needs, in order, each
//! step looked up in the cache first. Filesystem steps (RUN, COPY, ADD, a
//! WORKDIR that creates its directory) make one layer each; the others
//! change only the config and the history.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Seek, Write};
use std::path::PathBuf;

use oci_spec::image::{Descriptor, MediaType};
use serde_json::{json, Value};

use super::cache::{self, Cache, Record};
use super::context::Ignore;
use super::copy::{self, Request, Source};
use super::dockerfile::{Cmd, Dockerfile, Healthcheck, Op, Stage, Step};
use super::run::{self, RunError, RunStep};
use super::view::{clean, View};
use super::words::{self, Vars};
use super::BuildError;
use crate::backend::Backend;
use crate::digest::Digest;
use crate::reference::Reference;
use crate::spec::Isolation;
use crate::store::{layers, Image, Store};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct Options {
    /// The Dockerfile, and the name to show in `file:line` messages.
    pub dockerfile: PathBuf,
    pub dockerfile_name: String,
    pub context: PathBuf,
    /// `-t`: names for the result (none: only its id).
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub isolation: Isolation,
}

/// A stage's image as it is being built.
#[derive(Debug, Clone, Default)]
struct State {
    layers: Vec<Descriptor>,
    diff_ids: Vec<Digest>,
    env: Vec<(String, String)>,
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    workdir: String,
    user: String,
    ports: BTreeSet<String>,
    volumes: BTreeSet<String>,
    labels: BTreeMap<String, String>,
    stop_signal: Option<String>,
    healthcheck: Option<Value>,
    shell: Option<Vec<String>>,
    author: Option<String>,
    history: Vec<Value>,
    created: String,
    /// The cache key of the last step.
    key: String,
    /// ARGs declared in this stage, with their values.
    args: BTreeMap<String, String>,
    /// CMD was set in this stage (so a later ENTRYPOINT keeps it).
    cmd_set: bool,
}

impl State {
    fn vars(&self) -> Vars {
        let mut v: Vars = self.args.clone();
        v.extend(self.env.iter().cloned());
        v
    }

    fn set_env(&mut self, k: String, v: String) {
        match self.env.iter_mut().find(|(x, _)| *x == k) {
            Some(e) => e.1 = v,
            None => self.env.push((k, v)),
        }
    }

    fn shell(&self) -> Vec<String> {
        self.shell
            .clone()
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn argv(&self, cmd: &Cmd) -> Vec<String> {
        match cmd {
            Cmd::Exec(v) => v.clone(),
            Cmd::Shell(s) => {
                let mut v = self.shell();
                v.push(s.clone());
                v
            }
        }
    }
}

struct Builder<'a> {
    store: &'a Store,
    backend: &'a dyn Backend,
    opts: &'a Options,
    df: Dockerfile,
    cache: Cache,
    ignore: Ignore,
    global: Vars,
    log: &'a mut dyn Write,
}

/// Build the image; progress lines go to `log`, RUN output to our own
/// stdout and stderr.
pub fn build(
    store: &Store,
    backend: &dyn Backend,
    opts: &Options,
    log: &mut dyn Write,
) -> Result<Image, BuildError> {
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|source| BuildError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let text = read(&opts.dockerfile)?;
    let df = Dockerfile::parse(&opts.dockerfile_name, &text)?;
    for t in &opts.tags {
        Reference::parse(t).map_err(|e| BuildError::Other(format!("invalid tag: {e}")))?;
    }
    if !opts.context.is_dir() {
        return Err(BuildError::Other(format!(
            "build context {} is not a directory",
            opts.context.display()
        )));
    }
    let ignore = match std::fs::read_to_string(opts.context.join(".dockerignore")) {
        Ok(t) => Ignore::parse(&t),
        Err(_) => Ignore::default(),
    };
    let mut b = Builder {
        store,
        backend,
        opts,
        df,
        cache: Cache::new(store.root()),
        ignore,
        global: Vars::new(),
        log,
    };
    b.global_args()?;
    let target = match &opts.target {
        Some(t) => {
            b.df.stage_index(t)
                .ok_or_else(|| BuildError::Other(format!("target stage {t:?} not found")))?
        }
        None => b.df.stages.len() - 1,
    };
    let needed = b.needed(target);
    let _writing = store.writing()?;
    let mut done: Vec<Option<State>> = vec![None; b.df.stages.len()];
    for i in needed {
        let state = b.stage(i, &done)?;
        done[i] = Some(state);
    }
    let state = done[target]
        .take()
        .ok_or_else(|| BuildError::Other("the target stage was not built".into()))?;
    b.commit(&state)
}

impl Builder<'_> {
    fn say(&mut self, line: &str) {
        let _ = writeln!(self.log, "{line}");
        let _ = self.log.flush();
    }

    fn step_err(&self, line: usize, message: impl Into<String>) -> BuildError {
        BuildError::Step {
            file: self.df.file.clone(),
            line,
            message: message.into(),
        }
    }

    /// ARGs before the first FROM: their values (defaults or --build-arg).
    fn global_args(&mut self) -> Result<(), BuildError> {
        for step in self.df.global_args.clone() {
            let Op::Arg(raw) = &step.op else {
                return Err(self.step_err(step.line, "only ARG may come before the first FROM"));
            };
            let pairs = words::pairs(raw, &self.global, self.df.escape, false)
                .map_err(|e| self.step_err(step.line, e))?;
            for (k, v) in pairs {
                let value = self
                    .opts
                    .build_args
                    .get(&k)
                    .cloned()
                    .or(v)
                    .unwrap_or_default();
                self.global.insert(k, value);
            }
        }
        Ok(())
    }

    /// The stages `target` depends on (FROM and COPY --from), itself last.
    fn needed(&self, target: usize) -> Vec<usize> {
        let mut set = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if !set.insert(i) {
                continue;
            }
            let stage = &self.df.stages[i];
            let base = words::word(&stage.base, &self.global, self.df.escape).unwrap_or_default();
            let mut refs = vec![base];
            for s in &stage.steps {
                if let Op::Copy(c) = &s.op {
                    refs.extend(c.from.clone());
                }
            }
            for r in refs {
                if let Some(j) = self.df.stage_index(&r).filter(|j| *j < i) {
                    todo.push(j);
                }
            }
        }
        set.into_iter().collect()
    }

    fn stage(&mut self, index: usize, done: &[Option<State>]) -> Result<State, BuildError> {
        let stage: Stage = self.df.stages[index].clone();
        let total = stage.steps.len() + 1;
        let prefix = match &stage.name {
            Some(n) => format!("{n} "),
            None if self.df.stages.len() > 1 => format!("stage-{index} "),
            None => String::new(),
        };
        let base = words::word(&stage.base, &self.global, self.df.escape)
            .map_err(|e| self.step_err(stage.line, e))?;
        let mut state = match self.df.stage_index(&base).filter(|j| *j < index) {
            Some(j) => {
                let mut s = done[j].clone().ok_or_else(|| {
                    self.step_err(stage.line, format!("stage {base} was not built"))
                })?;
                s.args.clear();
                s.cmd_set = false;
                s
            }
            None if base.eq_ignore_ascii_case("scratch") => State {
                key: cache::key("scratch", &[]),
                ..State::default()
            },
            None => {
                let image = self.store.resolve(&base).map_err(|e| {
                    self.step_err(
                        stage.line,
                        format!("FROM {base}: {e} (sbx builds from local images: import, load or pull it first)"),
                    )
                })?;
                self.base_image(&image)?
            }
        };
        self.say(&format!("=> [{prefix}1/{total}] {}", stage.text));
        for (n, step) in stage.steps.iter().enumerate() {
            let label = format!("[{prefix}{}/{total}] {}", n + 2, step.text);
            self.step(&mut state, step, &label, done)?;
        }
        Ok(state)
    }

    fn base_image(&self, image: &Image) -> Result<State, BuildError> {
        let c = image.config.config().clone().unwrap_or_default();
        let raw: Value = self
            .store
            .blobs()
            .read_verified(&image.config_digest, "an image config")
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let extra = |k: &str| raw.get("config").and_then(|c| c.get(k)).cloned();
        Ok(State {
            layers: self.store.layer_descriptors(image)?,
            diff_ids: image.diff_ids.clone(),
            env: c
                .env()
                .clone()
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    let (k, v) = e.split_once('=').unwrap_or((e, ""));
                    (k.to_string(), v.to_string())
                })
                .collect(),
            cmd: c.cmd().clone(),
            entrypoint: c.entrypoint().clone(),
            workdir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
            ports: c
                .exposed_ports()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            volumes: c
                .volumes()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
            stop_signal: c.stop_signal().clone(),
            healthcheck: extra("Healthcheck"),
            shell: extra("Shell").and_then(|s| serde_json::from_value(s).ok()),
            author: None,
            history: raw
                .get("history")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            created: image.config.created().clone().unwrap_or_default(),
            key: cache::key("image", &[image.config_digest.hex()]),
            args: BTreeMap::new(),
            cmd_set: false,
        })
    }

    fn layer_dirs(&self, state: &State) -> Result<Vec<PathBuf>, BuildError> {
        state
            .layers
            .iter()
            .zip(&state.diff_ids)
            .map(|(desc, diff_id)| {
                let blob: Digest =
                    desc.digest().to_string().parse().map_err(
                        |e: crate::digest::InvalidDigest| BuildError::Other(e.to_string()),
                    )?;
                Ok(layers::ensure_unpacked(
                    self.store.root(),
                    self.store.blobs(),
                    &blob,
                    diff_id,
                )?)
            })
            .collect()
    }

    fn step(
        &mut self,
        state: &mut State,
        step: &Step,
        label: &str,
        done: &[Option<State>],
    ) -> Result<(), BuildError> {
        let esc = self.df.escape;
        let vars = state.vars();
        let line = step.line;
        let fail = |b: &Self, e: String| b.step_err(line, e);
        // The material every step's key has: the instruction and the build
        // args in scope.
        let args: Vec<String> = state.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let args = args.join("\n");
        match &step.op {
            Op::Arg(raw) => {
                let pairs = words::pairs(raw, &vars, esc, false).map_err(|e| fail(self, e))?;
                for (k, v) in pairs {
                    let value = self
                        .opts
                        .build_args
                        .get(&k)
                        .cloned()
                        .or(v)
                        .or_else(|| self.global.get(&k).cloned())
                        .unwrap_or_default();
                    state.args.insert(k, value);
                }
                self.say(&format!("=> {label}"));
                return Ok(());
            }
            Op::Run(..) | Op::Copy(_) | Op::Workdir(_) => {}
            op => {
                self.config_step(state, op, &vars)
                    .map_err(|e| fail(self, e))?;
            }
        }
        // Filesystem steps prepare what they would write; the key covers it.
        let mut extra = String::new();
        let mut plan = None;
        let mut run_argv = None;
        let mut mkdir = None;
        match &step.op {
            Op::Run(cmd, docs) => {
                let argv = match (cmd, docs.first()) {
                    (Cmd::Shell(s), Some(doc)) if s.trim_start().starts_with("<<") => {
                        let mut v = state.shell();
                        v.push(doc.clone());
                        v
                    }
                    _ => state.argv(cmd),
                };
                extra = serde_json::to_string(&argv).unwrap_or_default();
                run_argv = Some(argv);
            }
            Op::Copy(c) => {
                let p = self
                    .copy_plan(state, c, &vars, done)
                    .map_err(|e| fail(self, e))?;
                extra = p
                    .content_hash()
                    .map_err(|e| fail(self, format!("reading the sources: {e}")))?;
                plan = Some(p);
            }
            Op::Workdir(raw) => {
                let w = words::word(raw, &vars, esc).map_err(|e| fail(self, e))?;
                let abs = if w.starts_with('/') {
                    w
                } else {
                    format!("{}/{w}", state.workdir)
                };
                state.workdir = format!("/{}", clean(&abs));
                let view = View::new(&self.layer_dirs(state)?);
                if view
                    .resolve(&state.workdir, true)
                    .and_then(|p| view.lstat(&p))
                    .is_none()
                {
                    mkdir = Some(clean(&state.workdir));
                }
                extra = state.workdir.clone();
            }
            _ => {}
        }
        let key = cache::key(&state.key, &[&step.text, &args, &extra]);
        let hit = if self.opts.no_cache {
            None
        } else {
            self.cache.get(&key).filter(|r| {
                r.layer
                    .as_ref()
                    .is_none_or(|(d, _)| self.store.blobs().exists(d))
            })
        };
        let record = match hit {
            Some(r) => {
                self.say(&format!("=> CACHED {label}"));
                r
            }
            None => {
                self.say(&format!("=> {label}"));
                let layer = if let Some(argv) = run_argv {
                    self.run(state, argv, line)?
                } else if let Some(p) = plan {
                    self.put_layer(|f| p.write(f), line)?
                } else if let Some(dir) = mkdir {
                    self.put_layer(|f| mkdir_layer(&dir, f), line)?
                } else {
                    None
                };
                let r = Record {
                    layer,
                    created: now(),
                };
                self.cache.put(&key, &r)?;
                r
            }
        };
        let mut h = json!({
            "created": record.created,
            "created_by": step.text,
            "comment": "sbx build",
        });
        match &record.layer {
            Some((digest, size)) => {
                let d = crate::store::index::oci_digest(digest)?;
                state
                    .layers
                    .push(Descriptor::new(MediaType::ImageLayer, *size, d));
                state.diff_ids.push(digest.clone());
            }
            None => h["empty_layer"] = json!(true),
        }
        state.history.push(h);
        state.created = record.created;
        state.key = key;
        Ok(())
    }

    fn config_step(&self, state: &mut State, op: &Op, vars: &Vars) -> Result<(), String> {
        let esc = self.df.escape;
        match op {
            Op::Env(raw) => {
                for (k, v) in words::pairs(raw, vars, esc, true)? {
                    let v = v.ok_or_else(|| format!("ENV {k} needs a value"))?;
                    state.set_env(k, v);
                }
            }
            Op::Label(raw) => {
                for (k, v) in words::pairs(raw, vars, esc, true)? {
                    state.labels.insert(k, v.unwrap_or_default());
                }
            }
            Op::User(raw) => state.user = words::word(raw, vars, esc)?,
            Op::Expose(list) => {
                for p in list {
                    for w in words::words(p, vars, esc)? {
                        let (port, proto) = w.split_once('/').unwrap_or((&w, "tcp"));
                        let ok = port.split('-').all(|n| n.parse::<u16>().is_ok());
                        if !ok || !["tcp", "udp", "sctp"].contains(&proto) {
                            return Err(format!(
                                "EXPOSE {w}: invalid port (want PORT[/tcp|udp|sctp])"
                            ));
                        }
                        state.ports.insert(format!("{port}/{proto}"));
                    }
                }
            }
            Op::Cmd(c) => {
                state.cmd = Some(state.argv(c));
                state.cmd_set = true;
            }
            Op::Entrypoint(c) => {
                state.entrypoint = Some(state.argv(c));
                if !state.cmd_set {
                    state.cmd = None;
                }
            }
            Op::Volume(list) => {
                for v in list {
                    state.volumes.extend(words::words(v, vars, esc)?);
                }
            }
            Op::Shell(v) => state.shell = Some(v.clone()),
            Op::Stopsignal(raw) => state.stop_signal = Some(words::word(raw, vars, esc)?),
            Op::Healthcheck(h) => state.healthcheck = Some(healthcheck(state, h)?),
            Op::Maintainer(m) => state.author = Some(m.clone()),
            _ => {}
        }
        Ok(())
    }

    fn copy_plan(
        &self,
        state: &State,
        c: &super::dockerfile::CopyOp,
        vars: &Vars,
        done: &[Option<State>],
    ) -> Result<copy::Plan, String> {
        let esc = self.df.escape;
        let sources = c
            .sources
            .iter()
            .map(|s| words::word(s, vars, esc))
            .collect::<Result<Vec<_>, _>>()?;
        let mut dest = words::word(&c.dest, vars, esc)?;
        if !dest.starts_with('/') {
            let dir = if state.workdir.is_empty() {
                "/"
            } else {
                &state.workdir
            };
            dest = format!("{}/{dest}", dir.trim_end_matches('/'));
        }
        let image = View::new(&self.layer_dirs(state).map_err(|e| e.to_string())?);
        let chown = match &c.chown {
            Some(spec) => Some(owner(&image, &words::word(spec, vars, esc)?)?),
            None => None,
        };
        let chmod = match &c.chmod {
            Some(m) => Some(
                u32::from_str_radix(m, 8).map_err(|_| format!("--chmod={m}: not an octal mode"))?,
            ),
            None => None,
        };
        let req = Request {
            add: c.add,
            sources: &sources,
            dest: &dest,
            chown,
            chmod,
        };
        match &c.from {
            None => {
                let view = View::new(std::slice::from_ref(&self.opts.context));
                let src = Source {
                    view: &view,
                    ignore: Some(&self.ignore),
                    keep_owner: false,
                };
                copy::plan(&src, &image, &req)
            }
            Some(from) => {
                let from = words::word(from, &self.global, esc)?;
                let dirs = match self.df.stage_index(&from) {
                    Some(j) => {
                        let s = done.get(j).and_then(Option::as_ref).ok_or_else(|| {
                            format!("--from={from}: that stage comes later or was not built")
                        })?;
                        self.layer_dirs(s).map_err(|e| e.to_string())?
                    }
                    None => {
                        let img = self
                            .store
                            .resolve(&from)
                            .map_err(|e| format!("--from={from}: {e}"))?;
                        self.store.rootfs(&img).map_err(|e| e.to_string())?
                    }
                };
                let view = View::new(&dirs);
                let src = Source {
                    view: &view,
                    ignore: None,
                    keep_owner: true,
                };
                copy::plan(&src, &image, &req)
            }
        }
    }

    fn run(
        &mut self,
        state: &State,
        argv: Vec<String>,
        line: usize,
    ) -> Result<Option<(Digest, u64)>, BuildError> {
        let mut env: Vec<String> = Vec::new();
        for (k, v) in &state.args {
            if !state.env.iter().any(|(e, _)| e == k) {
                env.push(format!("{k}={v}"));
            }
        }
        env.extend(state.env.iter().map(|(k, v)| format!("{k}={v}")));
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        let step = RunStep {
            layers: self.layer_dirs(state)?,
            args: argv.clone(),
            env,
            cwd: if state.workdir.is_empty() {
                "/".into()
            } else {
                state.workdir.clone()
            },
            user: state.user.clone(),
            isolation: self.opts.isolation,
            backend: self.backend,
        };
        let shown = argv.join(" ");
        let file = match run::run(self.store, step) {
            Ok(f) => f,
            Err(RunError::Exit(code)) => {
                return Err(self.step_err(line, format!("RUN {shown}: exit code {code}")))
            }
            Err(RunError::Backend(e)) => {
                return Err(self.step_err(
                    line,
                    format!("RUN under --isolation={}: {e}", self.opts.isolation),
                ))
            }
            Err(RunError::Other(e)) => return Err(self.step_err(line, e)),
        };
        match file {
            Some(mut f) => Ok(Some(self.store.put_layer(&mut f)?)),
            None => Ok(None),
        }
    }

    /// Write a layer with `write` into a temp file and store it.
    fn put_layer(
        &self,
        write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
        line: usize,
    ) -> Result<Option<(Digest, u64)>, BuildError> {
        let tmp = self.store.root().tmp();
        let io = |e: std::io::Error| self.step_err(line, format!("writing the layer: {e}"));
        std::fs::create_dir_all(&tmp).map_err(io)?;
        let mut f = tempfile::tempfile_in(&tmp).map_err(io)?;
        write(&mut f).map_err(io)?;
        f.rewind().map_err(io)?;
        Ok(Some(self.store.put_layer(&mut f)?))
    }

    /// Write the final config and manifest and name the image.
    fn commit(&mut self, s: &State) -> Result<Image, BuildError> {
        let mut config = serde_json::Map::new();
        let mut put = |k: &str, v: Value| {
            config.insert(k.to_string(), v);
        };
        if !s.user.is_empty() {
            put("User", json!(s.user));
        }
        if !s.ports.is_empty() {
            put(
                "ExposedPorts",
                Value::Object(s.ports.iter().map(|p| (p.clone(), json!({}))).collect()),
            );
        }
        let env: Vec<String> = s.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if !env.is_empty() {
            put("Env", json!(env));
        }
        if let Some(e) = &s.entrypoint {
            put("Entrypoint", json!(e));
        }
        if let Some(c) = &s.cmd {
            put("Cmd", json!(c));
        }
        if !s.volumes.is_empty() {
            put(
                "Volumes",
                Value::Object(s.volumes.iter().map(|p| (p.clone(), json!({}))).collect()),
            );
        }
        if !s.workdir.is_empty() {
            put("WorkingDir", json!(s.workdir));
        }
        if !s.labels.is_empty() {
            put("Labels", json!(s.labels));
        }
        if let Some(sig) = &s.stop_signal {
            put("StopSignal", json!(sig));
        }
        if let Some(h) = &s.healthcheck {
            put("Healthcheck", h.clone());
        }
        if let Some(sh) = &s.shell {
            put("Shell", json!(sh));
        }
        let mut image = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": Value::Object(config),
            "rootfs": {
                "type": "layers",
                "diff_ids": s.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            },
            "history": s.history,
        });
        if !s.created.is_empty() {
            image["created"] = json!(s.created);
        }
        if let Some(a) = &s.author {
            image["author"] = json!(a);
        }
        let bytes = serde_json::to_vec(&image).map_err(|e| BuildError::Other(e.to_string()))?;
        let first = self.opts.tags.first().map(String::as_str);
        let img = self.store.commit_image(first, &bytes, &s.layers)?;
        for t in self.opts.tags.iter().skip(1) {
            self.store.tag(&img.manifest_digest.to_string(), t)?;
        }
        self.say(&format!("=> writing image {}", img.config_digest));
        for t in &self.opts.tags {
            self.say(&format!("=> naming to {t}"));
        }
        Ok(img)
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A layer holding directory `dir` and its parents.
fn mkdir_layer(dir: &str, out: &mut std::fs::File) -> std::io::Result<()> {
    let mut w = super::layer::LayerWriter::new(out);
    let comps = super::view::components(dir);
    for n in 1..=comps.len() {
        w.dir(&comps[..n].join("/"), &super::layer::Meta::dir_default())?;
    }
    w.finish()?;
    Ok(())
}

/// `user[:group]` as numbers, names looked up in the image's /etc/passwd
/// and /etc/group.
fn owner(image: &View, spec: &str) -> Result<(u64, u64), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let lookup = |file: &str, name: &str, field: usize| -> Option<(u64, Option<u64>)> {
        let text = image.read_to_string(file)?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name)).then(|| {
                let id = f.get(field)?.parse().ok()?;
                Some((id, f.get(3).and_then(|g| g.parse().ok())))
            })?
        })
    };
    let (uid, primary) = match user.parse::<u64>() {
        Ok(n) => (n, None),
        Err(_) => lookup("/etc/passwd", user, 2).ok_or_else(|| {
            format!("--chown={spec}: no user {user:?} in the image's /etc/passwd")
        })?,
    };
    let gid = match group {
        Some(g) => match g.parse::<u64>() {
            Ok(n) => n,
            Err(_) => lookup("/etc/group", g, 2)
                .map(|(id, _)| id)
                .ok_or_else(|| {
                    format!("--chown={spec}: no group {g:?} in the image's /etc/group")
                })?,
        },
        None => primary.unwrap_or(uid),
    };
    Ok((uid, gid))
}

/// Docker's `Healthcheck` config object (durations in nanoseconds).
fn healthcheck(state: &State, h: &Healthcheck) -> Result<Value, String> {
    let test = match &h.cmd {
        None => json!(["NONE"]),
        Some(Cmd::Exec(v)) => {
            let mut t = vec!["CMD".to_string()];
            t.extend(v.iter().cloned());
            json!(t)
        }
        Some(Cmd::Shell(s)) => json!(["CMD-SHELL", s]),
    };
    let _ = state;
    let mut out = json!({ "Test": test });
    for (k, v) in &h.flags {
        let field = match k.as_str() {
            "interval" => "Interval",
            "timeout" => "Timeout",
            "start-period" => "StartPeriod",
            "start-interval" => "StartInterval",
            "retries" => {
                let n: u64 = v
                    .parse()
                    .map_err(|_| format!("--retries={v}: not a number"))?;
                out["Retries"] = json!(n);
                continue;
            }
            _ => continue,
        };
        out[field] =
            json!(duration_ns(v).ok_or_else(|| format!("--{k}={v}: not a duration (30s, 1m30s)"))?);
    }
    Ok(out)
}

/// `1h2m3.5s`, `300ms`, `10us` → nanoseconds.
fn duration_ns(s: &str) -> Option<u64> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[u..];
        total += value * mult;
    }
    Some(total as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(duration_ns("250ms"), Some(250_000_000));
        assert_eq!(duration_ns("5"), None);
        assert_eq!(duration_ns(""), None);
    }
}
