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
    }
    Ok(())
}
