//! The two text formats `/metrics` speaks, and the choice between them.
//!
//! The registries encode OpenMetrics 1.0 text (`prometheus-client` has no other text
//! encoder). A scraper that asks for the classic Prometheus text format (version 0.0.4)
//! gets the same families converted here: [`parse_openmetrics`] reads the exposition into
//! [`MetricFamily`] values, [`encode_prometheus`] writes them the way the classic format
//! wants them, following the reference client of the Prometheus project (`generate_latest`
//! of the Python client) and the text format's rules:
//!
//! - a counter family is named after its samples (`x_total`), since a classic parser groups
//!   samples under the `# TYPE` name;
//! - an info family becomes a gauge named `x_info`, a state set a gauge, an unknown family
//!   `untyped`, a gauge histogram a histogram whose `_gsum` and `_gcount` become gauges;
//! - no `# UNIT` lines, no `# EOF`, no exemplars, no `_created` samples (the classic format
//!   has no creation time);
//! - `# HELP` escapes only `\` and line feeds; label values escape `\`, `"` and line feeds;
//! - timestamps are integer milliseconds instead of seconds.
//!
//! Why not the crate's protobuf encoder: it needs `prost-build` and a protobuf compiler at
//! build time, a large price for one text conversion.

use std::fmt::Write as _;

/// Content type of an OpenMetrics answer.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of a classic Prometheus text answer.
pub(crate) const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Longest `Accept` header considered; longer ones get the default format.
const MAX_ACCEPT_LEN: usize = 4096;

/// One of the formats `/metrics` answers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// OpenMetrics 1.0 text.
    OpenMetrics,
    /// The classic Prometheus text format, version 0.0.4.
    Prometheus,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it accepts
    /// `application/openmetrics-text` (any version) at least as much as plain text, the
    /// classic text format otherwise (no header, `*/*`, `text/plain;version=0.0.4`).
    /// Media ranges are ranked by their `q` parameter as HTTP content negotiation does.
    pub(crate) fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept.filter(|a| a.len() <= MAX_ACCEPT_LEN) else {
            return Format::Prometheus;
        };
        let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1.0), |(_, v)| v.trim().parse::<f32>().ok())
                .filter(|q| q.is_finite())
                .unwrap_or(0.0)
                .clamp(0.0, 1.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::Prometheus => PROMETHEUS_CONTENT_TYPE,
        }
    }

    /// `openmetrics`, a complete OpenMetrics exposition, in this format.
    pub(crate) fn render(self, openmetrics: String) -> Result<String, ExpositionError> {
        match self {
            Format::OpenMetrics => Ok(openmetrics),
            Format::Prometheus => Ok(encode_prometheus(&parse_openmetrics(&openmetrics)?)),
        }
    }
}

/// An OpenMetrics exposition that does not follow the format.
#[derive(Debug, thiserror::Error)]
#[error("line {line} of the OpenMetrics exposition: {reason}")]
pub(crate) struct ExpositionError {
    /// 1-based line number.
    line: usize,
    /// What is wrong with it.
    reason: String,
}

/// The type of a metric family, as OpenMetrics names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MetricType {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`.
    Histogram,
    /// `gaugehistogram`.
    GaugeHistogram,
    /// `summary`.
    Summary,
    /// `info`.
    Info,
    /// `stateset`.
    StateSet,
    /// `unknown`.
    Unknown,
}

impl MetricType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "gaugehistogram" => MetricType::GaugeHistogram,
            "summary" => MetricType::Summary,
            "info" => MetricType::Info,
            "stateset" => MetricType::StateSet,
            "unknown" => MetricType::Unknown,
            _ => return None,
        })
    }

    /// Suffixes a sample of a family of this type may add to the family name.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            MetricType::Counter => &["_total", "_created"],
            MetricType::Histogram => &["_bucket", "_count", "_sum", "_created"],
            MetricType::GaugeHistogram => &["_bucket", "_gcount", "_gsum"],
            MetricType::Summary => &["", "_count", "_sum", "_created"],
            MetricType::Info => &["_info"],
            MetricType::Gauge | MetricType::StateSet | MetricType::Unknown => &[""],
        }
    }

    /// The classic format's name suffix and type for a family of this type.
    fn classic(self) -> (&'static str, &'static str) {
        match self {
            MetricType::Counter => ("_total", "counter"),
            MetricType::Gauge | MetricType::StateSet => ("", "gauge"),
            MetricType::Info => ("_info", "gauge"),
            MetricType::Histogram | MetricType::GaugeHistogram => ("", "histogram"),
            MetricType::Summary => ("", "summary"),
            MetricType::Unknown => ("", "untyped"),
        }
    }
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Sample {
    /// Full sample name (family name plus suffix).
    pub(crate) name: String,
    /// Label names and unescaped values, in order.
    pub(crate) labels: Vec<(String, String)>,
    /// The value as written (checked to be a number).
    pub(crate) value: String,
    /// Timestamp in seconds, if the sample has one.
    pub(crate) timestamp: Option<f64>,
}

/// One metric family: descriptors and samples.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MetricFamily {
    /// Family name (without the sample suffixes).
    pub(crate) name: String,
    /// Its type.
    pub(crate) kind: MetricType,
    /// Unescaped help text, if given.
    pub(crate) help: Option<String>,
    /// Its samples, in order.
    pub(crate) samples: Vec<Sample>,
}

/// Reads an OpenMetrics text exposition (which must end with `# EOF`).
pub(crate) fn parse_openmetrics(text: &str) -> Result<Vec<MetricFamily>, ExpositionError> {
    let mut families: Vec<MetricFamily> = Vec::new();
    let mut eof = false;
    for (index, line) in text.lines().enumerate() {
        let err = |reason: String| ExpositionError {
            line: index + 1,
            reason,
        };
        if eof {
            return Err(err("text after `# EOF`".into()));
        }
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(descriptor) = line.strip_prefix("# ") {
            let (keyword, rest) = descriptor
                .split_once(' ')
                .ok_or_else(|| err(format!("descriptor without a metric name: `{line}`")))?;
            let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
            check_name(name).map_err(&err)?;
            let family = match families.last_mut() {
                Some(f) if f.name == name && f.samples.is_empty() => f,
                _ => {
                    if families.iter().any(|f| f.name == name) {
                        return Err(err(format!("metric family `{name}` appears twice")));
                    }
                    families.push(MetricFamily {
                        name: name.to_owned(),
                        kind: MetricType::Unknown,
                        help: None,
                        samples: Vec::new(),
                    });
                    families.last_mut().expect("just pushed")
                }
            };
            match keyword {
                "TYPE" => {
                    family.kind = MetricType::parse(value)
                        .ok_or_else(|| err(format!("unknown metric type `{value}`")))?;
                }
                "HELP" => family.help = Some(unescape_help(value)),
                // The classic format has no units; the unit is already part of the name.
                "UNIT" => {}
                other => return Err(err(format!("unknown descriptor `# {other}`"))),
            }
            continue;
        }
        let sample = parse_sample(line).map_err(&err)?;
        let belongs = families.last().is_some_and(|f| {
            sample
                .name
                .strip_prefix(f.name.as_str())
                .is_some_and(|suffix| f.kind.suffixes().contains(&suffix))
        });
        if !belongs {
            if families.iter().any(|f| f.name == sample.name) {
                return Err(err(format!(
                    "sample `{}` does not belong to the family before it",
                    sample.name
                )));
            }
            // A sample without descriptors is a family of unknown type.
            families.push(MetricFamily {
                name: sample.name.clone(),
                kind: MetricType::Unknown,
                help: None,
                samples: Vec::new(),
            });
        }
        families
            .last_mut()
            .expect("a family exists")
            .samples
            .push(sample);
    }
    if !eof {
        return Err(ExpositionError {
            line: text.lines().count(),
            reason: "missing `# EOF`".into(),
        });
    }
    Ok(families)
}

/// Checks a metric or label name: `[a-zA-Z_:][a-zA-Z0-9_:]*` (no colon in label names,
/// which callers check with [`check_label_name`]).
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid metric name"))
    }
}

fn check_label_name(name: &str) -> Result<(), String> {
    if !name.contains(':') && check_name(name).is_ok() {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid label name"))
    }
}

/// Undoes OpenMetrics escaping (`\\`, `\"`, `\n`).
fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('n') => out.push('\n'),
            other => return Err(format!("bad escape `\\{}`", other.unwrap_or(' '))),
        }
    }
    Ok(out)
}

/// Undoes the escaping of a `# HELP` text, leaving a backslash that starts no escape as it
/// is (as the Prometheus project's parser does: `prometheus-client` writes help texts
/// unescaped).
fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some('\\')) => out.push('\\'),
            ('\\', Some('"')) => out.push('"'),
            ('\\', Some('n')) => out.push('\n'),
            _ => {
                out.push(c);
                continue;
            }
        }
        chars.next();
    }
    out
}

/// `name[{labels}] value [timestamp] [# {exemplar labels} value [timestamp]]`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, remainder) = parse_labels(after)?;
        labels = parsed;
        rest = remainder;
    }
    let rest = rest
        .strip_prefix(' ')
        .ok_or_else(|| format!("sample `{name}` has no value"))?;
    // An exemplar follows ` # `; the value and timestamp cannot contain `#`.
    let (point, _exemplar) = rest.split_once(" # ").unwrap_or((rest, ""));
    let mut fields = point.split(' ');
    let value = fields.next().unwrap_or("");
    parse_number(value).ok_or_else(|| format!("`{value}` is not a number"))?;
    let timestamp = match fields.next() {
        None => None,
        Some(ts) => Some(
            parse_number(ts)
                .filter(|t| t.is_finite())
                .ok_or_else(|| format!("`{ts}` is not a timestamp"))?,
        ),
    };
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected `{extra}` after the sample value"));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value: value.to_owned(),
        timestamp,
    })
}

/// A number as OpenMetrics writes them (`1`, `-2.5e3`, `+Inf`, `NaN`).
fn parse_number(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) => s.parse().ok(),
        _ => None,
    }
}

/// Labels after the opening `{`; returns them and the text after the closing `}`.
#[allow(clippy::type_complexity)]
fn parse_labels(mut s: &str) -> Result<(Vec<(String, String)>, &str), String> {
    let mut labels = Vec::new();
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let (name, rest) = s
            .split_once("=\"")
            .ok_or_else(|| "a label without `=\"`".to_owned())?;
        check_label_name(name)?;
        // The value ends at the first `"` not escaped by a backslash.
        let mut end = None;
        let mut escaped = false;
        for (i, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.ok_or_else(|| format!("label `{name}` has no closing quote"))?;
        labels.push((name.to_owned(), unescape(&rest[..end])?));
        s = &rest[end + 1..];
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err(format!("`,` or `}}` expected after label `{name}`"));
        }
    }
}

/// Writes `families` in the classic Prometheus text format, version 0.0.4.
pub(crate) fn encode_prometheus(families: &[MetricFamily]) -> String {
    let mut out = String::new();
    for family in families {
        let (suffix, kind) = family.kind.classic();
        let name = format!("{}{suffix}", family.name);
        // Samples a classic parser would not file under this family, as their own gauges.
        let mut gauges: Vec<(&str, Vec<&Sample>)> = Vec::new();
        let mut samples = Vec::new();
        for sample in &family.samples {
            let own_suffix = &sample.name[family.name.len().min(sample.name.len())..];
            match own_suffix {
                "_created" => {}
                "_gsum" | "_gcount" => match gauges.iter_mut().find(|(s, _)| *s == own_suffix) {
                    Some((_, list)) => list.push(sample),
                    None => gauges.push((own_suffix, vec![sample])),
                },
                _ => samples.push(sample),
            }
        }
        write_descriptors(&mut out, &name, family.help.as_deref(), kind);
        for sample in samples {
            write_sample(&mut out, sample);
        }
        gauges.sort_by_key(|(s, _)| *s);
        for (gauge_suffix, list) in gauges {
            let gauge = format!("{}{gauge_suffix}", family.name);
            write_descriptors(&mut out, &gauge, family.help.as_deref(), "gauge");
            for sample in list {
                write_sample(&mut out, sample);
            }
        }
    }
    out
}

fn write_descriptors(out: &mut String, name: &str, help: Option<&str>, kind: &str) {
    if let Some(help) = help {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {name} {help}");
    }
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn write_sample(out: &mut String, sample: &Sample) {
    out.push_str(&sample.name);
    if !sample.labels.is_empty() {
        out.push('{');
        for (i, (name, value)) in sample.labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let value = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(out, "{name}=\"{value}\"");
        }
        out.push('}');
    }
    let _ = write!(out, " {}", sample.value);
    if let Some(seconds) = sample.timestamp {
        let _ = write!(out, " {}", (seconds * 1000.0).round() as i64);
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::metrics::info::Info;
    use prometheus_client::registry::{Registry, Unit};

    fn openmetrics(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn accept_headers_choose_the_format() {
        use Format::*;
        let cases = [
            (None, Prometheus),
            (Some("*/*"), Prometheus),
            (Some("text/plain;version=0.0.4"), Prometheus),
            (Some("text/plain; version=0.0.4; q=1"), Prometheus),
            (
                Some("application/openmetrics-text; version=1.0.0"),
                OpenMetrics,
            ),
            (
                Some("application/openmetrics-text;version=0.0.1"),
                OpenMetrics,
            ),
            (Some("Application/OpenMetrics-Text"), OpenMetrics),
            // What Prometheus 2 sends: OpenMetrics ranked first.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                OpenMetrics,
            ),
            // What Prometheus 3 sends.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
                ),
                OpenMetrics,
            ),
            // Plain text preferred over OpenMetrics.
            (
                Some("application/openmetrics-text;q=0.2,text/plain;version=0.0.4;q=0.9"),
                Prometheus,
            ),
            (Some("application/openmetrics-text;q=0"), Prometheus),
            (Some("application/openmetrics-text;q=nonsense"), Prometheus),
            (Some("application/json"), Prometheus),
        ];
        for (accept, want) in cases {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
        let long = format!("{}application/openmetrics-text", " ".repeat(MAX_ACCEPT_LEN));
        assert_eq!(Format::negotiate(Some(&long)), Prometheus);
    }

    #[test]
    fn counters_are_named_after_their_samples_and_units_dropped() {
        let mut registry = Registry::with_prefix("meshnode");
        let counter: Counter = Counter::default();
        counter.inc_by(7);
        registry.register_with_unit("transfer_sent", "Bytes sent", Unit::Bytes, counter.clone());
        let text = openmetrics(&registry);
        assert!(
            text.contains("# UNIT meshnode_transfer_sent_bytes bytes"),
            "{text}"
        );
        let classic = Format::Prometheus.render(text).unwrap();
        assert_eq!(
            classic,
            "# HELP meshnode_transfer_sent_bytes_total Bytes sent.\n\
             # TYPE meshnode_transfer_sent_bytes_total counter\n\
             meshnode_transfer_sent_bytes_total 7\n"
        );
    }

    #[test]
    fn histograms_keep_their_buckets_and_info_becomes_a_gauge() {
        let mut registry = Registry::default();
        let histogram = Histogram::new([0.5, 1.0]);
        histogram.observe(0.7);
        registry.register("duration_seconds", "Durations", histogram);
        registry.register(
            "build",
            "Build",
            Info::new(vec![("version".to_owned(), "1.2".to_owned())]),
        );
        let classic = Format::Prometheus.render(openmetrics(&registry)).unwrap();
        assert_eq!(
            classic,
            "# HELP duration_seconds Durations.\n\
             # TYPE duration_seconds histogram\n\
             duration_seconds_sum 0.7\n\
             duration_seconds_count 1\n\
             duration_seconds_bucket{le=\"0.5\"} 0\n\
             duration_seconds_bucket{le=\"1.0\"} 1\n\
             duration_seconds_bucket{le=\"+Inf\"} 1\n\
             # HELP build_info Build.\n\
             # TYPE build_info gauge\n\
             build_info{version=\"1.2\"} 1\n"
        );
    }

    #[test]
    fn awkward_label_values_survive_the_conversion() {
        let mut registry = Registry::default();
        let family: Family<Vec<(String, String)>, Counter> = Family::default();
        let awkward = "a \"quoted\" } # {x=\"1\"} 2, back\\slash\nnew line";
        family
            .get_or_create(&vec![("route".to_owned(), awkward.to_owned())])
            .inc();
        registry.register("requests", "Requests", family);
        let text = openmetrics(&registry);
        let families = parse_openmetrics(&text).unwrap();
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].kind, MetricType::Counter);
        assert_eq!(
            families[0].samples[0].labels,
            vec![("route".to_owned(), awkward.to_owned())]
        );
        let classic = encode_prometheus(&families);
        assert!(
            classic.contains(
                "requests_total{route=\"a \\\"quoted\\\" } # {x=\\\"1\\\"} 2, back\\\\slash\\nnew line\"} 1\n"
            ),
            "{classic}"
        );
    }

    #[test]
    fn exemplars_created_and_timestamps_follow_the_classic_rules() {
        let text = "# HELP x Help with \\\\ and \\\" and \\n.\n\
                    # TYPE x counter\n\
                    x_total{a=\"1\"} 3 1700000000.5 # {trace=\"t\"} 1.0 1700000000\n\
                    x_created{a=\"1\"} 1699999999\n\
                    # TYPE g gaugehistogram\n\
                    g_bucket{le=\"+Inf\"} 2\n\
                    g_gcount 2\n\
                    g_gsum 5\n\
                    orphan 1\n\
                    # EOF\n";
        let classic = encode_prometheus(&parse_openmetrics(text).unwrap());
        assert_eq!(
            classic,
            "# HELP x_total Help with \\\\ and \" and \\n.\n\
             # TYPE x_total counter\n\
             x_total{a=\"1\"} 3 1700000000500\n\
             # TYPE g histogram\n\
             g_bucket{le=\"+Inf\"} 2\n\
             # TYPE g_gcount gauge\n\
             g_gcount 2\n\
             # TYPE g_gsum gauge\n\
             g_gsum 5\n\
             # TYPE orphan untyped\n\
             orphan 1\n"
        );
    }

    #[test]
    fn help_texts_written_unescaped_are_read_as_written() {
        // prometheus-client does not escape help texts: a lone backslash stays one.
        let text = "# HELP x Path C:\\dir\\ and \\s.\n# TYPE x gauge\nx 1\n# EOF\n";
        let families = parse_openmetrics(text).unwrap();
        assert_eq!(families[0].help.as_deref(), Some("Path C:\\dir\\ and \\s."));
        assert_eq!(
            encode_prometheus(&families),
            "# HELP x Path C:\\\\dir\\\\ and \\\\s.\n# TYPE x gauge\nx 1\n"
        );
    }

    #[test]
    fn malformed_expositions_are_refused_with_the_line() {
        let cases = [
            ("x 1\n", "missing `# EOF`"),
            ("# TYPE x counter\nx_total 1\n# EOF\nx 2\n", "line 4"),
            ("# TYPE x sometype\n# EOF\n", "unknown metric type"),
            ("x{a=\"1} 1\n# EOF\n", "no closing quote"),
            ("x{a=1} 1\n# EOF\n", "without `=\"`"),
            ("x one\n# EOF\n", "not a number"),
            ("x 1 2 3\n# EOF\n", "unexpected `3`"),
            ("9x 1\n# EOF\n", "not a valid metric name"),
            ("x{a=\"\\q\"} 1\n# EOF\n", "bad escape"),
            (
                "# TYPE x gauge\nx 1\n# TYPE y gauge\ny 1\n# TYPE x gauge\n# EOF\n",
                "twice",
            ),
        ];
        for (text, want) in cases {
            let e = parse_openmetrics(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
