//! `/metrics` end to end: a real provider and consumer, a transfer and a refusal, then the
//! provider scraped in both formats and read by the Prometheus project's own Python parsers
//! (`prometheus_client`): the OpenMetrics parser for OpenMetrics, the classic text parser
//! for `text/plain;version=0.0.4`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::time::Duration;

use mesh_tests::{TestNode, python, wait_until, write_file};
use serde_json::Value;

/// One GET to the node's API with an `Accept` header (and the node's token unless `token`
/// says otherwise): (status, content type, body).
fn get(
    node: &TestNode,
    path: &str,
    accept: Option<&str>,
    token: Option<&str>,
) -> (u16, String, String) {
    let read = |name: &str| {
        std::fs::read_to_string(node.dir.join(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    let addr = read("api.addr");
    let token = token.map_or_else(|| read("api.token"), str::to_owned);
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect to the API");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n");
    if let Some(accept) = accept {
        let _ = write!(request, "Accept: {accept}\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// Parses `text` with `prometheus_client`'s OpenMetrics parser (`openmetrics`) or its
/// classic text parser (`text`): family name -> {type, unit, samples: [[name, labels, value]]}.
fn parse(parser: &str, text: &str) -> BTreeMap<String, Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "scrape.txt", text);
    let script = r#"
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families as classic
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
parse = openmetrics if sys.argv[1] == "openmetrics" else classic
families = {}
for f in parse(open(sys.argv[2], encoding="utf-8").read()):
    if f.name in families:
        raise SystemExit(f"family {f.name} parsed twice")
    families[f.name] = {
        "type": f.type,
        "unit": f.unit,
        "samples": [[s.name, s.labels, s.value if math.isfinite(s.value) else str(s.value)] for s in f.samples],
    }
print(json.dumps(families))
"#;
    let out = python(script, &[parser, file.to_str().unwrap()]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The value of the sample `name` with exactly `labels` in `families`.
fn value(
    families: &BTreeMap<String, Value>,
    family: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    let want: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect();
    families.get(family)?["samples"]
        .as_array()?
        .iter()
        .find_map(|s| (s[0] == name && s[1].as_object() == Some(&want)).then(|| s[2].as_f64())?)
}

#[test]
fn metrics_parse_in_both_formats_with_the_prometheus_parsers() {
    let sales = TestNode::start("sales", &[]);
    let mut csv = String::from("order_id,region,email\n");
    for i in 0..500 {
        let _ = writeln!(csv, "{i},EU,c{i}@example.com");
    }
    let path = write_file(sales.dir.parent().unwrap(), "orders.csv", &csv);
    let out = sales.cli(&[
        "publish",
        "orders",
        "--from",
        path.to_str().unwrap(),
        "--approval",
        "auto",
        "--purpose",
        "analytics",
        "--restricted",
        "email",
    ]);
    assert!(out.success, "{}", out.stderr);
    // churn joins sales' mesh with a ticket from sales.
    let ticket = sales
        .cli(&["mesh", "invite", "--domain", "churn", "--json"])
        .json()["ticket"]
        .as_str()
        .expect("a ticket")
        .to_owned();
    let mut churn = TestNode::init("churn", &[]);
    let joined = churn.cli(&["mesh", "join", &ticket]);
    assert!(joined.success, "mesh join: {}", joined.stderr);
    churn.run();
    wait_until(Duration::from_secs(20), || {
        churn.version_of("sales/orders").is_some()
    })
    .unwrap_or_else(|| panic!("churn never saw sales/orders: {}", churn.log()));
    churn.share_agreed("sales/orders", "analytics", &[]);
    let dir = tempfile::tempdir().unwrap();
    let fetched = churn
        .fetch(
            "sales/orders",
            &dir.path().join("orders.arrow"),
            &["--json"],
        )
        .json();
    let stream_bytes = fetched["bytes"].as_f64().expect("bytes");
    assert!(stream_bytes > 0.0, "{fetched}");
    // A refusal: the provider holds no version 9.
    let refused = churn.fetch(
        "sales/orders",
        &dir.path().join("v9.arrow"),
        &["--version", "9"],
    );
    assert!(
        !refused.success && refused.stderr.contains("unknown_version"),
        "{}",
        refused.stderr
    );
    // A wrong token and a path no route matches (its id must not become a label).
    assert_eq!(get(&sales, "/v1/status", None, Some("wrong")).0, 401);
    for i in 0..20 {
        let path = format!("/v1/no/such/route-{}", 4242 + i);
        assert_eq!(get(&sales, &path, None, None).0, 404);
    }

    // A second version, which churn hears of by gossip (or, if anti-entropy is faster, by
    // gossip as a duplicate): either way a validation verdict.
    let out = sales.cli(&[
        "publish",
        "orders",
        "--from",
        path.to_str().unwrap(),
        "--approval",
        "auto",
        "--purpose",
        "analytics",
        "--restricted",
        "email",
    ]);
    assert!(out.success, "{}", out.stderr);
    let verdict = |outcome: &str| {
        churn
            .metric(&format!(
                "meshnode_gossip_validation_total{{outcome=\"{outcome}\"}}"
            ))
            .unwrap_or(0.0)
    };
    wait_until(Duration::from_secs(20), || {
        verdict("accepted") + verdict("ignored") >= 1.0
    })
    .unwrap_or_else(|| panic!("churn validated no gossip: {}", churn.log()));
    // Every verdict is timed: the histogram counts at least the verdicts, and its sum is a
    // time (positive, well under the seconds this test runs).
    let verdicts = verdict("accepted") + verdict("ignored") + verdict("rejected");
    let timed = churn
        .metric("meshnode_gossip_validation_seconds_count")
        .unwrap_or(0.0);
    let spent = churn
        .metric("meshnode_gossip_validation_seconds_sum")
        .unwrap_or(-1.0);
    assert!(
        timed >= verdicts && timed >= 1.0,
        "{timed} timed, {verdicts} verdicts"
    );
    assert!(
        spent > 0.0 && spent < 5.0,
        "validation took {spent} s in all"
    );

    // The provider's data-plane side ends after the consumer's; wait for its count.
    let served = "meshnode_transfers_total{role=\"provider\",outcome=\"completed\"}";
    wait_until(Duration::from_secs(10), || {
        sales.metric(served) == Some(1.0)
    })
    .expect("the provider never counted the served transfer");

    let (status, om_type, om_text) = get(
        &sales,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
        None,
    );
    assert_eq!(status, 200, "{om_text}");
    assert_eq!(
        om_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om_text.ends_with("# EOF\n"));
    let (status, text_type, text) = get(&sales, "/metrics", Some("text/plain;version=0.0.4"), None);
    assert_eq!(status, 200, "{text}");
    assert_eq!(text_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
    // curl's default and no header at all get the classic format too.
    for accept in [Some("*/*"), None] {
        assert_eq!(
            get(&sales, "/metrics", accept, None).1,
            text_type,
            "{accept:?}"
        );
    }

    let om = parse("openmetrics", &om_text);
    let classic = parse("text", &text);
    // Both parsers see the same families with the same types: no counter split from its
    // samples, no sample filed under a family of its own.
    let kinds = |families: &BTreeMap<String, Value>| -> BTreeMap<String, String> {
        families
            .iter()
            .map(|(k, v)| (k.clone(), v["type"].as_str().unwrap().to_owned()))
            .collect()
    };
    assert_eq!(kinds(&om), kinds(&classic));
    assert!(
        !kinds(&classic).values().any(|t| t == "unknown"),
        "{:?}",
        kinds(&classic)
    );

    for families in [&om, &classic] {
        // The transfer: bytes on the wire at least the stream's, one completion, a duration.
        let sent = value(
            families,
            "meshnode_transfer_sent_bytes",
            "meshnode_transfer_sent_bytes_total",
            &[],
        )
        .expect("bytes sent");
        assert!(sent >= stream_bytes, "sent {sent} < stream {stream_bytes}");
        assert_eq!(families["meshnode_transfer_sent_bytes"]["type"], "counter");
        let completed = [("role", "provider"), ("outcome", "completed")];
        assert_eq!(
            value(
                families,
                "meshnode_transfers",
                "meshnode_transfers_total",
                &completed
            ),
            Some(1.0)
        );
        let provider = [("role", "provider")];
        assert_eq!(
            value(
                families,
                "meshnode_transfer_duration_seconds",
                "meshnode_transfer_duration_seconds_count",
                &provider
            ),
            Some(1.0)
        );
        assert_eq!(
            families["meshnode_transfer_duration_seconds"]["type"],
            "histogram"
        );
        let inf = [("role", "provider"), ("le", "+Inf")];
        assert_eq!(
            value(
                families,
                "meshnode_transfer_duration_seconds",
                "meshnode_transfer_duration_seconds_bucket",
                &inf
            ),
            Some(1.0)
        );
        // The refusal, by reason.
        let reason = [("role", "provider"), ("reason", "unknown_version")];
        assert_eq!(
            value(
                families,
                "meshnode_transfer_refusals",
                "meshnode_transfer_refusals_total",
                &reason
            ),
            Some(1.0)
        );
        // The agreed contract, by role and state.
        let agreed = [("role", "provider"), ("state", "agreed")];
        assert_eq!(
            value(
                families,
                "meshnode_contracts",
                "meshnode_contracts",
                &agreed
            ),
            Some(1.0)
        );
        // The contract's decisions on the provider: agreed once, nothing rejected.
        let decided = |state: &str| {
            let labels = [("role", "provider"), ("state", state)];
            value(
                families,
                "meshnode_contract_decisions",
                "meshnode_contract_decisions_total",
                &labels,
            )
        };
        assert_eq!(
            (decided("agreed"), decided("rejected")),
            (Some(1.0), Some(0.0))
        );
        // API requests by route template and status.
        let ok = [
            ("method", "GET"),
            ("route", "/v1/status"),
            ("status", "200"),
        ];
        assert!(
            value(
                families,
                "meshnode_api_requests",
                "meshnode_api_requests_total",
                &ok
            ) >= Some(1.0)
        );
        let denied = [
            ("method", "GET"),
            ("route", "/v1/status"),
            ("status", "401"),
        ];
        assert_eq!(
            value(
                families,
                "meshnode_api_requests",
                "meshnode_api_requests_total",
                &denied
            ),
            Some(1.0)
        );
        let unmatched = [("method", "GET"), ("route", "unmatched"), ("status", "404")];
        assert_eq!(
            value(
                families,
                "meshnode_api_requests",
                "meshnode_api_requests_total",
                &unmatched
            ),
            Some(20.0)
        );
        // Existing names stay as they were.
        assert_eq!(families["meshnode_messages_rejected"]["type"], "counter");
        // The process: resident memory, CPU time, descriptors, start time.
        let rss = value(
            families,
            "process_resident_memory_bytes",
            "process_resident_memory_bytes",
            &[],
        )
        .expect("resident memory");
        assert!(rss > 1e6, "rss {rss}");
        assert!(
            value(
                families,
                "process_cpu_seconds",
                "process_cpu_seconds_total",
                &[]
            ) > Some(0.0)
        );
        assert!(value(families, "process_open_fds", "process_open_fds", &[]) > Some(3.0));
        let start = value(
            families,
            "process_start_time_seconds",
            "process_start_time_seconds",
            &[],
        )
        .expect("start time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            start > now - 600.0 && start <= now + 1.0,
            "start {start}, now {now}"
        );
    }
    // Twenty paths, one series: a client cannot grow the label set.
    assert!(
        !text.contains("route-42") && !om_text.contains("route-42"),
        "a raw path became a label"
    );
    // One request counter, and the duration histogram's 8 buckets, +Inf, sum and count.
    assert_eq!(
        text.matches("route=\"unmatched\"").count(),
        1 + 8 + 1 + 2,
        "{text}"
    );
    // Units survive in OpenMetrics only.
    assert_eq!(om["meshnode_transfer_sent_bytes"]["unit"], "bytes");

    // The consumer counts its side.
    let (_, _, consumer_text) = get(&churn, "/metrics", None, None);
    let consumer = parse("text", &consumer_text);
    assert_eq!(
        value(
            &consumer,
            "meshnode_transfer_received_bytes",
            "meshnode_transfer_received_bytes_total",
            &[]
        ),
        Some(stream_bytes)
    );
    let received_refusal = [("role", "consumer"), ("reason", "unknown_version")];
    assert_eq!(
        value(
            &consumer,
            "meshnode_transfer_refusals",
            "meshnode_transfer_refusals_total",
            &received_refusal
        ),
        Some(1.0)
    );
    let agreed = [("role", "consumer"), ("state", "agreed")];
    assert_eq!(
        value(
            &consumer,
            "meshnode_contracts",
            "meshnode_contracts",
            &agreed
        ),
        Some(1.0)
    );
    assert_eq!(consumer["meshnode_gossip_validation"]["type"], "counter");
    let verdicts: f64 = ["accepted", "ignored"]
        .iter()
        .filter_map(|o| {
            value(
                &consumer,
                "meshnode_gossip_validation",
                "meshnode_gossip_validation_total",
                &[("outcome", o)],
            )
        })
        .sum();
    assert!(
        verdicts >= 1.0,
        "{:?}",
        consumer["meshnode_gossip_validation"]
    );
}
