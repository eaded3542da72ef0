//! Command-line definitions (clap derive). Verbs and flags follow Docker's.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "sbx",
    version,
    about = "Run OCI images as namespace containers or KVM microVMs"
)]
pub struct Cli {
    /// Where images and sandboxes are kept.
    #[arg(long, global = true, env = "SBX_ROOT", default_value = sbx_shared::paths::DEFAULT_ROOT)]
    pub root: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a new sandbox.
    Run(Box<RunArgs>),
    /// Build an image from a Dockerfile.
    Build(Box<BuildArgs>),
    /// Import a rootfs tarball (plain, gzip or zstd; '-' for stdin) as an image.
    Import {
        file: String,
        /// NAME[:TAG]
        name: String,
        /// Image config change, as Docker's --change: CMD, ENTRYPOINT, ENV, WORKDIR, USER, VOLUME, EXPOSE.
        #[arg(short = 'c', long = "change")]
        changes: Vec<String>,
    },
    /// Load images from a docker-archive or OCI archive.
    Load {
        #[arg(short = 'i', long = "input")]
        input: PathBuf,
    },
    /// Save images to an OCI archive (with Docker's manifest.json too).
    Save {
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List images.
    Images {
        /// table (default) or json
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Remove images.
    Rmi {
        /// Remove even if stopped sandboxes were made from it.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Image housekeeping.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Pull an image from a registry.
    Pull(RegistryArgs),
    /// Push an image to a registry.
    Push(RegistryArgs),
    /// Log in to a registry (credentials are checked, then kept in auth.json).
    Login {
        #[arg(short = 'u', long)]
        username: Option<String>,
        /// Read the password from stdin.
        #[arg(long = "password-stdin")]
        password_stdin: bool,
        /// Talk plain http to this registry (loopback registries always are).
        #[arg(long = "insecure-registry", value_name = "REGISTRY")]
        insecure: Vec<String>,
        /// The registry (docker.io when none is given).
        registry: Option<String>,
    },
    /// Forget the credentials of a registry.
    Logout {
        /// The registry (docker.io when none is given).
        registry: Option<String>,
    },
    /// List sandboxes.
    Ps(PsArgs),
    /// Show a sandbox's output.
    Logs(LogsArgs),
    /// Stop running sandboxes: the image's STOPSIGNAL, then SIGKILL.
    Stop(StopArgs),
    /// Send a signal to running sandboxes.
    Kill {
        /// Signal name or number.
        #[arg(short = 's', long = "signal", default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Start stopped sandboxes again (detached).
    Start {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Stop, then start sandboxes.
    Restart(StopArgs),
    /// Wait for sandboxes to end and print their exit codes.
    Wait {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove sandboxes.
    Rm {
        /// Kill and remove running sandboxes too.
        #[arg(short, long)]
        force: bool,
        /// Remove the sandbox's anonymous volumes too.
        #[arg(short, long)]
        volumes: bool,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Show sandboxes' configuration and state as JSON.
    Inspect {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Run a command in a running sandbox.
    Exec(ExecArgs),
    /// Measure start→exit and memory of a workload under each isolation level.
    Bench(Box<crate::commands::bench::BenchArgs>),
    /// Manage volumes: create, ls, inspect, rm, prune.
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    },
    /// Manage networks: create, ls, inspect, rm, connect, disconnect, prune.
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// List a sandbox's published ports (or the host side of one).
    Port {
        id: String,
        /// PORT[/tcp|udp]
        port: Option<String>,
    },
    /// Housekeeping: prune, df.
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all sandboxes (default: running ones).
    #[arg(short, long)]
    pub all: bool,
    /// Only ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// name=, id=, status=, ancestor= (repeatable; the same key ORs, keys AND).
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// table (default) or json (one object per line).
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Do not truncate ids and commands.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow the output until the sandbox ends.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines ("all": every line).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Prefix each line with its time.
    #[arg(short, long)]
    pub timestamps: bool,
    pub id: String,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait for the stop signal before SIGKILL.
    #[arg(short = 't', long = "time", default_value_t = 10.0)]
    pub time: f64,
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass the host's value).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Working directory inside the sandbox.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// USER[:GROUP], names or numbers.
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    pub id: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (an ext4 disk image that containers and VMs mount).
    Create {
        /// Driver option: size=SIZE (default 1g).
        #[arg(short = 'o', long = "opt")]
        opts: Vec<String>,
        /// Set a label: KEY=VALUE.
        #[arg(short = 'l', long = "label")]
        labels: Vec<String>,
        name: String,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        /// table (default) or json (one object per line).
        #[arg(long, default_value = "table")]
        format: String,
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show volumes as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes (refused while a sandbox uses one).
    #[command(alias = "remove")]
    Rm {
        /// Also remove volumes that stopped sandboxes name; ignore missing ones.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every volume no sandbox record names.
    Prune {
        /// Do not ask (sbx never asks; accepted for Docker's scripts).
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a bridge network with its own subnet.
    Create {
        /// bridge (the only driver).
        #[arg(short = 'd', long, default_value = "bridge")]
        driver: String,
        /// IPv4 subnet in CIDR form, a private range (default: a free 10.89.N.0/24).
        #[arg(long)]
        subnet: Option<String>,
        /// The bridge's address (default: the subnet's first host address).
        #[arg(long)]
        gateway: Option<String>,
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// table (default) or json (one object per line).
        #[arg(long, default_value = "table")]
        format: String,
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show networks as JSON, with the sandboxes on them.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks (refused while a sandbox is on one).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Connect a sandbox to a network (a running container gets a new interface).
    Connect {
        /// Another name peers on the network know it by.
        #[arg(long = "alias")]
        aliases: Vec<String>,
        /// Its IPv4 address on the network.
        #[arg(long)]
        ip: Option<String>,
        network: String,
        id: String,
    },
    /// Disconnect a sandbox from a network.
    Disconnect {
        /// Accepted for Docker's scripts.
        #[arg(short, long)]
        force: bool,
        network: String,
        id: String,
    },
    /// Remove every user-defined network no sandbox is on.
    Prune {
        /// Do not ask (sbx never asks; accepted for Docker's scripts).
        #[arg(short, long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Remove exited sandboxes (and with -a, images no sandbox uses).
    Prune {
        /// Remove every image no sandbox uses too.
        #[arg(short, long)]
        all: bool,
        /// Remove volumes no sandbox names too.
        #[arg(long)]
        volumes: bool,
        /// Do not ask (sbx never asks; accepted for Docker's scripts).
        #[arg(short, long)]
        force: bool,
    },
    /// Disk usage of images and sandboxes.
    Df {
        /// table (default) or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
}

#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// NAME[:TAG|@DIGEST]
    pub name: String,
    /// Talk plain http to this registry (loopback registries always are).
    #[arg(long = "insecure-registry", value_name = "REGISTRY")]
    pub insecure: Vec<String>,
    /// Print only the digest.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build a built-in image from this machine's packages (busybox: from
    /// Debian's busybox-static) and import it, so sbx runs with no registry.
    Bootstrap {
        #[arg(default_value = "busybox")]
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IsolationArg {
    Container,
    Vm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VmEngineArg {
    Kvm,
    Qemu,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Isolation level.
    #[arg(long, value_enum, default_value = "container")]
    pub isolation: IsolationArg,
    /// Remove the sandbox when it exits.
    #[arg(long)]
    pub rm: bool,
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass the host's value).
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the sandbox.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// USER[:GROUP], names or numbers.
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    /// Memory limit (64m, 1g).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// CPU quota, in CPUs (0.5); vCPUs for a VM.
    #[arg(long, allow_negative_numbers = true)]
    pub cpus: Option<f64>,
    /// Maximum number of tasks (-1: unlimited).
    #[arg(long = "pids-limit", allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// Resource limit: NAME=SOFT[:HARD].
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Mount the root filesystem read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Mount a volume or a host path: NAME:DST[:ro], /HOST/PATH:DST[:ro],
    /// or DST alone for an anonymous volume.
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// Mount: type=bind|volume|tmpfs,source=…,target=…[,readonly][,tmpfs-size=…].
    #[arg(long = "mount")]
    pub mounts: Vec<String>,
    /// Mount a tmpfs: DST[:size=64m,mode=1777].
    #[arg(long = "tmpfs")]
    pub tmpfs: Vec<String>,
    /// none (the default, or bridge with -p/-P), host (containers only),
    /// bridge (the default bridge network) or a user-defined network.
    #[arg(long)]
    pub network: Option<String>,
    /// Another name peers on a user-defined network know this sandbox by.
    #[arg(long = "network-alias")]
    pub network_aliases: Vec<String>,
    /// This sandbox's IPv4 address on its network.
    #[arg(long)]
    pub ip: Option<String>,
    /// Publish a port: [IP:][HOSTPORT:]PORT[/tcp|udp]. IP defaults to
    /// 127.0.0.1; no HOSTPORT: a free one.
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish every port the image EXPOSEs, each to a free host port.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Override the image's ENTRYPOINT ('' clears it).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Kill the sandbox after this many seconds.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Run in the background under a monitor process; print the id.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// With -d: no, on-failure[:N] or always.
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// VM engine (--isolation=vm): sbx's own kvm, or qemu. Default: kvm
    /// where KVM has hardware virtualization, else qemu.
    #[arg(long = "vm-engine", value_enum)]
    pub vm_engine: Option<VmEngineArg>,
    /// Guest kernel for --isolation=vm (default: the one guest-kernel/build.sh built).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    pub image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name (and optionally a tag) for the image: NAME[:TAG]; may repeat.
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile; '-' for stdin).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Build-time variable: KEY=VALUE (KEY alone takes the host's value).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// The stage to build (default: the last).
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use the build cache.
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// Isolation level the RUN steps run under.
    #[arg(long, value_enum, default_value = "container")]
    pub isolation: IsolationArg,
    /// The build context directory.
    pub context: PathBuf,
}
