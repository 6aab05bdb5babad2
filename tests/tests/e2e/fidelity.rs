//! Data fidelity end to end: a CSV full of awkward values is published through a real daemon,
//! fetched by a consumer under a contract, and compared column by column (type and every
//! value) with what `pyarrow.csv.read_csv` makes of the same file. Where meshnode differs on
//! purpose, the test asserts meshnode's values and says why.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use mesh_tests::{TestNode, python, require_pyarrow, wait_until, write_file};
use serde_json::{Value, json};

/// Every awkward value we could think of. Columns marked (differs) are the deliberate
/// differences checked in [`csv_values_survive_publish_and_fetch_as_pyarrow_reads_them`].
const AWKWARD_CSV: &str = concat!(
    "id,text,näme 名,empty_str,na_like,zeros,extreme,float,zoned,naive,frac,mixed_zone,",
    "flag,day,date_and_time,nan_num,int_na,all_empty\n",
    // Row 1: quotes, commas and a doubled quote; zoned with Z.
    "1,\"Smith, \"\"JJ\"\"\",José,x,NA,007,-9223372036854775808,1.5,2024-12-31T00:00:00Z,",
    "2024-12-31 08:00:00,2024-12-31T00:00:00.123456789,2024-12-31T00:00:00Z,true,2024-02-29,",
    "2024-12-31,1.5,1,\n",
    // Row 2: a line break and a tab inside quotes; a +02:00 offset; an empty field.
    "2,\"line one\nline\ttwo\",中文 😀,,null,010,9223372036854775807,-0.0,",
    "2024-12-31T00:00:00+02:00,2024-12-31 09:30:00,2024-12-31T00:00:01.5,2024-12-31T00:00:00,",
    "False,1970-01-01,2024-12-31T00:00:00,NaN,NA,\n",
    // Row 3: a quoted empty string; a -05:30 offset; empty numbers.
    "3,\"\",\"\",\"\",NaN,000,0,1e300,2024-06-01T12:00:00-05:30,,,x,TRUE,,,,2,\"\"\n",
    // Row 4: CRLF-free plain row with NA-like text and empty time fields.
    "4,plain,ascii,\" \",N/A,1,-1,,,2000-01-01 00:00:00,2000-01-01T00:00:00,y,,2000-12-31,,2.5,3,\n",
    // Row 5: more NA-like text.
    "5,\"a,b,c\",Ω,tab\there,-,2,1,3,2024-12-31T23:59:59Z,,,z,false,,,3,4,\n",
);

/// Reads the fetched Arrow file and the source CSV with pyarrow and prints, per column, its
/// type and its values as text (timestamps and dates as integers since the epoch, floats by
/// `repr`, so that NaN and -0.0 compare).
const COMPARE: &str = r#"
import json, sys
import pyarrow as pa, pyarrow.csv as pc, pyarrow.ipc as ipc
fetched = ipc.open_file(sys.argv[1]).read_all()
convert = pc.ConvertOptions(null_values=sys.argv[3].split(','), strings_can_be_null=True) if sys.argv[3] else None
reference = pc.read_csv(sys.argv[2]) if not sys.argv[3] else pc.read_csv(sys.argv[2], convert_options=convert)
def describe(table):
    out = {}
    for field, col in zip(table.schema, table.columns):
        if pa.types.is_timestamp(field.type):
            col = col.cast(pa.int64())
        elif pa.types.is_date32(field.type):
            col = col.cast(pa.int32())
        values = [None if v is None else repr(v) if isinstance(v, float) else str(v) if not isinstance(v, bool) else ('true' if v else 'false') for v in col.to_pylist()]
        out[field.name] = {'type': str(field.type), 'values': values}
    return out
print(json.dumps({'order': [f.name for f in fetched.schema], 'fetched': describe(fetched), 'pyarrow': describe(reference)}, ensure_ascii=False))
"#;

/// Publishes `path` as `name` with automatic approval for `analytics`, plus `extra` flags.
fn publish(node: &TestNode, name: &str, path: &Path, extra: &[&str]) {
    let mut args = vec![
        "publish",
        name,
        "--from",
        path.to_str().unwrap(),
        "--approval",
        "auto",
        "--purpose",
        "analytics",
    ];
    args.extend(extra);
    let out = node.cli(&args);
    assert!(out.success, "publish {name} failed: {}", out.stderr);
}

/// Agrees a contract on `product`, fetches it into `out` and compares it with pyarrow's
/// reading of `source` (with `null_values`, comma-separated, when not empty).
fn fetch_and_compare(
    consumer: &TestNode,
    product: &str,
    out: &Path,
    source: &Path,
    null_values: &str,
) -> Value {
    let v = consumer
        .cli(&[
            "share",
            "request",
            product,
            "--purpose",
            "analytics",
            "--json",
        ])
        .json();
    assert_eq!(v["state"], "agreed", "{v}");
    let fetched = consumer.fetch(product, out, &["--json"]);
    assert!(fetched.success, "fetch failed: {}", fetched.stderr);
    serde_json::from_str(&python(
        COMPARE,
        &[out.to_str().unwrap(), source.to_str().unwrap(), null_values],
    ))
    .unwrap()
}

/// `(type, values)` of a column in one reading.
fn column(report: &Value, side: &str, name: &str) -> (String, Vec<Value>) {
    let c = &report[side][name];
    (
        c["type"].as_str().unwrap_or_default().to_string(),
        c["values"].as_array().cloned().unwrap_or_default(),
    )
}

#[test]
fn csv_values_survive_publish_and_fetch_as_pyarrow_reads_them() {
    if !require_pyarrow() {
        return;
    }
    let sales = TestNode::start("sales", &[]);
    let source = write_file(sales.dir.parent().unwrap(), "awkward.csv", AWKWARD_CSV);
    publish(&sales, "awkward", &source, &[]);
    publish(&sales, "awkward-na", &source, &["--null-values", "NA,null"]);
    // Refused inputs: the error names the line and what to do, and nothing is published.
    for (name, csv, expected) in [
        (
            "dup",
            "id,a,a\n1,2,3\n",
            "line 1: column name `a` is used twice",
        ),
        (
            "noname",
            "id,,b\n1,2,3\n",
            "line 1: column 2 of the header row has no name",
        ),
        (
            "unclosed",
            "id,a\n1,x\n2,\"oops\n3,y\n",
            "line 3: a quoted field opens",
        ),
    ] {
        let path = write_file(sales.dir.parent().unwrap(), &format!("{name}.csv"), csv);
        let out = sales.cli(&["publish", name, "--from", path.to_str().unwrap()]);
        assert!(!out.success, "{name} was accepted");
        assert!(out.stderr.contains(expected), "{name}: {}", out.stderr);
        assert_eq!(sales.version_of(&format!("sales/{name}")), None, "{name}");
    }
    let churn = TestNode::start_joining("churn", &sales);
    wait_until(Duration::from_secs(20), || {
        churn.version_of("sales/awkward").is_some()
            && churn.version_of("sales/awkward-na").is_some()
    })
    .unwrap_or_else(|| panic!("catalog never synced: {}", churn.log()));
    let dir = tempfile::tempdir().unwrap();

    let report = fetch_and_compare(
        &churn,
        "sales/awkward",
        &dir.path().join("awkward.arrow"),
        &source,
        "",
    );
    // Deliberate differences: (column, meshnode's type, meshnode's values, pyarrow's type).
    let s = |v: &str| json!(v);
    let n = Value::Null;
    let differs: BTreeMap<&str, (&str, Vec<Value>, &str)> = BTreeMap::from([
        // A date among datetimes is written differently: text, not timestamps.
        (
            "date_and_time",
            (
                "string",
                vec![
                    s("2024-12-31"),
                    s("2024-12-31T00:00:00"),
                    s(""),
                    s(""),
                    s(""),
                ],
                "timestamp[s]",
            ),
        ),
        // `NaN` is a number, not a null marker (unless passed with --null-values).
        (
            "nan_num",
            (
                "double",
                vec![s("1.5"), s("nan"), n.clone(), s("2.5"), s("3.0")],
                "double",
            ),
        ),
        // `NA` is text, not a null marker, so the column is text.
        (
            "int_na",
            (
                "string",
                vec![s("1"), s("NA"), s("2"), s("3"), s("4")],
                "int64",
            ),
        ),
        // A column with no value: empty strings (pyarrow: a column of type null).
        (
            "all_empty",
            ("string", vec![s(""), s(""), s(""), s(""), s("")], "null"),
        ),
    ]);
    let order: Vec<String> = serde_json::from_value(report["order"].clone()).unwrap();
    assert_eq!(order.len(), 18, "{report}");
    let mut matched = Vec::new();
    for name in &order {
        let ours = column(&report, "fetched", name);
        let theirs = column(&report, "pyarrow", name);
        match differs.get(name.as_str()) {
            Some((our_type, our_values, their_type)) => {
                assert_eq!(
                    (ours.0.as_str(), &ours.1),
                    (*our_type, our_values),
                    "{name}"
                );
                assert_eq!(theirs.0, *their_type, "{name}: pyarrow changed? {report}");
                assert_ne!(ours, theirs, "{name} no longer differs from pyarrow");
            }
            None => {
                assert_eq!(ours, theirs, "{name} differs from pyarrow");
                matched.push(format!("{name}:{}", ours.0));
            }
        }
    }
    // The awkward columns that must match, with the types that prove the point.
    for expected in [
        "text:string",
        "näme 名:string",
        "empty_str:string",
        "na_like:string",
        "zeros:int64",
        "extreme:int64",
        "float:double",
        "zoned:timestamp[s, tz=UTC]",
        "naive:timestamp[s]",
        "frac:timestamp[ns]",
        "mixed_zone:string",
        "flag:bool",
        "day:date32[day]",
    ] {
        assert!(
            matched.iter().any(|m| m == expected),
            "{expected} not matched: {matched:?}"
        );
    }
    assert_eq!(
        column(&report, "fetched", "empty_str").1,
        [s("x"), s(""), s(""), s(" "), s("tab\there")]
    );
    assert_eq!(
        column(&report, "fetched", "zoned").1,
        [
            s("1735603200"),
            s("1735596000"),
            s("1717263000"),
            n.clone(),
            s("1735689599")
        ]
    );

    // With --null-values NA,null those values are null in every column, text included, as
    // pyarrow reads them with the same null_values and strings_can_be_null=True (pyarrow then
    // no longer reads empty number fields as null, so only these columns are compared).
    let report = fetch_and_compare(
        &churn,
        "sales/awkward-na",
        &dir.path().join("awkward-na.arrow"),
        &source,
        "NA,null",
    );
    let ours = column(&report, "fetched", "na_like");
    assert_eq!(
        ours,
        (
            "string".to_string(),
            vec![n.clone(), n.clone(), s("NaN"), s("N/A"), s("-")]
        )
    );
    assert_eq!(ours, column(&report, "pyarrow", "na_like"), "{report}");
    let ours = column(&report, "fetched", "int_na");
    assert_eq!(ours.0, "int64");
    assert_eq!(ours, column(&report, "pyarrow", "int_na"), "{report}");
    assert_eq!(
        column(&report, "fetched", "empty_str"),
        column(&report, "pyarrow", "empty_str")
    );
}

/// Writes a Parquet file of INT96 timestamps as Spark writes them (no `ARROW:schema`), top
/// level and in a list: 9999-12-31 (Spark's usual "end of time", past what nanoseconds since
/// 1970 reach), the first microsecond after 1970, a leap day with microseconds, and nulls.
const INT96_WRITE: &str = r#"
import sys, datetime as dt, pyarrow as pa, pyarrow.parquet as pq
values = [dt.datetime(9999, 12, 31), dt.datetime(1970, 1, 1, 0, 0, 0, 1),
          dt.datetime(2024, 2, 29, 12, 34, 56, 789012), None]
table = pa.table({
    'ts': pa.array(values, pa.timestamp('us')),
    'tss': pa.array([values, None, [values[2]], []], pa.list_(pa.timestamp('us'))),
})
pq.write_table(table, sys.argv[1], use_deprecated_int96_timestamps=True, store_schema=False)
assert 'int96' in str(pq.ParquetFile(sys.argv[1]).schema)
"#;

/// Reads the fetched Arrow file, and the Parquet file as pyarrow reads INT96 in microseconds,
/// and prints per column its type and its values as integers since 1970 (in the type's unit).
const INT96_COMPARE: &str = r#"
import json, sys
import pyarrow as pa, pyarrow.ipc as ipc, pyarrow.parquet as pq
fetched = ipc.open_file(sys.argv[1]).read_all()
reference = pq.read_table(sys.argv[2], coerce_int96_timestamp_unit='us')
def integers(t):
    if pa.types.is_list(t):
        return pa.list_(pa.field(t.value_field.name, integers(t.value_type)))
    return pa.int64() if pa.types.is_timestamp(t) else t
def describe(table):
    return {f.name: {'type': str(f.type), 'values': c.cast(integers(f.type)).to_pylist()}
            for f, c in zip(table.schema, table.columns)}
print(json.dumps({'fetched': describe(fetched), 'pyarrow': describe(reference)}))
"#;

#[test]
fn int96_timestamps_survive_publish_and_fetch_as_pyarrow_reads_them_in_microseconds() {
    if !require_pyarrow() {
        return;
    }
    let sales = TestNode::start("sales", &[]);
    let source = sales.dir.parent().unwrap().join("spark.parquet");
    python(INT96_WRITE, &[source.to_str().unwrap()]);
    publish(&sales, "spark", &source, &[]);
    let churn = TestNode::start_seeing("churn", &sales, "sales/spark");
    let v = churn
        .cli(&[
            "share",
            "request",
            "sales/spark",
            "--purpose",
            "analytics",
            "--json",
        ])
        .json();
    assert_eq!(v["state"], "agreed", "{v}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("spark.arrow");
    let fetched = churn.fetch("sales/spark", &out, &["--json"]);
    assert!(fetched.success, "fetch failed: {}", fetched.stderr);
    let report: Value = serde_json::from_str(&python(
        INT96_COMPARE,
        &[out.to_str().unwrap(), source.to_str().unwrap()],
    ))
    .unwrap();
    assert_eq!(report["fetched"], report["pyarrow"], "{report}");
    // Not only equal but right: 9999-12-31 is not wrapped into 1816.
    let values = json!([
        253_402_214_400_000_000i64,
        1,
        1_709_210_096_789_012i64,
        null
    ]);
    assert_eq!(
        report["fetched"]["ts"],
        json!({"type": "timestamp[us]", "values": values}),
        "{report}"
    );
    assert_eq!(
        report["fetched"]["tss"]["values"],
        json!([values, null, [1_709_210_096_789_012i64], []]),
        "{report}"
    );
}

/// Writes with DuckDB a Parquet file of one interval column `i` holding the SQL values
/// `argv[2]`. DuckDB writes no `ARROW:schema`, so the parquet reader reads the column as
/// days and milliseconds.
const INTERVAL_WRITE: &str = r#"
import sys, duckdb
duckdb.sql(f"COPY (SELECT * FROM (VALUES {sys.argv[2]}) t(i)) TO '{sys.argv[1]}' (FORMAT parquet)")
"#;

/// Prints the intervals of column `i` of the Parquet file `argv[1]` as DuckDB reads them,
/// each as `[months, days, nanoseconds]` or null.
const DUCKDB_INTERVALS: &str = r#"
import json, sys, duckdb
read = duckdb.sql(f"SELECT i FROM '{sys.argv[1]}'").arrow()
read = read.read_all() if hasattr(read, 'read_all') else read
print(json.dumps([None if v is None else [v.months, v.days, v.nanoseconds]
                  for v in read.column('i').to_pylist()]))
"#;

/// The intervals of column `i` of a fetched Arrow file, as [`DUCKDB_INTERVALS`] prints them.
/// They are read here: pyarrow has no Python values for Arrow's day-time intervals (nor does
/// it cast them), and DuckDB 2.0 fails to import them.
fn fetched_intervals(path: &Path) -> (String, Value) {
    use arrow::array::{Array, IntervalDayTimeArray};
    let reader =
        arrow::ipc::reader::FileReader::try_new(std::fs::File::open(path).unwrap(), None).unwrap();
    let data_type = reader
        .schema()
        .field_with_name("i")
        .unwrap()
        .data_type()
        .to_string();
    let mut values = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let Some(column) = batch
            .column_by_name("i")
            .and_then(|c| c.as_any().downcast_ref::<IntervalDayTimeArray>())
        else {
            break;
        };
        for value in column.iter() {
            values.push(value.map_or(Value::Null, |v| {
                json!([0, v.days, i64::from(v.milliseconds) * 1_000_000])
            }));
        }
    }
    (data_type, Value::Array(values))
}

#[test]
fn duckdb_intervals_survive_publish_and_fetch_or_are_refused_when_they_hold_months() {
    if !require_pyarrow() {
        return;
    }
    let sales = TestNode::start("sales", &[]);
    let dir = sales.dir.parent().unwrap();
    // Months would be dropped (the reader reads days and milliseconds): refused, naming the
    // column, and nothing is published.
    let months = dir.join("months.parquet");
    python(
        INTERVAL_WRITE,
        &[
            months.to_str().unwrap(),
            "(INTERVAL '1 month 2 days 3 seconds'), (INTERVAL '14 months'), \
             (INTERVAL '36 hours')",
        ],
    );
    let out = sales.cli(&["publish", "months", "--from", months.to_str().unwrap()]);
    assert!(!out.success, "an interval with months was accepted");
    for part in [
        "months.parquet",
        "column `i` of row group 0",
        "1 month, 2 days and 3000 milliseconds",
        "would drop its months",
        "re-export the interval as separate integer columns",
    ] {
        assert!(out.stderr.contains(part), "{part}: {}", out.stderr);
    }
    assert_eq!(sales.version_of("sales/months"), None);
    // Without months, the values are read as DuckDB reads them.
    let source = dir.join("hours.parquet");
    python(
        INTERVAL_WRITE,
        &[
            source.to_str().unwrap(),
            "(INTERVAL '2 days 3 seconds'), (INTERVAL '36 hours'), (NULL), \
             (INTERVAL '0.25 seconds')",
        ],
    );
    publish(&sales, "hours", &source, &[]);
    let churn = TestNode::start_seeing("churn", &sales, "sales/hours");
    let v = churn
        .cli(&[
            "share",
            "request",
            "sales/hours",
            "--purpose",
            "analytics",
            "--json",
        ])
        .json();
    assert_eq!(v["state"], "agreed", "{v}");
    let fetched_dir = tempfile::tempdir().unwrap();
    let out = fetched_dir.path().join("hours.arrow");
    let fetched = churn.fetch("sales/hours", &out, &["--json"]);
    assert!(fetched.success, "fetch failed: {}", fetched.stderr);
    let duckdb: Value =
        serde_json::from_str(&python(DUCKDB_INTERVALS, &[source.to_str().unwrap()])).unwrap();
    let (data_type, fetched) = fetched_intervals(&out);
    assert_eq!(data_type, "Interval(DayTime)");
    assert_eq!(fetched, duckdb);
    assert_eq!(
        fetched,
        json!([
            [0, 2, 3_000_000_000i64],
            [0, 0, 129_600_000_000_000i64],
            null,
            [0, 0, 250_000_000]
        ])
    );
}

/// Times of day. pyarrow 26 reads `HH:MM:SS` and `HH:MM` (hours 00-23, spaces and tabs
/// around ignored, empty fields null) as time32[s], `HH:MM` and `HH:MM:SS` mixed in one
/// column; fractions of a second, `24:00`, leap seconds, single-digit hours and times mixed
/// with dates stay text.
const TIMES_CSV: &str = concat!(
    "id,hms,hm,mixed,frac,late,short,with_date\n",
    "1,12:34:56,12:34,12:34:56,12:34:56.123,24:00:00,1:02:03,12:34:56\n",
    "2,00:00:00,23:59, 08:00 ,00:00:00.5,23:59:60,9:05,2024-01-01\n",
    "3,23:59:59,00:00,\t23:59:59,,24:00,12:34,\n",
    "4,,09:05,,00:00:01.000001,12:34,1:2,23:59\n",
    "5,07:08:09,,\"  06:00\",23:59:59.9,,,\n",
);

/// Reads the product `argv[3]` through Arrow Flight (`argv[1]` the endpoint, `argv[2]` the
/// token) and writes it to the Arrow IPC file `argv[4]`.
const FLIGHT_SAVE: &str = r#"
import sys
import pyarrow.flight as flight, pyarrow.ipc as ipc
client = flight.FlightClient(sys.argv[1])
auth = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {sys.argv[2]}".encode())])
info = client.get_flight_info(flight.FlightDescriptor.for_path(sys.argv[3]), auth)
table = client.do_get(info.endpoints[0].ticket, auth).read_all()
with ipc.new_file(sys.argv[4], table.schema) as writer:
    writer.write_table(table)
"#;

/// The ids of a fetched Arrow file, in order.
fn fetched_ids(path: &Path) -> Vec<i64> {
    use arrow::array::{Array, Int64Array};
    let reader =
        arrow::ipc::reader::FileReader::try_new(std::fs::File::open(path).unwrap(), None).unwrap();
    let mut ids = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let column = batch.column_by_name("id").unwrap();
        let column = column.as_any().downcast_ref::<Int64Array>().unwrap();
        ids.extend(column.iter().flatten());
    }
    ids
}

#[test]
fn csv_times_of_day_survive_publish_fetch_sql_flight_filters_and_odcs_as_pyarrow_reads_them() {
    if !require_pyarrow() {
        return;
    }
    let sales = TestNode::start("sales", &[]);
    let source = write_file(sales.dir.parent().unwrap(), "times.csv", TIMES_CSV);
    publish(&sales, "times", &source, &[]);
    let churn = TestNode::start_seeing("churn", &sales, "sales/times");
    let dir = tempfile::tempdir().unwrap();

    // Fetched, every column is what pyarrow.csv.read_csv makes of the file: types and values.
    let agreed = churn.share_agreed("sales/times", "analytics", &[]);
    let id = agreed["id"].as_str().unwrap().to_owned();
    let out = dir.path().join("times.arrow");
    let fetched = churn.fetch("sales/times", &out, &["--agreement", &id]);
    assert!(fetched.success, "fetch failed: {}", fetched.stderr);
    let report: Value = serde_json::from_str(&python(
        COMPARE,
        &[out.to_str().unwrap(), source.to_str().unwrap(), ""],
    ))
    .unwrap();
    let order: Vec<String> = serde_json::from_value(report["order"].clone()).unwrap();
    assert_eq!(order.len(), 8, "{report}");
    for name in &order {
        assert_eq!(
            column(&report, "fetched", name),
            column(&report, "pyarrow", name),
            "{name} differs from pyarrow: {report}"
        );
    }
    let s = |v: &str| json!(v);
    let n = Value::Null;
    let types: Vec<String> = order
        .iter()
        .map(|name| column(&report, "fetched", name).0)
        .collect();
    assert_eq!(
        types,
        [
            "int64",
            "time32[s]",
            "time32[s]",
            "time32[s]",
            "string",
            "string",
            "string",
            "string"
        ],
        "{report}"
    );
    assert_eq!(
        column(&report, "fetched", "hms").1,
        [
            s("12:34:56"),
            s("00:00:00"),
            s("23:59:59"),
            n.clone(),
            s("07:08:09")
        ]
    );
    assert_eq!(
        column(&report, "fetched", "mixed").1,
        [
            s("12:34:56"),
            s("08:00:00"),
            s("23:59:59"),
            n.clone(),
            s("06:00:00")
        ]
    );

    // Through Arrow Flight, the same table.
    let status = churn.status();
    let flight_addr = status["flight_addr"]
        .as_str()
        .unwrap_or_else(|| panic!("status has no flight_addr: {status}"));
    let token = std::fs::read_to_string(churn.dir.join("api.token")).unwrap();
    let through_flight = dir.path().join("flight.arrow");
    python(
        FLIGHT_SAVE,
        &[
            &format!("grpc://{flight_addr}"),
            token.trim(),
            "sales/times",
            through_flight.to_str().unwrap(),
        ],
    );
    let flight_report: Value = serde_json::from_str(&python(
        COMPARE,
        &[
            through_flight.to_str().unwrap(),
            source.to_str().unwrap(),
            "",
        ],
    ))
    .unwrap();
    assert_eq!(
        flight_report["fetched"], report["pyarrow"],
        "{flight_report}"
    );

    // SQL compares the column with a time written as text.
    let sql = churn
        .cli(&[
            "sql",
            "--json",
            r#"SELECT id, hms FROM "sales/times" WHERE hms > '12:00:00' ORDER BY id"#,
        ])
        .json();
    assert_eq!(
        sql,
        json!([{"id": 1, "hms": "12:34:56"}, {"id": 3, "hms": "23:59:59"}])
    );

    // The agreement's ODCS document names the type as pyarrow does; ODCS v3.0.2 has no
    // logical type for a time of day, so it is a string there.
    let odcs = churn.cli(&["share", "show", &id, "--odcs"]);
    assert!(odcs.success, "{}", odcs.stderr);
    let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(&odcs.stdout).unwrap();
    let hms = document["schema"][0]["properties"]
        .as_sequence()
        .and_then(|properties| {
            properties
                .iter()
                .find(|p| p["name"].as_str() == Some("hms"))
        })
        .unwrap_or_else(|| panic!("no property hms:\n{}", odcs.stdout));
    assert_eq!(hms["physicalType"].as_str(), Some("time32[s]"), "{hms:?}");
    assert_eq!(hms["logicalType"].as_str(), Some("string"), "{hms:?}");
    let yaml = dir.path().join("times-odcs.yaml");
    std::fs::write(&yaml, &odcs.stdout).unwrap();
    let (passed, lint) = mesh_tests::datacontract_lint(&yaml);
    assert!(passed, "datacontract lint failed:\n{lint}\n{}", odcs.stdout);

    // A row filter compares a time column with times written as text, minutes or seconds.
    let filtered = churn.share_agreed(
        "sales/times",
        "analytics",
        &["--filter", "hms BETWEEN '07:00' AND '12:59:59'"],
    );
    let out = dir.path().join("filtered.arrow");
    let fetched = churn.fetch(
        "sales/times",
        &out,
        &["--agreement", filtered["id"].as_str().unwrap()],
    );
    assert!(fetched.success, "fetch failed: {}", fetched.stderr);
    assert_eq!(fetched_ids(&out), [1, 5]);
}

/// Writes a table of many types to the Parquet file `argv[1]` as pyarrow does with
/// `compression='brotli'`, in data pages of version `argv[2]` (`1.0`, or `2.0`, whose levels
/// are not compressed), several pages to a column chunk and two row groups.
const BROTLI_WRITE: &str = r#"
import sys, datetime as dt, decimal, pyarrow as pa, pyarrow.parquet as pq
n = 3000
utc = dt.timezone.utc
table = pa.table({
    'id': pa.array(range(n), pa.int64()),
    'small': pa.array([None if i % 7 == 0 else i % 100 - 50 for i in range(n)], pa.int32()),
    'price': pa.array([None if i % 13 == 0 else i * 1.25 - 7 for i in range(n)], pa.float64()),
    'name': pa.array([None if i % 11 == 0 else f'customer {i % 37}, José 中文' for i in range(n)]),
    'flag': pa.array([None if i % 17 == 0 else i % 3 == 0 for i in range(n)]),
    'day': pa.array([dt.date(2024, 2, 28) + dt.timedelta(days=i) for i in range(n)]),
    'at': pa.array([dt.datetime(2024, 1, 1, tzinfo=utc) + dt.timedelta(seconds=i * 37, microseconds=i) for i in range(n)], pa.timestamp('us', 'UTC')),
    'amount': pa.array([decimal.Decimal(i * 7919 - 10**6) / 100 for i in range(n)], pa.decimal128(12, 2)),
    'tags': pa.array([None if i % 5 == 0 else [f't{j}' for j in range(i % 4)] for i in range(n)], pa.list_(pa.string())),
    'point': pa.array([None if i % 19 == 0 else {'x': i, 'y': None if i % 2 else f'y{i}'} for i in range(n)]),
})
pq.write_table(table, sys.argv[1], compression='brotli', data_page_version=sys.argv[2],
               data_page_size=4096, row_group_size=2000)
meta = pq.ParquetFile(sys.argv[1]).metadata
assert meta.num_row_groups == 2
assert {meta.row_group(g).column(c).compression for g in range(2) for c in range(meta.num_columns)} == {'BROTLI'}
"#;

/// Compares the fetched Arrow file `argv[1]` with the Parquet file `argv[2]` as pyarrow reads
/// it: the schemas (metadata aside), and each column's values.
const BROTLI_COMPARE: &str = r#"
import json, sys
import pyarrow.ipc as ipc, pyarrow.parquet as pq
fetched = ipc.open_file(sys.argv[1]).read_all()
reference = pq.read_table(sys.argv[2])
print(json.dumps({
    'rows': [fetched.num_rows, reference.num_rows],
    'schema': [str(fetched.schema.remove_metadata()), str(reference.schema.remove_metadata())],
    'differ': [name for name in reference.column_names
               if name not in fetched.column_names
               or not fetched.column(name).equals(reference.column(name))],
    'equal': fetched.equals(reference),
}))
"#;

#[test]
fn brotli_parquet_survives_publish_and_fetch_as_pyarrow_reads_it() {
    if !require_pyarrow() {
        return;
    }
    let sales = TestNode::start("sales", &[]);
    let dir = sales.dir.parent().unwrap().to_path_buf();
    let versions = [("brotli-v1", "1.0"), ("brotli-v2", "2.0")];
    for (name, version) in versions {
        let source = dir.join(format!("{name}.parquet"));
        python(BROTLI_WRITE, &[source.to_str().unwrap(), version]);
        publish(&sales, name, &source, &[]);
    }
    let churn = TestNode::start_seeing("churn", &sales, "sales/brotli-v2");
    for (name, _) in versions {
        let product = format!("sales/{name}");
        wait_until(Duration::from_secs(20), || {
            churn.version_of(&product).is_some()
        })
        .unwrap_or_else(|| panic!("churn never saw {product}"));
        let v = churn
            .cli(&[
                "share",
                "request",
                &product,
                "--purpose",
                "analytics",
                "--json",
            ])
            .json();
        assert_eq!(v["state"], "agreed", "{v}");
        let out = dir.join(format!("{name}.arrow"));
        let fetched = churn.fetch(&product, &out, &["--json"]);
        assert!(fetched.success, "fetch failed: {}", fetched.stderr);
        let source = dir.join(format!("{name}.parquet"));
        let report: Value = serde_json::from_str(&python(
            BROTLI_COMPARE,
            &[out.to_str().unwrap(), source.to_str().unwrap()],
        ))
        .unwrap();
        assert_eq!(report["rows"], json!([3000, 3000]), "{name}: {report}");
        assert_eq!(report["schema"][0], report["schema"][1], "{name}: {report}");
        assert_eq!(report["differ"], json!([]), "{name}: {report}");
        assert_eq!(report["equal"], true, "{name}: {report}");
    }
}

/// Writes to `argv[1]` a Parquet file of zoned timestamps of every unit, at the top level and
/// nested (list of structs, large list, fixed-size list, list view, map keys and values,
/// struct of struct), plus naive and UTC ones and a dictionary, as pyarrow writes them with the
/// options `argv[2]` names: `default`, `coerce-ms` (`coerce_timestamps='ms'`) or `v1`
/// (`version='1.0'`, nanoseconds stored as microseconds). Parquet has no time zones and no
/// seconds: the stored unit differs from the written one, and the `ARROW:schema` pyarrow
/// records holds the zone.
const ZONED_WRITE: &str = r#"
import sys, pyarrow as pa, pyarrow.parquet as pq
scale = {'s': 1, 'ms': 10**3, 'us': 10**6, 'ns': 10**9}
def at(unit, millis=0):
    return (1_700_000_000_000 + millis) * scale[unit] // 1000
ny, paris = 'America/New_York', 'Europe/Paris'
cols = {}
for u in scale:
    cols[f'ny_{u}'] = pa.array([at(u, 123), None, -at(u, 7)], pa.timestamp(u, ny))
    cols[f'off_{u}'] = pa.array([at(u, 1), at(u), None], pa.timestamp(u, '+05:30'))
    cols[f'utc_{u}'] = pa.array([at(u), None, 0], pa.timestamp(u, 'UTC'))
    cols[f'naive_{u}'] = pa.array([at(u, 5), 0, None], pa.timestamp(u))
    cols[f'list_struct_{u}'] = pa.array(
        [[{'ts': at(u)}, None, {'ts': None}], None, []],
        pa.list_(pa.struct([('ts', pa.timestamp(u, paris))])))
cols['large_ns'] = pa.array([[at('ns', 9)], [], None], pa.large_list(pa.timestamp('ns', 'Asia/Tokyo')))
cols['fixed_s'] = pa.array([[at('s'), None], None, [0, 1]], pa.list_(pa.timestamp('s', paris), 2))
cols['view_s'] = pa.array([[at('s')], None, []], pa.list_view(pa.timestamp('s', ny)))
cols['map_values_s'] = pa.array([[('a', at('s'))], None, [('b', None)]], pa.map_(pa.string(), pa.timestamp('s', paris)))
cols['map_keys_us'] = pa.array([[(at('us'), 'a')], None, []], pa.map_(pa.timestamp('us', paris), pa.string()))
cols['struct_struct_s'] = pa.array([{'a': {'b': at('s')}}, {'a': None}, None],
    pa.struct([('a', pa.struct([('b', pa.timestamp('s', '+01:00'))]))]))
cols['dict_s'] = pa.array([at('s'), None, at('s')], pa.timestamp('s', paris)).dictionary_encode()
options = {'default': {}, 'coerce-ms': {'coerce_timestamps': 'ms'}, 'v1': {'version': '1.0'}}[sys.argv[2]]
pq.write_table(pa.table(cols), sys.argv[1], **options)
"#;

/// Compares the fetched file `argv[1]` (Arrow IPC, or Parquet by its extension) with the
/// Parquet file `argv[2]` as `pq.read_table` reads it: types and values, column by column
/// (`dict_s` apart, printed as its type on each side and its values as integers).
const ZONED_COMPARE: &str = r#"
import json, sys
import pyarrow as pa, pyarrow.ipc as ipc, pyarrow.parquet as pq
path = sys.argv[1]
fetched = pq.read_table(path) if path.endswith('.parquet') else ipc.open_file(path).read_all()
reference = pq.read_table(sys.argv[2])
def dict_s(t):
    c = t.column('dict_s')
    return {'type': str(c.type), 'values': c.cast(pa.int64()).to_pylist()}
print(json.dumps({
    'rows': [fetched.num_rows, reference.num_rows],
    'differ': [{'column': f.name, 'fetched': str(fetched.schema.field(f.name).type)
                if f.name in fetched.column_names else None, 'pyarrow': str(f.type)}
               for f in reference.schema if f.name != 'dict_s' and (
                   f.name not in fetched.column_names
                   or not fetched.column(f.name).equals(reference.column(f.name)))],
    'types': {f.name: str(f.type) for f in fetched.schema},
    'dict_s': [dict_s(fetched), dict_s(reference)],
}))
"#;

#[test]
fn zoned_parquet_timestamps_survive_publish_and_fetch_as_pyarrow_reads_them() {
    if !require_pyarrow() {
        return;
    }
    let sales = TestNode::start("sales", &[]);
    let dir = sales.dir.parent().unwrap().to_path_buf();
    let written = ["default", "coerce-ms", "v1"];
    for options in written {
        let source = dir.join(format!("zoned-{options}.parquet"));
        python(ZONED_WRITE, &[source.to_str().unwrap(), options]);
        publish(&sales, &format!("zoned-{options}"), &source, &[]);
    }
    let churn = TestNode::start_seeing("churn", &sales, "sales/zoned-v1");
    let out_dir = tempfile::tempdir().unwrap();
    for options in written {
        let product = format!("sales/zoned-{options}");
        wait_until(Duration::from_secs(20), || {
            churn.version_of(&product).is_some()
        })
        .unwrap_or_else(|| panic!("churn never saw {product}"));
        let agreed = churn.share_agreed(&product, "analytics", &[]);
        let agreement = agreed["id"].as_str().unwrap();
        let source = dir.join(format!("zoned-{options}.parquet"));
        for extension in ["arrow", "parquet"] {
            let out = out_dir.path().join(format!("zoned-{options}.{extension}"));
            let fetched = churn.fetch(&product, &out, &["--agreement", agreement]);
            assert!(fetched.success, "fetch failed: {}", fetched.stderr);
            let report: Value = serde_json::from_str(&python(
                ZONED_COMPARE,
                &[out.to_str().unwrap(), source.to_str().unwrap()],
            ))
            .unwrap();
            let what = format!("{options} fetched as .{extension}");
            assert_eq!(report["rows"], json!([3, 3]), "{what}: {report}");
            // Every column has pyarrow's type, the zone included, and its values.
            assert_eq!(report["differ"], json!([]), "{what}: {report}");
            // Seconds are stored, and read, as milliseconds in their zone.
            let types = &report["types"];
            assert_eq!(
                types["ny_s"], "timestamp[ms, tz=America/New_York]",
                "{what}: {report}"
            );
            assert_eq!(
                types["list_struct_s"], "list<element: struct<ts: timestamp[ms, tz=Europe/Paris]>>",
                "{what}: {report}"
            );
            // Nanoseconds in the unit each writer option stores them in.
            let stored = match options {
                "default" => "ns",
                "v1" => "us",
                _ => "ms",
            };
            assert_eq!(
                types["off_ns"],
                format!("timestamp[{stored}, tz=+05:30]"),
                "{what}: {report}"
            );
            // A dictionary of zoned timestamps: pyarrow reads it in UTC, whatever its unit;
            // meshnode keeps its zone, as it does for every other timestamp. The instants
            // are the same.
            let [ours, theirs] = [&report["dict_s"][0], &report["dict_s"][1]];
            assert_eq!(
                ours["type"], "timestamp[ms, tz=Europe/Paris]",
                "{what}: {report}"
            );
            assert_eq!(theirs["type"], "timestamp[ms, tz=UTC]", "{what}: {report}");
            assert_eq!(ours["values"], theirs["values"], "{what}: {report}");
        }
    }
}

/// Writes to the Arrow IPC file `argv[1]` times, timestamps in seconds and `date64` values
/// inside list views, large list views, dictionaries, run-end encoded arrays, fixed-size
/// lists, maps and structs: types Parquet has no name for, in containers it flattens.
const NESTED_TEMPORAL_WRITE: &str = r#"
import sys, pyarrow as pa, pyarrow.feather as feather
day = 86_400_000
def ree(values, ends):
    return pa.RunEndEncodedArray.from_arrays(pa.array(ends, pa.int32()), values)
table = pa.table({
    'lv_ts': pa.array([[1, 2], None, []], pa.list_view(pa.timestamp('s'))),
    'llv_t32': pa.array([[3600], [None], None], pa.large_list_view(pa.time32('s'))),
    'lv_d64': pa.array([[day], None, [0]], pa.list_view(pa.date64())),
    'dict_d64': pa.array([day, None, day], pa.date64()).dictionary_encode(),
    'dict_t32': pa.array([60, 61, None], pa.time32('s')).dictionary_encode(),
    'dict_ts': pa.array([5, None, 5], pa.timestamp('s', 'Asia/Tokyo')).dictionary_encode(),
    'ree_ts': ree(pa.array([7, None], pa.timestamp('s')), [2, 3]),
    'ree_d64': ree(pa.array([day, 2 * day], pa.date64()), [1, 3]),
    'ree_t32': ree(pa.array([8], pa.time32('s')), [3]),
    'fixed_ts': pa.array([[1, None], None, [2, 3]], pa.list_(pa.timestamp('s', 'Europe/Paris'), 2)),
    'map_t32': pa.array([[('a', 1)], None, []], pa.map_(pa.string(), pa.time32('s'))),
    'struct_d64': pa.array([{'d': day}, {'d': None}, None], pa.struct([('d', pa.date64())])),
})
feather.write_feather(table, sys.argv[1], compression='uncompressed')
"#;

/// Prints per column of the Parquet file `argv[1]` the type pyarrow reads and its values as
/// text, and the same for a Parquet file pyarrow writes itself from the Arrow file `argv[2]`
/// (run-end encoded columns decoded first: its writer refuses them).
const NESTED_TEMPORAL_COMPARE: &str = r#"
import json, sys
import pyarrow as pa, pyarrow.compute as pc, pyarrow.feather as feather, pyarrow.parquet as pq
fetched = pq.read_table(sys.argv[1])
source = feather.read_table(sys.argv[2])
plain = pa.table({n: (pc.run_end_decode(c) if pa.types.is_run_end_encoded(c.type) else c)
                  for n, c in zip(source.column_names, source.columns)})
pq.write_table(plain, sys.argv[3])
own = pq.read_table(sys.argv[3])
def describe(t):
    # pyarrow's writer names list items `element`, as Parquet does; meshnode's keeps Arrow's
    # `item`. The name is not the type.
    return {f.name: {'type': str(f.type).replace('<item: ', '<element: '),
                     'values': [str(v) for v in c.to_pylist()]}
            for f, c in zip(t.schema, t.columns)}
print(json.dumps({'fetched': describe(fetched), 'pyarrow': describe(own)}))
"#;

/// A product of one timestamp in seconds whose milliseconds overflow (pyarrow's own example)
/// and a `date64` past the last `date32` day, both in nullable columns.
const OUT_OF_RANGE_WRITE: &str = r#"
import sys, pyarrow as pa, pyarrow.feather as feather
feather.write_feather(pa.table({
    'id': pa.array([1, 2], pa.int64()),
    'ts': pa.array([2**62, -2**62], pa.timestamp('s')),
}), sys.argv[1], compression='uncompressed')
feather.write_feather(pa.table({
    'id': pa.array([1, 2], pa.int64()),
    'day': pa.array([0, (2**31) * 86_400_000], pa.date64()),
}), sys.argv[2], compression='uncompressed')
"#;

#[test]
fn nested_temporal_values_fetched_as_parquet_read_back_in_pyarrow_and_out_of_range_ones_are_refused()
 {
    if !require_pyarrow() {
        return;
    }
    let sales = TestNode::start("sales", &[]);
    let dir = sales.dir.parent().unwrap().to_path_buf();
    let source = dir.join("temporal.arrow");
    python(NESTED_TEMPORAL_WRITE, &[source.to_str().unwrap()]);
    publish(&sales, "temporal", &source, &[]);
    let (seconds, days) = (dir.join("seconds.arrow"), dir.join("days.arrow"));
    python(
        OUT_OF_RANGE_WRITE,
        &[seconds.to_str().unwrap(), days.to_str().unwrap()],
    );
    publish(&sales, "far-seconds", &seconds, &[]);
    publish(&sales, "far-days", &days, &[]);
    let churn = TestNode::start_seeing("churn", &sales, "sales/temporal");
    let out_dir = tempfile::tempdir().unwrap();

    // pyarrow reads every column as it reads a file it wrote itself from the same data:
    // timestamps, times and dates (in milliseconds and days), not integers, with the same
    // values.
    churn.share_agreed("sales/temporal", "analytics", &[]);
    let out = out_dir.path().join("temporal.parquet");
    let fetched = churn.fetch("sales/temporal", &out, &[]);
    assert!(fetched.success, "fetch failed: {}", fetched.stderr);
    let own = out_dir.path().join("own.parquet");
    let report: Value = serde_json::from_str(&python(
        NESTED_TEMPORAL_COMPARE,
        &[
            out.to_str().unwrap(),
            source.to_str().unwrap(),
            own.to_str().unwrap(),
        ],
    ))
    .unwrap();
    assert_eq!(report["fetched"], report["pyarrow"], "{report}");
    let types: BTreeMap<String, String> = report["fetched"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, c)| (name.clone(), c["type"].as_str().unwrap().to_owned()))
        .collect();
    for (name, want) in [
        ("lv_ts", "list_view<element: timestamp[ms]>"),
        ("llv_t32", "large_list_view<element: time32[ms]>"),
        ("lv_d64", "list_view<element: date32[day]>"),
        ("dict_d64", "date32[day]"),
        ("dict_t32", "time32[ms]"),
        ("ree_ts", "timestamp[ms]"),
        ("ree_d64", "date32[day]"),
        ("ree_t32", "time32[ms]"),
        (
            "fixed_ts",
            "fixed_size_list<element: timestamp[ms, tz=Europe/Paris]>[2]",
        ),
        ("struct_d64", "struct<d: date32[day]>"),
    ] {
        assert_eq!(
            types.get(name).map(String::as_str),
            Some(want),
            "{name}: {report}"
        );
    }

    // A value Parquet's type cannot hold: the fetch fails, naming the column and the value,
    // and leaves nothing at --out (nor beside it); as Arrow IPC the same product is whole.
    for (product, column, value) in [
        ("far-seconds", "ts", "4611686018427387904 * 1000"),
        ("far-days", "day", "Date64 value 185542587187200000"),
    ] {
        let product = format!("sales/{product}");
        wait_until(Duration::from_secs(20), || {
            churn.version_of(&product).is_some()
        })
        .unwrap_or_else(|| panic!("churn never saw {product}"));
        churn.share_agreed(&product, "analytics", &[]);
        let out = out_dir.path().join("far.parquet");
        let fetched = churn.fetch(&product, &out, &[]);
        assert!(
            !fetched.success,
            "{product} was written: {}",
            fetched.stdout
        );
        for part in [
            &format!("column `{column}` holds a value out of the range of"),
            value,
            "--out FILE.arrow",
        ] {
            assert!(fetched.stderr.contains(part), "{part}: {}", fetched.stderr);
        }
        let left: Vec<_> = std::fs::read_dir(out_dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("far"))
            .collect();
        assert_eq!(left, Vec::<String>::new(), "{product}");
        let out = out_dir.path().join("far.arrow");
        let fetched = churn.fetch(&product, &out, &[]);
        assert!(fetched.success, "fetch failed: {}", fetched.stderr);
        std::fs::remove_file(&out).unwrap();
    }
}

/// Writes with DuckDB the Parquet file `argv[1]`: `id`, `u` (UUID, written as
/// `FIXED_LEN_BYTE_ARRAY(16)` annotated UUID) and `j` (JSON, a byte array annotated JSON), a
/// null in each of the last row. DuckDB writes no `ARROW:schema`: the logical types are all
/// a reader has.
const UUID_JSON_WRITE: &str = r#"
import sys, duckdb
duckdb.sql(f"""COPY (
    SELECT i::BIGINT AS id,
           CASE WHEN i < 3 THEN uuid() END AS u,
           CASE WHEN i < 3 THEN ('{{"a":' || i || ',"b":[true,null]}}')::JSON END AS j
    FROM range(4) t(i)
) TO '{sys.argv[1]}' (FORMAT parquet)""")
"#;

/// Compares the fetched Arrow file `argv[1]` with `pyarrow.parquet.read_table` of the source
/// `argv[2]` (schema as text, and whether the tables are equal), and prints the column types
/// DuckDB reads in the fetched Parquet file `argv[3]` and whether its rows are the source's.
const UUID_JSON_COMPARE: &str = r#"
import json, sys, duckdb
import pyarrow.ipc as ipc, pyarrow.parquet as pq
fetched = ipc.open_file(sys.argv[1]).read_all()
reference = pq.read_table(sys.argv[2])
rows = lambda path: duckdb.sql(f"SELECT * FROM '{path}' ORDER BY id").fetchall()
print(json.dumps({
    'fetched': str(fetched.schema),
    'pyarrow': str(reference.schema),
    'equal': fetched.equals(reference),
    'duckdb_types': {name: kind for name, kind, *_ in duckdb.sql(f"DESCRIBE SELECT * FROM '{sys.argv[3]}'").fetchall()},
    'duckdb_rows_equal': rows(sys.argv[3]) == rows(sys.argv[2]),
}))
"#;

#[test]
fn duckdb_uuid_and_json_columns_survive_publish_and_fetch_as_pyarrow_and_duckdb_read_them() {
    if !require_pyarrow() {
        return;
    }
    let sales = TestNode::start("sales", &[]);
    let source = sales.dir.parent().unwrap().join("uuids.parquet");
    python(UUID_JSON_WRITE, &[source.to_str().unwrap()]);
    publish(&sales, "uuids", &source, &[]);
    let churn = TestNode::start_seeing("churn", &sales, "sales/uuids");
    churn.share_agreed("sales/uuids", "analytics", &[]);
    let dir = tempfile::tempdir().unwrap();
    let (arrow_out, parquet_out) = (
        dir.path().join("uuids.arrow"),
        dir.path().join("uuids.parquet"),
    );
    for out in [&arrow_out, &parquet_out] {
        let fetched = churn.fetch("sales/uuids", out, &[]);
        assert!(fetched.success, "fetch failed: {}", fetched.stderr);
    }
    let report: Value = serde_json::from_str(&python(
        UUID_JSON_COMPARE,
        &[
            arrow_out.to_str().unwrap(),
            source.to_str().unwrap(),
            parquet_out.to_str().unwrap(),
        ],
    ))
    .unwrap();
    // As pyarrow reads the source: the canonical extension types, not their storage types
    // (`fixed_size_binary[16]`, `string`).
    assert_eq!(report["fetched"], report["pyarrow"], "{report}");
    let fetched = report["fetched"].as_str().unwrap_or_default();
    for part in ["u: extension<arrow.uuid>", "j: extension<arrow.json>"] {
        assert!(fetched.contains(part), "{part}: {report}");
    }
    assert_eq!(report["equal"], true, "{report}");
    // As Parquet, DuckDB reads UUID and JSON again, not BLOB and VARCHAR, and the same rows.
    assert_eq!(
        report["duckdb_types"],
        json!({"id": "BIGINT", "u": "UUID", "j": "JSON"}),
        "{report}"
    );
    assert_eq!(report["duckdb_rows_equal"], true, "{report}");
}
