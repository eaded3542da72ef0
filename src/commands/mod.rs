//! One module per group of verbs.

pub mod bench;
mod build;
mod image;
mod lifecycle;
mod network;
mod port;
mod registry;
mod run;
mod volume;

use anyhow::Result;
use sbx_shared::backend::BackendError;
use sbx_shared::paths::Root;

use crate::cli::{Cli, Command, ImageCommand, SystemCommand};

/// Run a command; the result is the process exit status.
pub fn dispatch(cli: Cli) -> Result<u8> {
    let root = Root::new(cli.root);
    match cli.command {
        Command::Run(args) => run::run(&root, *args),
        Command::Build(args) => build::build(&root, *args),
        Command::Import {
            file,
            name,
            changes,
        } => image::import(&root, &file, &name, &changes),
        Command::Load { input } => image::load(&root, &input),
        Command::Save { output, names } => image::save(&root, &output, &names),
        Command::Images { format } => image::images(&root, &format),
        Command::Tag { source, target } => image::tag(&root, &source, &target),
        Command::Rmi { force, names } => image::rmi(&root, force, &names),
        Command::Image {
            command: ImageCommand::Bootstrap { name },
        } => crate::bootstrap::bootstrap(&root, &name),
        Command::Pull(args) => registry::pull(&root, &args),
        Command::Push(args) => registry::push(&root, &args),
        Command::Login {
            username,
            password_stdin,
            insecure,
            registry,
        } => registry::login(username, password_stdin, &insecure, registry.as_deref()),
        Command::Logout { registry } => registry::logout(registry.as_deref()),
        Command::Ps(args) => lifecycle::ps(&root, &args),
        Command::Logs(args) => lifecycle::logs(&root, &args),
        Command::Stop(args) => lifecycle::stop(&root, &args),
        Command::Kill { signal, ids } => lifecycle::kill(&root, &signal, &ids),
        Command::Start { ids } => lifecycle::start(&root, &ids),
        Command::Restart(args) => lifecycle::restart(&root, &args),
        Command::Wait { ids } => lifecycle::wait(&root, &ids),
        Command::Rm {
            force,
            volumes: false,
            ids,
        } => lifecycle::rm(&root, force, &ids),
        // `rm -v`: the anonymous volumes go once their sandbox has.
        Command::Rm {
            force,
            volumes: true,
            ids,
        } => volume::with_anonymous(&root, &ids, |ids| lifecycle::rm(&root, force, ids)),
        Command::Inspect { ids } => lifecycle::inspect(&root, &ids),
        Command::Exec(args) => lifecycle::exec(&root, &args),
        Command::System {
            command: SystemCommand::Prune { all, volumes, .. },
        } => {
            let code = lifecycle::prune(&root, all)?;
            if volumes {
                volume::prune(&root)?;
            }
            Ok(code)
        }
        Command::Volume { command } => volume::dispatch(&root, command),
        Command::Network { command } => network::dispatch(&root, command),
        Command::Port { id, port } => port::port(&root, &id, port.as_deref()),
        Command::Bench(args) => bench::bench(&root, *args),
        Command::System {
            command: SystemCommand::Df { format },
        } => lifecycle::df(&root, &format),
    }
}

/// Errors that carry their own exit status (a workload that could not be
/// executed: 126 or 127, as Docker reports them).
pub fn exit_code_of(e: &anyhow::Error) -> Option<u8> {
    e.chain()
        .find_map(|c| match c.downcast_ref::<BackendError>() {
            Some(BackendError::Exec { code, .. }) => u8::try_from(*code).ok(),
            _ => None,
        })
}
