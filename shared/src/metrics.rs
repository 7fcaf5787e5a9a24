//! metrics: CloudWatch metrics written as Embedded Metric Format (EMF) log lines.
//!
//! Owns the product's metric names and units ([`Metric`]), the EMF document written for a batch
//! of values ([`MetricsBatch::render`]) and where the lines go ([`MetricsSink`]). In Lambda a
//! line printed to stdout reaches CloudWatch Logs, which turns it into metrics; nothing here
//! calls the CloudWatch API. It does not decide *when* to measure: the workflow does.
//!
//! Every line publishes each metric three ways (namespace `Ritmo/GitOps`):
//! by `Target` (per-target graphs), by `Target` and `Function` when `AWS_LAMBDA_FUNCTION_NAME`
//! is set, and with no dimension at all (service-wide totals that alarms can watch, since a
//! CloudWatch alarm cannot sum over dimension values).
//!
//! Checked against the EMF specification: one JSON object per line, `_aws.Timestamp` in epoch
//! milliseconds, at most 100 metric definitions per directive, at most 30 dimensions per set,
//! at most 100 values per metric, dimension values are strings and metric values numbers or
//! arrays of numbers.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// The CloudWatch namespace every metric is published under.
pub const NAMESPACE: &str = "Ritmo/GitOps";
/// Dimension naming the sync target (`Target=prod`).
pub const TARGET_DIMENSION: &str = "Target";
/// Dimension naming the Lambda function, set only inside Lambda.
pub const FUNCTION_DIMENSION: &str = "Function";
/// The value used for `Target` when the target is not known (a webhook that names none).
pub const UNKNOWN_TARGET: &str = "unknown";
/// EMF: a directive lists at most 100 metric definitions.
pub const MAX_METRICS_PER_DIRECTIVE: usize = 100;
/// EMF: a metric carries at most 100 values in one document.
pub const MAX_VALUES_PER_METRIC: usize = 100;
/// EMF (and CloudWatch): a dimension set holds at most 30 dimensions.
pub const MAX_DIMENSIONS_PER_SET: usize = 30;
/// CloudWatch: a dimension value is at most 1024 characters.
const MAX_DIMENSION_VALUE_LEN: usize = 1024;

/// A CloudWatch unit, as spelled in the `Unit` member of an EMF metric definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Milliseconds,
    Seconds,
    Count,
}

impl Unit {
    /// The unit's name in EMF and the CloudWatch API.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
            Unit::Count => "Count",
        }
    }
}

/// Every metric the product publishes; the name and unit come from here, never from a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// Whole sync, from trigger to applied (or failed), in milliseconds.
    SyncDuration,
    /// Reading the revision, validating and planning, in milliseconds.
    PlanDuration,
    /// Running the plan in Postgres, in milliseconds.
    ApplyDuration,
    ResourcesCreated,
    ResourcesUpdated,
    ResourcesDeleted,
    SyncSucceeded,
    SyncFailed,
    /// A plan refused because the target moved on since it was made.
    PlanStale,
    ValidationErrors,
    DriftDetected,
    WebhookAccepted,
    WebhookRejected,
    WebhookIgnored,
    /// How far behind the remote head the poller found a target, in seconds.
    PollerLag,
    /// A notification (SNS, Slack webhook) that could not be delivered.
    NotificationFailed,
    /// A function could not connect to PostgreSQL (the stack's database alarm).
    DatabaseConnectionFailed,
}

impl Metric {
    /// All metrics, in declaration order.
    pub const ALL: [Metric; 17] = [
        Metric::SyncDuration,
        Metric::PlanDuration,
        Metric::ApplyDuration,
        Metric::ResourcesCreated,
        Metric::ResourcesUpdated,
        Metric::ResourcesDeleted,
        Metric::SyncSucceeded,
        Metric::SyncFailed,
        Metric::PlanStale,
        Metric::ValidationErrors,
        Metric::DriftDetected,
        Metric::WebhookAccepted,
        Metric::WebhookRejected,
        Metric::WebhookIgnored,
        Metric::PollerLag,
        Metric::NotificationFailed,
        Metric::DatabaseConnectionFailed,
    ];

    /// The metric's name in CloudWatch.
    pub fn name(self) -> &'static str {
        match self {
            Metric::SyncDuration => "SyncDuration",
            Metric::PlanDuration => "PlanDuration",
            Metric::ApplyDuration => "ApplyDuration",
            Metric::ResourcesCreated => "ResourcesCreated",
            Metric::ResourcesUpdated => "ResourcesUpdated",
            Metric::ResourcesDeleted => "ResourcesDeleted",
            Metric::SyncSucceeded => "SyncSucceeded",
            Metric::SyncFailed => "SyncFailed",
            Metric::PlanStale => "PlanStale",
            Metric::ValidationErrors => "ValidationErrors",
            Metric::DriftDetected => "DriftDetected",
            Metric::WebhookAccepted => "WebhookAccepted",
            Metric::WebhookRejected => "WebhookRejected",
            Metric::WebhookIgnored => "WebhookIgnored",
            Metric::PollerLag => "PollerLag",
            Metric::NotificationFailed => "NotificationFailed",
            Metric::DatabaseConnectionFailed => "DatabaseConnectionFailed",
        }
    }

    /// The metric's unit.
    pub fn unit(self) -> Unit {
        match self {
            Metric::SyncDuration | Metric::PlanDuration | Metric::ApplyDuration => {
                Unit::Milliseconds
            }
            Metric::PollerLag => Unit::Seconds,
            _ => Unit::Count,
        }
    }
}

// One batch can hold every metric, so a single directive never exceeds the EMF limit.
const _: () = assert!(Metric::ALL.len() <= MAX_METRICS_PER_DIRECTIVE);

/// Where rendered EMF lines go.
#[derive(Debug, Clone, Default)]
pub enum MetricsSink {
    /// Print each line to stdout, where Lambda forwards it to CloudWatch Logs.
    #[default]
    Stdout,
    /// Keep the lines in memory (tests, `ritmo serve`).
    Capture(Arc<Mutex<Vec<String>>>),
    /// Drop them.
    Disabled,
}

impl MetricsSink {
    /// A sink that keeps its lines in memory; read them with [`MetricsSink::lines`].
    pub fn capture() -> Self {
        MetricsSink::Capture(Arc::default())
    }

    /// The lines captured so far (empty for the other sinks).
    pub fn lines(&self) -> Vec<String> {
        match self {
            MetricsSink::Capture(lines) => lines
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
            MetricsSink::Stdout | MetricsSink::Disabled => Vec::new(),
        }
    }

    /// Write one line. Failures are ignored: losing a metric must never fail a sync.
    pub fn write_line(&self, line: &str) {
        match self {
            MetricsSink::Stdout => {
                // One write per line so a log line from another thread cannot land inside it.
                let mut buf = String::with_capacity(line.len() + 1);
                buf.push_str(line);
                buf.push('\n');
                let _ = std::io::stdout().lock().write_all(buf.as_bytes());
            }
            MetricsSink::Capture(lines) => lines
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(line.to_owned()),
            MetricsSink::Disabled => {}
        }
    }
}

/// Values for one target, rendered as one EMF document (more only past 100 values a metric).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsBatch {
    target: String,
    function: Option<String>,
    values: BTreeMap<Metric, Vec<f64>>,
    properties: BTreeMap<String, Value>,
}

impl MetricsBatch {
    /// A batch for `target`, with the `Function` dimension taken from `AWS_LAMBDA_FUNCTION_NAME`.
    pub fn new(target: &str) -> Self {
        MetricsBatch {
            target: dimension_value(target),
            function: lambda_function_name().map(dimension_value),
            values: BTreeMap::new(),
            properties: BTreeMap::new(),
        }
    }

    /// Replace the `Function` dimension (`None`: publish without it).
    pub fn with_function(mut self, function: Option<&str>) -> Self {
        self.function = function.map(dimension_value);
        self
    }

    /// Add a value; a metric given several values publishes them all (EMF value arrays).
    /// Non-finite values are dropped: JSON cannot carry them and CloudWatch would refuse them.
    pub fn put(mut self, metric: Metric, value: f64) -> Self {
        self.push(metric, value);
        self
    }

    /// [`put`](Self::put) through a mutable reference, for batches filled in a loop.
    pub fn push(&mut self, metric: Metric, value: f64) {
        if value.is_finite() {
            self.values.entry(metric).or_default().push(value);
        }
    }

    /// Add a duration, converted to the metric's unit (a count metric takes whole seconds).
    pub fn put_duration(self, metric: Metric, duration: Duration) -> Self {
        let value = match metric.unit() {
            Unit::Milliseconds => duration.as_secs_f64() * 1000.0,
            Unit::Seconds => duration.as_secs_f64(),
            Unit::Count => duration.as_secs() as f64,
        };
        self.put(metric, value)
    }

    /// Add a non-metric member (`sync_id`, `commit`…), searchable in CloudWatch Logs Insights.
    /// A key that would collide with a metric, a dimension or `_aws` is stored as
    /// `property_<key>` so it can never overwrite a metric's value.
    pub fn property(mut self, key: &str, value: impl Into<Value>) -> Self {
        let key = if is_reserved_member(key) {
            format!("property_{key}")
        } else {
            key.to_owned()
        };
        self.properties.insert(key, value.into());
        self
    }

    /// True when no value has been put.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The EMF lines for this batch at `timestamp_ms` (milliseconds since the Unix epoch).
    /// Usually one line; a metric with more than 100 values spills into further lines.
    /// An empty batch renders no line.
    pub fn render(&self, timestamp_ms: i64) -> Vec<String> {
        let chunks = self
            .values
            .values()
            .map(|values| values.len().div_ceil(MAX_VALUES_PER_METRIC))
            .max()
            .unwrap_or(0);
        (0..chunks)
            .map(|chunk| self.render_chunk(chunk, timestamp_ms))
            .collect()
    }

    fn render_chunk(&self, chunk: usize, timestamp_ms: i64) -> String {
        let mut dimension_sets = vec![vec![TARGET_DIMENSION]];
        if self.function.is_some() {
            dimension_sets.push(vec![TARGET_DIMENSION, FUNCTION_DIMENSION]);
        }
        dimension_sets.push(Vec::new());

        let mut root = Map::new();
        for (key, value) in &self.properties {
            root.insert(key.clone(), value.clone());
        }
        root.insert(TARGET_DIMENSION.to_owned(), json!(self.target));
        if let Some(function) = &self.function {
            root.insert(FUNCTION_DIMENSION.to_owned(), json!(function));
        }
        let mut definitions = Vec::new();
        for (metric, values) in &self.values {
            let start = chunk * MAX_VALUES_PER_METRIC;
            let Some(slice) = values.get(start..values.len().min(start + MAX_VALUES_PER_METRIC))
            else {
                continue;
            };
            let value = match slice {
                [] => continue,
                [single] => json!(single),
                many => json!(many),
            };
            root.insert(metric.name().to_owned(), value);
            definitions.push(json!({ "Name": metric.name(), "Unit": metric.unit().as_str() }));
        }
        root.insert(
            "_aws".to_owned(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": dimension_sets,
                    "Metrics": definitions,
                }],
            }),
        );
        Value::Object(root).to_string()
    }

    /// Render at the current time and write the lines to `sink`.
    pub fn emit_to(&self, sink: &MetricsSink) {
        if matches!(sink, MetricsSink::Disabled) {
            return;
        }
        for line in self.render(now_ms()) {
            sink.write_line(&line);
        }
    }

    /// Render at the current time and print the lines to stdout.
    pub fn emit(&self) {
        self.emit_to(&MetricsSink::Stdout);
    }
}

fn is_reserved_member(key: &str) -> bool {
    key == "_aws"
        || key == TARGET_DIMENSION
        || key == FUNCTION_DIMENSION
        || Metric::ALL.iter().any(|metric| metric.name() == key)
}

/// CloudWatch wants dimension values of 1 to 1024 printable ASCII characters, not all blank.
fn dimension_value(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '_'
            }
        })
        .take(MAX_DIMENSION_VALUE_LEN)
        .collect();
    if cleaned.trim().is_empty() {
        UNKNOWN_TARGET.to_owned()
    } else {
        cleaned
    }
}

fn lambda_function_name() -> Option<&'static str> {
    static NAME: OnceLock<Option<String>> = OnceLock::new();
    NAME.get_or_init(|| {
        std::env::var("AWS_LAMBDA_FUNCTION_NAME")
            .ok()
            .filter(|name| !name.is_empty())
    })
    .as_deref()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNITS: [&str; 27] = [
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ];
    const T0: i64 = 1_767_225_600_000;

    fn parse(line: &str) -> Value {
        assert!(!line.contains('\n'), "an EMF document is one line: {line}");
        serde_json::from_str(line).unwrap()
    }

    fn directive(doc: &Value) -> &Value {
        let directives = doc["_aws"]["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives.len(), 1);
        &directives[0]
    }

    /// Checks a document against the EMF specification's rules and returns metric → unit.
    fn assert_valid_emf(doc: &Value) -> BTreeMap<String, String> {
        assert!(doc["_aws"]["Timestamp"].is_i64());
        let directive = directive(doc);
        assert!(directive["Namespace"].is_string());
        for set in directive["Dimensions"].as_array().unwrap() {
            let set = set.as_array().unwrap();
            assert!(set.len() <= MAX_DIMENSIONS_PER_SET);
            for dimension in set {
                let value = &doc[dimension.as_str().unwrap()];
                assert!(
                    value.is_string(),
                    "dimension {dimension} needs a string member"
                );
            }
        }
        let metrics = directive["Metrics"].as_array().unwrap();
        assert!(!metrics.is_empty() && metrics.len() <= MAX_METRICS_PER_DIRECTIVE);
        let mut units = BTreeMap::new();
        for definition in metrics {
            let name = definition["Name"].as_str().unwrap();
            let unit = definition["Unit"].as_str().unwrap();
            assert!(
                UNITS.contains(&unit),
                "unit {unit} is not a CloudWatch unit"
            );
            match &doc[name] {
                Value::Number(_) => {}
                Value::Array(values) => {
                    assert!(!values.is_empty() && values.len() <= MAX_VALUES_PER_METRIC);
                    assert!(values.iter().all(Value::is_number));
                }
                other => panic!("metric {name} has no numeric member: {other}"),
            }
            assert!(units.insert(name.to_owned(), unit.to_owned()).is_none());
        }
        units
    }

    #[test]
    fn a_sync_batch_renders_one_emf_line_with_names_units_and_the_target() {
        let batch = MetricsBatch::new("prod")
            .with_function(None)
            .put(Metric::SyncDuration, 1234.5)
            .put(Metric::ResourcesCreated, 3.0)
            .put(Metric::PollerLag, 42.0)
            .put(Metric::SyncSucceeded, 1.0);

        let lines = batch.render(T0);

        assert_eq!(lines.len(), 1);
        let doc = parse(&lines[0]);
        let units = assert_valid_emf(&doc);
        assert_eq!(doc["_aws"]["Timestamp"], json!(T0));
        assert_eq!(directive(&doc)["Namespace"], "Ritmo/GitOps");
        assert_eq!(directive(&doc)["Dimensions"], json!([["Target"], []]));
        assert_eq!(doc["Target"], "prod");
        assert_eq!(doc["SyncDuration"], json!(1234.5));
        assert_eq!(doc["ResourcesCreated"], json!(3.0));
        let expected: BTreeMap<String, String> = [
            ("PollerLag", "Seconds"),
            ("ResourcesCreated", "Count"),
            ("SyncDuration", "Milliseconds"),
            ("SyncSucceeded", "Count"),
        ]
        .into_iter()
        .map(|(name, unit)| (name.to_owned(), unit.to_owned()))
        .collect();
        assert_eq!(units, expected);
    }

    #[test]
    fn the_function_name_is_a_separate_dimension_set() {
        let batch = MetricsBatch::new("prod")
            .with_function(Some("ritmo-applier"))
            .put(Metric::ApplyDuration, 10.0);

        let doc = parse(&batch.render(T0)[0]);

        assert_valid_emf(&doc);
        assert_eq!(
            directive(&doc)["Dimensions"],
            json!([["Target"], ["Target", "Function"], []])
        );
        assert_eq!(doc["Function"], "ritmo-applier");
    }

    #[test]
    fn every_metric_fits_in_one_directive_with_its_declared_unit() {
        let mut batch = MetricsBatch::new("prod").with_function(None);
        for (i, metric) in Metric::ALL.iter().enumerate() {
            batch.push(*metric, i as f64);
        }

        let lines = batch.render(T0);

        assert_eq!(lines.len(), 1);
        let units = assert_valid_emf(&parse(&lines[0]));
        assert_eq!(units.len(), Metric::ALL.len());
        for metric in Metric::ALL {
            assert_eq!(units[metric.name()], metric.unit().as_str());
        }
    }

    #[test]
    fn repeated_values_become_an_array_and_spill_past_one_hundred() {
        let mut batch = MetricsBatch::new("prod")
            .with_function(None)
            .put(Metric::SyncFailed, 1.0);
        for i in 0..250 {
            batch.push(Metric::PollerLag, f64::from(i));
        }

        let docs: Vec<Value> = batch.render(T0).iter().map(|l| parse(l)).collect();

        assert_eq!(docs.len(), 3);
        let mut lags = Vec::new();
        for doc in &docs {
            assert_valid_emf(doc);
            match &doc["PollerLag"] {
                Value::Array(values) => lags.extend(values.iter().map(|v| v.as_f64().unwrap())),
                single => lags.push(single.as_f64().unwrap()),
            }
        }
        assert_eq!(lags, (0..250).map(f64::from).collect::<Vec<_>>());
        assert_eq!(docs[0]["SyncFailed"], json!(1.0));
        assert!(docs[1].get("SyncFailed").is_none());
    }

    #[test]
    fn properties_are_plain_members_that_never_replace_a_metric() {
        let batch = MetricsBatch::new("prod")
            .with_function(Some("ritmo-planner"))
            .put(Metric::SyncDuration, 5.0)
            .property("sync_id", "0192f7c0-aaaa")
            .property("commit", "3f2a9c1")
            .property("SyncDuration", 99)
            .property("Target", "other")
            .property("Function", "other")
            .property("_aws", "nope");

        let doc = parse(&batch.render(T0)[0]);

        assert_valid_emf(&doc);
        assert_eq!(doc["sync_id"], "0192f7c0-aaaa");
        assert_eq!(doc["commit"], "3f2a9c1");
        assert_eq!(doc["SyncDuration"], json!(5.0));
        assert_eq!(doc["property_SyncDuration"], json!(99));
        assert_eq!(doc["Target"], "prod");
        assert_eq!(doc["property_Target"], "other");
        assert_eq!(doc["Function"], "ritmo-planner");
        assert_eq!(doc["property__aws"], "nope");
        let metric_names: Vec<&str> = directive(&doc)["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["Name"].as_str().unwrap())
            .collect();
        assert_eq!(metric_names, ["SyncDuration"]);
    }

    #[test]
    fn an_empty_batch_or_non_finite_values_render_nothing() {
        let batch = MetricsBatch::new("prod")
            .put(Metric::SyncDuration, f64::NAN)
            .put(Metric::PollerLag, f64::INFINITY);

        assert!(batch.is_empty());
        assert!(batch.render(T0).is_empty());
    }

    #[test]
    fn durations_are_converted_to_the_metric_unit() {
        let batch = MetricsBatch::new("prod")
            .with_function(None)
            .put_duration(Metric::PlanDuration, Duration::from_micros(1_500))
            .put_duration(Metric::PollerLag, Duration::from_millis(90_500));

        let doc = parse(&batch.render(T0)[0]);

        assert_eq!(doc["PlanDuration"], json!(1.5));
        assert_eq!(doc["PollerLag"], json!(90.5));
    }

    #[test]
    fn dimension_values_are_made_acceptable_to_cloudwatch() {
        let long = "x".repeat(2000);

        assert_eq!(dimension_value("prod-eu"), "prod-eu");
        assert_eq!(dimension_value("pröd\n"), "pr_d_");
        assert_eq!(dimension_value("   "), UNKNOWN_TARGET);
        assert_eq!(dimension_value(""), UNKNOWN_TARGET);
        assert_eq!(dimension_value(&long).len(), MAX_DIMENSION_VALUE_LEN);
    }

    #[test]
    fn metric_names_are_unique_pascal_case_and_never_a_dimension_name() {
        let mut names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();

        names.sort_unstable();
        names.dedup();

        assert_eq!(names.len(), Metric::ALL.len());
        for name in names {
            assert!(name.starts_with(|c: char| c.is_ascii_uppercase()));
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric()));
            assert!(name != TARGET_DIMENSION && name != FUNCTION_DIMENSION);
        }
    }

    #[test]
    fn a_capture_sink_keeps_emitted_lines_and_a_disabled_one_drops_them() {
        let capture = MetricsSink::capture();
        let disabled = MetricsSink::Disabled;
        let batch = MetricsBatch::new("staging")
            .with_function(None)
            .put(Metric::WebhookAccepted, 1.0);

        batch.emit_to(&capture);
        batch.emit_to(&disabled);

        let lines = capture.lines();
        assert_eq!(lines.len(), 1);
        let doc = parse(&lines[0]);
        assert_valid_emf(&doc);
        assert_eq!(doc["Target"], "staging");
        assert_eq!(doc["WebhookAccepted"], json!(1.0));
        assert!(disabled.lines().is_empty());
    }
}
