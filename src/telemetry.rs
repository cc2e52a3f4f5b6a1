//! Logging set-up. `RUST_LOG` wins over `log.level` when set, so an operator
//! can turn up one module without a config change; `log.format = "json"`
//! gives one JSON object per line for log pipelines.
//!
//! Text logs are coloured only for a person at a terminal: written to a pipe
//! or a file (Docker, Kubernetes, systemd, `> log`) the escape codes would
//! garble every line for `grep` and log pipelines. `NO_COLOR` (no-color.org)
//! turns the colours off at a terminal too.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber; call once, before anything logs.
pub fn init(config: &LogConfig) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(&config.level)?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(colours_wanted());
    let result = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|err| anyhow::anyhow!("cannot install the log subscriber: {err}"))
}

/// A terminal on stdout (where the logs go), and no `NO_COLOR` set to a
/// non-empty value.
fn colours_wanted() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
