//! telemetry: the process-wide log subscriber and the span that tags a sync's log lines.
//!
//! Owns the log format (one flat JSON object per line for Lambda, human text for the CLI), the
//! choice of level (Lambda's advanced logging controls, then `RITMO_LOG`, then `RUST_LOG`, then
//! the caller's default) and [`sync_span`], whose four fields appear on every line logged
//! inside it. It does not own metrics (see [`crate::metrics`]) or decide what gets logged.
//!
//! A JSON line reads (members sorted by name)
//! `{"commit":"3f2a9c1e","created":3,"level":"INFO","message":"applied","module":"ritmo::apply","sync_id":"…","target":"prod","timestamp":"2026-11-05T10:00:00.123456Z","trigger":"webhook"}`:
//! the fields of every enclosing span (inner spans win over outer ones) plus the event's own
//! fields (which win over both). `level` is spelled as Lambda expects, so its log-level
//! filtering works; `timestamp` is RFC 3339 in UTC. `target` is the sync target; the Rust
//! module that logged the line is `module`. Inside `lambda_runtime`, its (INFO) invoke span adds
//! `requestId` and `xrayTraceId` to every line the same way.

use std::fmt;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line on stdout (Lambda, CloudWatch Logs Insights).
    Json,
    /// Human-readable lines on stderr (the CLI), coloured on a terminal.
    Text,
}

/// Member names the JSON format writes itself; a field with one of these names is written as
/// `field_<name>` instead.
const RESERVED: [&str; 4] = ["timestamp", "level", "message", "module"];

/// Install the global log subscriber. `AWS_LAMBDA_LOG_FORMAT=JSON` forces [`LogFormat::Json`];
/// the level comes from [`filter_directives`]. Returns false, changing nothing, when a global
/// subscriber is already installed (so a second call is harmless).
pub fn init_logging(format: LogFormat, default_level: &str) -> bool {
    let lookup = |name: &str| std::env::var(name).ok();
    let format = match lookup("AWS_LAMBDA_LOG_FORMAT") {
        Some(value) if value.eq_ignore_ascii_case("json") => LogFormat::Json,
        _ => format,
    };
    let directives = filter_directives(lookup, default_level);
    let subscriber = match format {
        LogFormat::Json => build(format, &directives, std::io::stdout, false),
        LogFormat::Text => build(
            format,
            &directives,
            std::io::stderr,
            std::io::stderr().is_terminal(),
        ),
    };
    subscriber.try_init().is_ok()
}

/// The filter directives to use, given an environment lookup: `AWS_LAMBDA_LOG_LEVEL` (TRACE,
/// DEBUG, INFO, WARN, ERROR or FATAL), else `RITMO_LOG`, else `RUST_LOG` (both full
/// `EnvFilter` directives such as `info,ritmo::git=debug`), else `default_level`.
pub fn filter_directives(lookup: impl Fn(&str) -> Option<String>, default_level: &str) -> String {
    let lambda_level = lookup("AWS_LAMBDA_LOG_LEVEL").and_then(|level| {
        match level.trim().to_ascii_uppercase().as_str() {
            "TRACE" => Some("trace"),
            "DEBUG" => Some("debug"),
            "INFO" => Some("info"),
            "WARN" => Some("warn"),
            "ERROR" | "FATAL" => Some("error"),
            _ => None,
        }
    });
    if let Some(level) = lambda_level {
        return level.to_owned();
    }
    ["RITMO_LOG", "RUST_LOG"]
        .into_iter()
        .filter_map(&lookup)
        .find(|directives| !directives.trim().is_empty())
        .unwrap_or_else(|| default_level.to_owned())
}

/// A subscriber writing `format` to `writer`, filtered by `directives` (invalid directives
/// fall back to `info`). `init_logging` installs one of these; tests and `ritmo serve` can
/// build their own around a [`LogCapture`] and use it with `tracing::subscriber::with_default`.
pub fn subscriber<W>(
    format: LogFormat,
    directives: &str,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    build(format, directives, writer, false)
}

fn build<W>(
    format: LogFormat,
    directives: &str,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(quiet_dependencies(directives))
        .unwrap_or_else(|_| EnvFilter::new(quiet_dependencies("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(
            builder
                .with_ansi(false)
                .fmt_fields(JsonFields::new())
                .event_format(FlatJson)
                .finish(),
        ),
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
    }
}

/// Crates that report routine work at `info`: refinery names every migration it applies (and
/// that the history table is empty) on each first start. Their lines show only when the
/// directives ask for `debug` or more, or name the crate.
const CHATTY_DEPENDENCIES: [&str; 2] = ["refinery", "refinery_core"];

/// `directives` with the [`CHATTY_DEPENDENCIES`] held at `warn` unless they already ask for
/// `debug`/`trace` or mention the crate themselves.
fn quiet_dependencies(directives: &str) -> String {
    let verbose = EnvFilter::try_new(directives).is_ok_and(|filter| {
        filter
            .max_level_hint()
            .is_some_and(|level| level >= tracing::level_filters::LevelFilter::DEBUG)
    });
    if verbose
        || CHATTY_DEPENDENCIES
            .iter()
            .any(|name| directives.contains(name))
    {
        return directives.to_owned();
    }
    let mut quieted = directives.to_owned();
    for name in CHATTY_DEPENDENCIES {
        if !quieted.trim().is_empty() {
            quieted.push(',');
        }
        quieted.push_str(name);
        quieted.push_str("=warn");
    }
    quieted
}

/// The error chain of `error` on one line, for run records and logs (a cause already spelled
/// out in its parent's message is not repeated).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

/// The span a sync runs in: every line logged inside carries these four fields, and `scan`
/// (how the planner read the repository: incremental or full, and why) once it is recorded.
/// A `sync_id` or `commit` not known yet (a plan before its run is recorded) is left out
/// until recorded, rather than written empty. It is an ERROR-level span so it stays enabled,
/// and its fields present, whatever the level.
pub fn sync_span(
    target: &str,
    sync_id: Option<&str>,
    commit: Option<&str>,
    trigger: &str,
) -> tracing::Span {
    let span = tracing::error_span!(
        "sync",
        target = %target,
        sync_id = tracing::field::Empty,
        commit = tracing::field::Empty,
        trigger = %trigger,
        scan = tracing::field::Empty
    );
    if let Some(sync_id) = sync_id.filter(|id| !id.is_empty()) {
        span.record("sync_id", tracing::field::display(sync_id));
    }
    if let Some(commit) = commit.filter(|commit| !commit.is_empty()) {
        span.record("commit", tracing::field::display(commit));
    }
    span
}

/// An in-memory log writer: give it to [`subscriber`], read what was written with
/// [`LogCapture::lines`].
#[derive(Debug, Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// An empty capture.
    pub fn new() -> Self {
        Self::default()
    }

    /// The lines written so far.
    pub fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'w self) -> Self::Writer {
        self.clone()
    }
}

/// One flat JSON object per event: timestamp, level, message, span fields, event fields, module.
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                // With `JsonFields` the fmt layer keeps each span's fields as a JSON object.
                if let Some(formatted) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(span_fields)) = serde_json::from_str(&formatted.fields)
                {
                    fields.extend(span_fields);
                }
            }
        }
        fields.remove("message");
        event.record(&mut JsonVisitor(&mut fields));
        let message = fields
            .remove("message")
            .unwrap_or(Value::String(String::new()));

        // Lines from the `log` crate (refinery, tokio-postgres, …) arrive through tracing-log
        // as module `log` with `log.file` (a path into the cargo registry of the build
        // machine), `log.line`, `log.module_path` and `log.target`: only the target is worth
        // keeping, as the line's module.
        let log_target = fields.remove("log.target");
        fields.retain(|key, _| !key.starts_with("log."));

        let meta = event.metadata();
        let mut line = Map::new();
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        line.insert("timestamp".to_owned(), Value::String(timestamp));
        line.insert("level".to_owned(), Value::String(meta.level().to_string()));
        line.insert("message".to_owned(), message);
        for (key, value) in fields {
            let key = if RESERVED.contains(&key.as_str()) {
                format!("field_{key}")
            } else {
                key
            };
            line.insert(key, value);
        }
        let module = match log_target {
            Some(Value::String(target)) => target,
            _ => meta.target().to_owned(),
        };
        line.insert("module".to_owned(), Value::String(module));

        let text = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Collects an event's fields as JSON values.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::from(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {

    #[derive(Debug, thiserror::Error)]
    #[error("outer failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn an_error_chain_names_every_cause_once() {
        let error = Outer(std::io::Error::other("disk full"));

        assert_eq!(error_chain(&error), "outer failed: disk full");
    }
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    fn json_lines(capture: &LogCapture) -> Vec<Value> {
        capture
            .lines()
            .iter()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn a_line_logged_inside_a_sync_span_carries_the_four_sync_fields() {
        let capture = LogCapture::new();
        let subscriber = subscriber(LogFormat::Json, "info", capture.clone());

        tracing::subscriber::with_default(subscriber, || {
            let span = sync_span("prod", Some("0192f7c0-1111"), Some("3f2a9c1e"), "webhook");
            let _entered = span.enter();
            tracing::info!(created = 3, "applied");
        });

        let lines = json_lines(&capture);
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["target"], "prod");
        assert_eq!(line["sync_id"], "0192f7c0-1111");
        assert_eq!(line["commit"], "3f2a9c1e");
        assert_eq!(line["trigger"], "webhook");
        assert_eq!(line["message"], "applied");
        assert_eq!(line["created"], 3);
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["module"], "ritmo::telemetry::tests");
        let timestamp = line["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(timestamp).is_ok());
    }

    #[test]
    fn sync_fields_survive_a_level_that_hides_info_spans() {
        let capture = LogCapture::new();
        let subscriber = subscriber(LogFormat::Json, "warn", capture.clone());

        tracing::subscriber::with_default(subscriber, || {
            let _entered = sync_span("prod", Some("s-1"), Some("abc"), "poll").entered();
            let _inner = tracing::info_span!("apply", batch = 1).entered();
            tracing::info!("hidden");
            tracing::error!(error = "connection refused", "apply failed");
        });

        let lines = json_lines(&capture);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["level"], "ERROR");
        assert_eq!(lines[0]["sync_id"], "s-1");
        assert_eq!(lines[0]["trigger"], "poll");
        assert_eq!(lines[0]["error"], "connection refused");
    }

    #[test]
    fn inner_span_and_event_fields_override_outer_ones_and_reserved_names_are_kept_apart() {
        let capture = LogCapture::new();
        let subscriber = subscriber(LogFormat::Json, "debug", capture.clone());

        tracing::subscriber::with_default(subscriber, || {
            let _outer = sync_span("prod", Some("s-1"), Some("abc"), "poll").entered();
            let _inner = tracing::error_span!("retry", commit = "def").entered();
            tracing::debug!(level = "custom", trigger = "manual", "retrying");
        });

        let lines = json_lines(&capture);
        assert_eq!(lines[0]["commit"], "def");
        assert_eq!(lines[0]["trigger"], "manual");
        assert_eq!(lines[0]["level"], "DEBUG");
        assert_eq!(lines[0]["field_level"], "custom");
        assert_eq!(lines[0]["target"], "prod");
    }

    #[test]
    fn a_field_recorded_after_the_span_opened_appears_on_later_lines() {
        let capture = LogCapture::new();
        let subscriber = subscriber(LogFormat::Json, "info", capture.clone());

        tracing::subscriber::with_default(subscriber, || {
            let span =
                tracing::error_span!("sync", target = "prod", commit = tracing::field::Empty);
            let _entered = span.enter();
            tracing::info!("before");
            span.record("commit", "3f2a9c1e");
            tracing::info!("after");
        });

        let lines = json_lines(&capture);
        assert!(lines[0].get("commit").is_none());
        assert_eq!(lines[1]["commit"], "3f2a9c1e");
    }

    #[test]
    fn text_lines_show_the_sync_fields_too() {
        let capture = LogCapture::new();
        let subscriber = subscriber(LogFormat::Text, "info", capture.clone());

        tracing::subscriber::with_default(subscriber, || {
            let _entered = sync_span("prod", Some("s-9"), Some("abc"), "manual").entered();
            tracing::warn!("plan is stale");
        });

        let lines = capture.lines();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("WARN"));
        assert!(lines[0].contains("plan is stale"));
        for field in ["target=prod", "sync_id=s-9", "commit=abc", "trigger=manual"] {
            assert!(
                lines[0].contains(field),
                "{field} missing from {}",
                lines[0]
            );
        }
    }

    #[test]
    fn a_sync_id_not_known_yet_is_left_out_until_recorded_never_written_empty() {
        let json = LogCapture::new();
        let text = LogCapture::new();

        for (format, capture) in [(LogFormat::Json, &json), (LogFormat::Text, &text)] {
            let subscriber = subscriber(format, "info", capture.clone());
            tracing::subscriber::with_default(subscriber, || {
                let span = sync_span("prod", None, Some(""), "webhook");
                let _entered = span.enter();
                tracing::info!("reading the repository");
                span.record("sync_id", tracing::field::display("0192f7c0-2222"));
                tracing::info!("planned");
            });
        }

        let lines = json_lines(&json);
        assert!(lines[0].get("sync_id").is_none(), "{}", lines[0]);
        assert!(lines[0].get("commit").is_none(), "{}", lines[0]);
        assert_eq!(lines[1]["sync_id"], "0192f7c0-2222");
        let text = text.lines();
        assert!(!text[0].contains("sync_id"), "{}", text[0]);
        assert!(!text[0].contains("commit="), "{}", text[0]);
        assert!(text[1].contains("sync_id=0192f7c0-2222"), "{}", text[1]);
    }

    #[test]
    fn refinery_migration_chatter_shows_only_at_debug() {
        let at_info = LogCapture::new();
        let at_debug = LogCapture::new();

        for (level, capture) in [("info", &at_info), ("debug", &at_debug)] {
            let subscriber = subscriber(LogFormat::Json, level, capture.clone());
            tracing::subscriber::with_default(subscriber, || {
                tracing::info!(target: "refinery_core::traits::r#async", "applying migration: V1__initial");
                tracing::info!(target: "refinery_core::traits", "schema history table is empty, going to apply all migrations");
                tracing::warn!(target: "refinery_core::traits", "migration V9 is missing");
                tracing::info!("store ready");
            });
        }

        let messages = |capture: &LogCapture| -> Vec<String> {
            json_lines(capture)
                .iter()
                .map(|line| line["message"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            messages(&at_info),
            ["migration V9 is missing", "store ready"]
        );
        assert_eq!(messages(&at_debug).len(), 4);
        assert_eq!(
            quiet_dependencies("refinery_core=info"),
            "refinery_core=info"
        );
    }

    #[test]
    fn a_line_from_the_log_crate_keeps_its_target_as_module_and_no_registry_paths() {
        let capture = LogCapture::new();
        let subscriber = subscriber(LogFormat::Json, "info", capture.clone());

        // The fields tracing-log gives a `log` record.
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                log.target = "tokio_postgres::connection",
                log.module_path = "tokio_postgres::connection",
                log.file = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-postgres-0.7.18/src/connection.rs",
                log.line = 310,
                "WARNING: something"
            );
        });

        let lines = capture.lines();
        assert_eq!(lines.len(), 1);
        assert!(!lines[0].contains("log."), "{}", lines[0]);
        assert!(!lines[0].contains(".cargo/registry"), "{}", lines[0]);
        let line: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(line["module"], "tokio_postgres::connection");
        assert_eq!(line["message"], "WARNING: something");
    }

    #[test]
    fn lambda_log_level_wins_then_ritmo_log_then_rust_log_then_the_default() {
        let all = [
            ("AWS_LAMBDA_LOG_LEVEL", "FATAL"),
            ("RITMO_LOG", "ritmo=debug"),
            ("RUST_LOG", "trace"),
        ];

        assert_eq!(filter_directives(env(&all), "info"), "error");
        assert_eq!(filter_directives(env(&all[1..]), "info"), "ritmo=debug");
        assert_eq!(filter_directives(env(&all[2..]), "info"), "trace");
        assert_eq!(filter_directives(env(&[]), "warn"), "warn");
        assert_eq!(
            filter_directives(env(&[("AWS_LAMBDA_LOG_LEVEL", "Debug")]), "info"),
            "debug"
        );
        assert_eq!(
            filter_directives(
                env(&[("AWS_LAMBDA_LOG_LEVEL", "LOUD"), ("RUST_LOG", " ")]),
                "info"
            ),
            "info"
        );
    }

    #[test]
    fn invalid_directives_fall_back_to_info() {
        let capture = LogCapture::new();
        let subscriber = subscriber(LogFormat::Json, "=[nonsense", capture.clone());

        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!("dropped");
            tracing::info!("kept");
        });

        let lines = json_lines(&capture);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["message"], "kept");
    }

    #[test]
    fn a_second_init_is_a_harmless_no_op() {
        // "off" keeps the global subscriber silent for the other tests in this binary.
        let _ = init_logging(LogFormat::Text, "off");

        let second = init_logging(LogFormat::Json, "off");

        assert!(!second);
    }
}
