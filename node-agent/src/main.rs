//! `herdwatch-agent`: the node agent binary. Parses the command line, sets up logging and
//! hands over to the library (`observe` or `run`).

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use herdwatch_node_agent::args::{Cli, Command, LogFormat};
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli)?;
    match cli.command {
        Command::Observe(args) => herdwatch_node_agent::observe::observe(args)
            .await
            .context("observe failed")?,
        Command::Run(args) => herdwatch_node_agent::agent::run(args)
            .await
            .context("agent failed")?,
        Command::MountBpffs(args) => {
            let mounted = herdwatch_node_agent::capture::pins::ensure_bpffs(&args.path)
                .with_context(|| {
                    format!(
                        "cannot mount a BPF filesystem on {} (the container needs to be \
                         privileged, with the host's directory mounted Bidirectional)",
                        args.path.display()
                    )
                })?;
            let what = if mounted {
                "mounted"
            } else {
                "already mounted"
            };
            tracing::info!(path = %args.path.display(), "BPF filesystem {what}");
        }
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
