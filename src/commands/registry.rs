//! Registry verbs: pull, push, login, logout (Docker's output, one error line).

use std::collections::HashMap;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use sbx_registry::{AuthFile, Credentials, Options, Progress};
use sbx_shared::digest::Digest;
use sbx_shared::paths::Root;
use sbx_shared::reference::{Reference, DEFAULT_REGISTRY};
use sbx_shared::store::Store;

use crate::cli::RegistryArgs;

/// Blobs moved at once (Docker's default is 3 downloads, 5 uploads).
const WORKERS: usize = 3;

fn auth_file() -> AuthFile {
    AuthFile::new(AuthFile::default_path())
}

fn options<'a>(
    registry: &str,
    insecure: &'a [String],
    progress: &'a dyn Progress,
) -> Result<Options<'a>> {
    let file = auth_file();
    let creds = file
        .get(registry)
        .with_context(|| format!("reading credentials from {}", file.path().display()))?;
    Ok(Options {
        insecure,
        creds,
        progress,
        workers: WORKERS,
    })
}

pub fn pull(root: &Root, args: &RegistryArgs) -> Result<u8> {
    let name = Reference::parse(&args.name)?;
    let store = Store::open(root).context("opening the image store")?;
    if !args.quiet {
        let what = if name.tag.is_empty() {
            "digest"
        } else {
            &name.tag
        };
        println!("{what}: Pulling from {}", name.repository);
    }
    let before = store
        .resolve(&name.familiar())
        .ok()
        .map(|i| i.manifest_digest);
    let progress = Bars::new(args.quiet);
    let pulled = sbx_registry::pull(
        &store,
        &name,
        &options(&name.registry, &args.insecure, &progress)?,
    )
    .with_context(|| format!("pulling {}", name.familiar()))?;
    progress.clear();
    if args.quiet {
        println!("{}", pulled.digest);
        return Ok(0);
    }
    println!("Digest: {}", pulled.digest);
    let status = if before.as_ref() == Some(&pulled.image.manifest_digest) {
        "Image is up to date for"
    } else {
        "Downloaded newer image for"
    };
    println!("Status: {status} {}", name.familiar());
    println!("{}", name.full());
    Ok(0)
}

pub fn push(root: &Root, args: &RegistryArgs) -> Result<u8> {
    let name = Reference::parse(&args.name)?;
    let store = Store::open(root).context("opening the image store")?;
    if !args.quiet {
        println!(
            "The push refers to repository [{}/{}]",
            name.registry, name.repository
        );
    }
    let progress = Bars::new(args.quiet);
    let pushed = sbx_registry::push(
        &store,
        &args.name,
        &name,
        &options(&name.registry, &args.insecure, &progress)?,
    )
    .with_context(|| format!("pushing {}", name.familiar()))?;
    progress.clear();
    if args.quiet {
        println!("{}", pushed.digest);
    } else {
        let tag = if name.tag.is_empty() {
            "digest"
        } else {
            &name.tag
        };
        println!("{tag}: digest: {} size: {}", pushed.digest, pushed.size);
    }
    Ok(0)
}

/// `https://host:5000/` → `host:5000`; no registry is Docker Hub.
fn registry_name(registry: Option<&str>) -> String {
    let r = registry.unwrap_or(DEFAULT_REGISTRY);
    let r = r
        .strip_prefix("https://")
        .or_else(|| r.strip_prefix("http://"))
        .unwrap_or(r);
    let r = r.split('/').next().unwrap_or(r);
    match r {
        "index.docker.io" | "registry-1.docker.io" | "" => DEFAULT_REGISTRY.to_string(),
        r => r.to_string(),
    }
}

pub fn login(
    username: Option<String>,
    password_stdin: bool,
    insecure: &[String],
    registry: Option<&str>,
) -> Result<u8> {
    let registry = registry_name(registry);
    let tty = io::stdin().is_terminal();
    let username = match username {
        Some(u) => u,
        None if tty && !password_stdin => prompt("Username: ")?,
        None => bail!("logging in to {registry}: no username: give one with -u"),
    };
    let password = if password_stdin {
        let mut p = String::new();
        io::stdin()
            .read_to_string(&mut p)
            .context("reading the password from stdin")?;
        p.trim_end_matches(['\n', '\r']).to_string()
    } else if tty {
        prompt_hidden("Password: ")?
    } else {
        bail!("logging in to {registry}: no password: use --password-stdin")
    };
    if username.is_empty() || password.is_empty() {
        bail!("logging in to {registry}: the username and password must not be empty");
    }
    let file = auth_file();
    sbx_registry::login::login(
        &file,
        &registry,
        Credentials { username, password },
        insecure,
    )
    .with_context(|| format!("logging in to {registry}"))?;
    println!("Login Succeeded");
    Ok(0)
}

pub fn logout(registry: Option<&str>) -> Result<u8> {
    let registry = registry_name(registry);
    let file = auth_file();
    if sbx_registry::login::logout(&file, &registry)
        .with_context(|| format!("logging out of {registry}"))?
    {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(0)
}

fn prompt(label: &str) -> Result<String> {
    eprint!("{label}");
    io::stderr().flush().ok();
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading from the terminal")?;
    Ok(line.trim().to_string())
}

/// Read a line with echo off.
fn prompt_hidden(label: &str) -> Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = io::stdin();
    let saved = tcgetattr(&stdin).context("reading the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turning echo off")?;
    let line = prompt(label);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    line
}

/// Per-blob progress: bars when stderr is a terminal, plain lines on
/// stdout otherwise, nothing with --quiet.
struct Bars {
    mode: Mode,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

enum Mode {
    Quiet,
    Lines,
    Bars(MultiProgress),
}

impl Bars {
    fn new(quiet: bool) -> Bars {
        let mode = if quiet {
            Mode::Quiet
        } else if io::stderr().is_terminal() {
            Mode::Bars(MultiProgress::new())
        } else {
            Mode::Lines
        };
        Bars {
            mode,
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn clear(&self) {
        if let Mode::Bars(m) = &self.mode {
            let _ = m.clear();
        }
    }
}

impl Progress for Bars {
    fn begin(&self, digest: &Digest, size: u64, action: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines => println!("{}: {action}", digest.short()),
            Mode::Bars(m) => {
                let bar = m.add(ProgressBar::new(size));
                if let Ok(style) = ProgressStyle::with_template(
                    "{prefix}: {msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_prefix(digest.short().to_string());
                bar.set_message(action.to_string());
                if let Ok(mut bars) = self.bars.lock() {
                    bars.insert(digest.clone(), bar);
                }
            }
        }
    }

    fn advance(&self, digest: &Digest, bytes: u64) {
        if let Ok(bars) = self.bars.lock() {
            if let Some(bar) = bars.get(digest) {
                bar.inc(bytes);
            }
        }
    }

    fn done(&self, digest: &Digest, status: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines => println!("{}: {status}", digest.short()),
            Mode::Bars(m) => {
                let bar = self.bars.lock().ok().and_then(|mut b| b.remove(digest));
                if let Some(bar) = bar {
                    bar.finish_and_clear();
                }
                let _ = m.println(format!("{}: {status}", digest.short()));
            }
        }
    }
}
