//! `herdwatch-agent`: the node agent binary. Parses the command line, sets up logging and
//! hands over to the library (`observe` or `run`).

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context;
use clap::Parser;
use herdwatch_node_agent::args::{Cli, Command, LogFormat, MountBpffsArgs};
use tracing_subscriber::EnvFilter;

fn init_logging(cli: &Cli) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&cli.log)
        .with_context(|| format!("invalid --log filter {:?}", cli.log))?;
    // Logs go to stderr: stdout belongs to `observe`'s event lines. Colours only on a
    // terminal: escape codes in a pod's log make it unreadable and ungreppable.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli)?;
    // Before any runtime thread exists: entering a mount namespace needs one thread.
    if let Command::MountBpffs(args) = &cli.command {
        return mount_bpffs(args);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(cli))
}

fn mount_bpffs(args: &MountBpffsArgs) -> anyhow::Result<()> {
    let namespace = (!args.mount_namespace.is_empty()).then_some(Path::new(&args.mount_namespace));
    let mounted = herdwatch_node_agent::capture::pins::ensure_bpffs_in(namespace, &args.path)
        .with_context(|| {
            let inside = namespace.map_or(String::new(), |n| {
                format!(" in the mount namespace of {}", n.display())
            });
            format!(
                "cannot mount a BPF filesystem on {}{inside} (the container must be \
                 privileged, in the host's pid namespace)",
                args.path.display()
            )
        })?;
    let what = if mounted {
        "mounted"
    } else {
        "already mounted"
    };
    tracing::info!(path = %args.path.display(), "BPF filesystem {what}");
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Observe(args) => herdwatch_node_agent::observe::observe(args)
            .await
            .context("observe failed")?,
        Command::Run(args) => herdwatch_node_agent::agent::run(args)
            .await
            .context("agent failed")?,
        Command::MountBpffs(_) => unreachable!("handled before the runtime starts"),
        Command::Unpin(args) => {
            let removed = herdwatch_node_agent::capture::pins::remove_all(&args.pin_root)
                .with_context(|| {
                    format!("cannot remove the pins under {}", args.pin_root.display())
                })?;
            tracing::info!(root = %args.pin_root.display(), sets = removed, "pins removed; herdwatch's programs are detached once no agent holds them");
        }
    }
    Ok(())
}
