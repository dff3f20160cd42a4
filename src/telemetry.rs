//! The tracing subscriber: text or JSON lines on stderr, filtered by `RUST_LOG` or
//! `log.level`, coloured only when stderr is a terminal (and `NO_COLOR` is unset); and
//! the one-line results commands print on stdout, which are JSON log events too when logs
//! are JSON, so that stdout then holds nothing but JSON lines.

use std::io::IsTerminal;
use std::time::SystemTime;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Safe to call once per process.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colours(
        cfg.format,
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
    ));
    let _ = match cfg.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Whether log lines get ANSI colours: text logs on a terminal, unless `NO_COLOR` is set.
fn colours(format: LogFormat, terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    format == LogFormat::Text && terminal && no_color.is_none_or(|v| v.is_empty())
}

/// A command's one-line result for stdout (such as `cairn listening on http://ADDR`):
/// the message itself with text logs; with JSON logs, an event shaped like the log's own
/// (`timestamp`, `level`, `fields` holding `message` and the given fields, `target`).
pub fn result_line(cfg: &LogConfig, message: &str, fields: &[(&str, String)]) -> String {
    match cfg.format {
        LogFormat::Text => message.to_string(),
        LogFormat::Json => {
            let mut f = serde_json::Map::new();
            f.insert("message".into(), message.into());
            for (k, v) in fields {
                f.insert((*k).into(), v.as_str().into());
            }
            let timestamp = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
            // Written by hand to keep the log's key order (timestamp first).
            format!(
                r#"{{"timestamp":{},"level":"INFO","fields":{},"target":"cairn"}}"#,
                serde_json::Value::from(timestamp),
                serde_json::Value::Object(f)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_for_text_on_a_terminal() {
        assert!(colours(LogFormat::Text, true, None));
        assert!(!colours(LogFormat::Text, false, None));
        assert!(!colours(LogFormat::Json, true, None));
        assert!(!colours(LogFormat::Text, true, Some("1".into())));
    }

    #[test]
    fn a_json_result_line_is_a_log_event() {
        let cfg = LogConfig { format: LogFormat::Json, level: "info".into() };
        let line = result_line(&cfg, "cairn listening on http://127.0.0.1:1", &[("address", "127.0.0.1:1".into())]);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["fields"]["message"], "cairn listening on http://127.0.0.1:1");
        assert_eq!(v["fields"]["address"], "127.0.0.1:1");
        assert_eq!(v["level"], "INFO");
        let text = LogConfig { format: LogFormat::Text, level: "info".into() };
        assert_eq!(result_line(&text, "done", &[("a", "b".into())]), "done");
    }
}
