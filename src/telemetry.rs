//! Logging setup: `tracing` to stderr, as text for people or JSON for log pipelines.
//! Log lines carry object names and outcomes, never secret or key material. Panics are
//! logged through it too, as one line with their location and a shortened message.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The shape of log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. The filter comes from `RUST_LOG`, defaulting to
/// `info` for keyward and `warn` for its dependencies.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,keyward=info"));
    // Colour only on a terminal: log collectors and `kubectl logs` get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    // In place of the default hook's free text on stderr: one log line, in the chosen
    // format, with the message cut short.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|location| format!("{}:{}", location.file(), location.line()))
            .unwrap_or_default();
        tracing::error!(location, panic = %panic_message(info.payload()), "panicked");
    }));
}

/// How much of a panic's message is logged.
const PANIC_MESSAGE_SHOWN: usize = 200;

/// The message of a panic, at most [`PANIC_MESSAGE_SHOWN`] characters. Panic messages
/// come from keyward's own code and never hold a value it read; the cut bounds what a
/// message built from one by mistake could show.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
        .chars()
        .take(PANIC_MESSAGE_SHOWN)
        .collect()
}
