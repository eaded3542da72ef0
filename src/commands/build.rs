//! `sbx build`: flags → build options → the builder in sbx-shared, with the
//! backend the isolation level names.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::{bail, Context, Result};
use sbx_shared::backend::Backend;
use sbx_shared::build::{self, Options};
use sbx_shared::paths::Root;
use sbx_shared::spec::Isolation;
use sbx_shared::store::Store;

use crate::cli::{BuildArgs, IsolationArg};

pub fn build(root: &Root, args: BuildArgs) -> Result<u8> {
    let isolation = match args.isolation {
        IsolationArg::Container => Isolation::Container,
        IsolationArg::Vm => Isolation::Vm,
    };
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        match a.split_once('=') {
            Some(("", _)) => bail!("invalid --build-arg {a:?}: empty name"),
            Some((k, v)) => build_args.insert(k.to_string(), v.to_string()),
            None => match std::env::var(a) {
                Ok(v) => build_args.insert(a.clone(), v),
                Err(_) => continue,
            },
        };
    }
    // A Dockerfile on stdin is kept in the root's tmp/ for the builder.
    let mut stdin_file = None;
    let (dockerfile, name) = match &args.file {
        Some(f) if f.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the Dockerfile from stdin")?;
            std::fs::create_dir_all(root.tmp()).context("creating the root's tmp/")?;
            let path = root
                .tmp()
                .join(format!("Dockerfile-{}", std::process::id()));
            std::fs::write(&path, text).context("writing the Dockerfile")?;
            stdin_file = Some(RemoveOnDrop(path.clone()));
            (path, "Dockerfile".to_string())
        }
        Some(f) => (f.clone(), f.display().to_string()),
        None => (args.context.join("Dockerfile"), "Dockerfile".to_string()),
    };
    let opts = Options {
        dockerfile,
        dockerfile_name: name,
        context: args.context.clone(),
        tags: args.tags.clone(),
        build_args,
        target: args.target.clone(),
        no_cache: args.no_cache,
        isolation,
    };
    let store = Store::open(root).context("opening the image store")?;
    let backend: Box<dyn Backend> = match isolation {
        Isolation::Container => Box::new(sbx_container::ContainerBackend::new(root)),
        // Each RUN step in its own microVM (an untrusted Dockerfile), its
        // changes written by the guest init to a changes disk for
        // Sandbox::diff.
        Isolation::Vm => Box::new(sbx_vmm::VmBackend::new(root).with_changes()),
    };
    let start = std::time::Instant::now();
    let image = build::build(&store, &*backend, &opts, &mut std::io::stdout())?;
    drop(stdin_file);
    println!(
        "=> built {} in {:.1}s",
        image.config_digest,
        start.elapsed().as_secs_f64()
    );
    Ok(0)
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
