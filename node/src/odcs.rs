//! A sharing contract as an Open Data Contract Standard (ODCS) v3 document
//! (`meshnode share show ID --odcs`).
//!
//! The document describes what the agreement grants: the product's schema cut down to the
//! granted columns, the provider's SLA, the purpose, and the contract-specific terms (filter,
//! validity, parties, agreement id) as custom properties. The types serialise to the ODCS
//! field names; the CLI prints them with [`DataContract::to_yaml`], in which every string is
//! quoted so that YAML 1.1 loaders read no date or boolean where a string is meant. Column
//! types are named as the Arrow format (pyarrow) names them ([`physical_type`]).
//!
//! The schema lists the columns the terms name minus the product's restricted columns, in
//! every state: what an agreed (or since revoked or expired) contract grants, and what a
//! pending or rejected one proposed. A proposal is worth documenting (status `proposed` or
//! `retired`), and its non-restricted column names are in the public catalog anyway; a
//! restricted column is in no schema, whatever was asked.

use arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit, UnionMode};
use mesh_protocol::ProductDescriptor;
use mesh_protocol::contract::ContractState;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value as Yaml;

use crate::views::AgreementView;

/// ODCS version the documents follow.
pub const API_VERSION: &str = "v3.0.2";

/// An ODCS v3 data contract.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataContract {
    /// ODCS version, `v3.0.2`.
    pub api_version: String,
    /// Always `DataContract`.
    pub kind: String,
    /// The agreement id.
    pub id: String,
    /// Human name: `domain/product for consumer`.
    pub name: String,
    /// Version of this contract document: `1.0.0` (agreements are immutable).
    pub version: String,
    /// `proposed`, `active` or `retired`, from the contract state.
    pub status: String,
    /// Providing domain.
    pub domain: String,
    /// Product name.
    pub data_product: String,
    /// Purpose, usage and limitations.
    pub description: Description,
    /// The product as one table with the granted columns only.
    pub schema: Vec<SchemaObject>,
    /// Provider and consumer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleEntry>,
    /// The provider's service levels.
    pub sla_properties: Vec<SlaProperty>,
    /// Contract terms ODCS has no field for.
    pub custom_properties: Vec<CustomProperty>,
}

impl DataContract {
    /// The document as block YAML, fields in ODCS order, that YAML 1.1 loaders (pyyaml's
    /// `safe_load`) and YAML 1.2 loaders read alike: every string is double-quoted, so none is
    /// read as a timestamp (`validFrom`, `expiresAt`), a boolean (`yes`, `on`), a number
    /// (`1_000`, `1:20`) or null (`~`), and characters a loader refuses or folds are escaped.
    pub fn to_yaml(&self) -> Result<String, serde_yaml_ng::Error> {
        let value = serde_yaml_ng::to_value(self)?;
        let mut out = String::new();
        match &value {
            Yaml::Mapping(map) if !map.is_empty() => write_map(&mut out, map, 0),
            scalar => {
                out.push_str(&yaml_scalar(scalar));
                out.push('\n');
            }
        }
        Ok(out)
    }
}

/// Writes the entries of a non-empty `map` at `indent` spaces. Recursion follows the
/// document's fixed shape (four levels), never input.
fn write_map(out: &mut String, map: &serde_yaml_ng::Mapping, indent: usize) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        match key.as_str() {
            Some(key) => out.push_str(&yaml_key(key)),
            None => out.push_str(&yaml_scalar(key)),
        }
        out.push(':');
        match value {
            Yaml::Mapping(inner) if !inner.is_empty() => {
                out.push('\n');
                write_map(out, inner, indent + 2);
            }
            Yaml::Sequence(items) if !items.is_empty() => {
                out.push('\n');
                write_seq(out, items, indent + 2);
            }
            scalar => {
                out.push(' ');
                out.push_str(&yaml_scalar(scalar));
                out.push('\n');
            }
        }
    }
}

/// Writes the items of a non-empty sequence at `indent` spaces.
fn write_seq(out: &mut String, items: &[Yaml], indent: usize) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        match item {
            Yaml::Mapping(map) if !map.is_empty() => {
                // The mapping's first entry goes on the dash's line.
                let mut block = String::new();
                write_map(&mut block, map, indent + 2);
                out.push_str("- ");
                out.push_str(block.get(indent + 2..).unwrap_or_default());
            }
            Yaml::Sequence(inner) if !inner.is_empty() => {
                out.push_str("-\n");
                write_seq(out, inner, indent + 2);
            }
            scalar => {
                out.push_str("- ");
                out.push_str(&yaml_scalar(scalar));
                out.push('\n');
            }
        }
    }
}

/// A mapping key: plain when it is an identifier no YAML 1.1 loader reads as anything but a
/// string (all ODCS field names are), double-quoted otherwise.
fn yaml_key(key: &str) -> String {
    let identifier = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let special = ["y", "n", "yes", "no", "on", "off", "true", "false", "null"]
        .contains(&key.to_ascii_lowercase().as_str());
    if identifier && !special {
        key.to_owned()
    } else {
        quoted(key)
    }
}

/// A scalar, or an empty collection in flow style.
fn yaml_scalar(value: &Yaml) -> String {
    match value {
        Yaml::Null => "null".to_owned(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Number(n) => match n.as_f64() {
            // Rust prints floats without an exponent; YAML 1.1 floats need a point.
            Some(f) if n.is_f64() && f.is_finite() => {
                let text = f.to_string();
                if text.contains('.') {
                    text
                } else {
                    format!("{text}.0")
                }
            }
            _ => n.to_string(),
        },
        Yaml::String(s) => quoted(s),
        Yaml::Sequence(_) => "[]".to_owned(),
        Yaml::Mapping(_) => "{}".to_owned(),
        Yaml::Tagged(tagged) => yaml_scalar(&tagged.value),
    }
}

/// `text` as a YAML double-quoted scalar: quotes, backslashes, line breaks (including the
/// YAML 1.1 ones, U+0085, U+2028, U+2029), the byte-order mark and every character outside
/// YAML's printable set are escaped.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            ' '..='~'
            | '\u{a0}'..='\u{2027}'
            | '\u{202a}'..='\u{d7ff}'
            | '\u{e000}'..='\u{fefe}'
            | '\u{ff00}'..='\u{fffd}' => out.push(c),
            c if u32::from(c) > 0xffff => out.push(c),
            c => out.push_str(&format!("\\u{:04x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// ODCS `description`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Description {
    /// What the consumer may use the data for.
    pub purpose: String,
    /// How to use it.
    pub usage: String,
    /// What is not allowed.
    pub limitations: String,
}

/// ODCS schema object (a table).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaObject {
    /// Table name: the product name.
    pub name: String,
    /// `table`.
    pub physical_type: String,
    /// `object`.
    pub logical_type: String,
    /// Product description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The granted columns, in schema order.
    pub properties: Vec<SchemaProperty>,
}

/// ODCS schema property (a column).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaProperty {
    /// Column name.
    pub name: String,
    /// ODCS logical type: string, integer, number, boolean, date, array or object.
    pub logical_type: String,
    /// Arrow type as the Arrow format names it (pyarrow's `str(type)`): `int64`, `string`.
    pub physical_type: String,
    /// Whether the column never holds nulls.
    pub required: bool,
}

/// ODCS role entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoleEntry {
    /// `provider` or `consumer`.
    pub role: String,
    /// Access granted.
    pub access: String,
    /// Domain and key of the party.
    pub description: String,
}

/// ODCS SLA property.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlaProperty {
    /// `frequency`, `latency` or `availability`.
    pub property: String,
    /// The promised value.
    pub value: serde_json::Value,
    /// Unit of `value`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// ODCS custom property.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomProperty {
    /// Name.
    pub property: String,
    /// Value.
    pub value: serde_json::Value,
}

/// ODCS logical type of an Arrow type. The type string is parsed with the bounded parser
/// ([`mesh_protocol::bounds::parse_data_type`]): one that is too long, too deeply nested or
/// unknown is described as `string`.
pub fn logical_type(arrow_type: &str) -> &'static str {
    let Ok(data_type) = mesh_protocol::bounds::parse_data_type(arrow_type) else {
        return "string";
    };
    let data_type = match data_type {
        DataType::Dictionary(_, value) => *value,
        other => other,
    };
    if data_type.is_integer() {
        "integer"
    } else if data_type.is_floating()
        || matches!(
            data_type,
            DataType::Decimal128(..) | DataType::Decimal256(..)
        )
    {
        "number"
    } else {
        match data_type {
            DataType::Boolean => "boolean",
            DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => "date",
            // v3.0.2 has no logical type for a time of day (v3.1.0 adds `time`); the
            // physical type says `time32[s]`.
            DataType::Time32(_) | DataType::Time64(_) => "string",
            DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => "array",
            DataType::Struct(_) | DataType::Map(..) => "object",
            _ => "string",
        }
    }
}

/// Arrow type in the naming of the Arrow format's reference implementation, as pyarrow prints
/// it (`str(pyarrow type)`): `int64`, `string`, `timestamp[us, tz=UTC]`, `date32[day]`,
/// `list<item: int64>`, `decimal128(10, 2)`. The type string is parsed with the bounded parser
/// ([`mesh_protocol::bounds::parse_data_type`]), so the walk below is bounded in depth; a
/// string that does not parse is returned as it is (it is already bounded by the descriptor).
pub fn physical_type(arrow_type: &str) -> String {
    match mesh_protocol::bounds::parse_data_type(arrow_type) {
        Ok(data_type) => arrow_format_name(&data_type),
        Err(_) => arrow_type.to_owned(),
    }
}

fn time_unit(unit: &TimeUnit) -> &'static str {
    match unit {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "us",
        TimeUnit::Nanosecond => "ns",
    }
}

/// `name: type` of a child field, with ` not null` when it never holds nulls.
fn field_name(field: &Field) -> String {
    let not_null = if field.is_nullable() { "" } else { " not null" };
    format!(
        "{}: {}{not_null}",
        field.name(),
        arrow_format_name(field.data_type())
    )
}

/// pyarrow's `str()` of `data_type`. Recursion depth is that of the type, bounded by
/// [`mesh_protocol::bounds::parse_data_type`].
fn arrow_format_name(data_type: &DataType) -> String {
    let fields = |fields: &arrow::datatypes::Fields| {
        fields
            .iter()
            .map(|f| field_name(f))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match data_type {
        DataType::Null => "null".to_owned(),
        DataType::Boolean => "bool".to_owned(),
        DataType::Int8 => "int8".to_owned(),
        DataType::Int16 => "int16".to_owned(),
        DataType::Int32 => "int32".to_owned(),
        DataType::Int64 => "int64".to_owned(),
        DataType::UInt8 => "uint8".to_owned(),
        DataType::UInt16 => "uint16".to_owned(),
        DataType::UInt32 => "uint32".to_owned(),
        DataType::UInt64 => "uint64".to_owned(),
        DataType::Float16 => "halffloat".to_owned(),
        DataType::Float32 => "float".to_owned(),
        DataType::Float64 => "double".to_owned(),
        DataType::Timestamp(unit, None) => format!("timestamp[{}]", time_unit(unit)),
        DataType::Timestamp(unit, Some(tz)) => {
            format!("timestamp[{}, tz={tz}]", time_unit(unit))
        }
        DataType::Date32 => "date32[day]".to_owned(),
        DataType::Date64 => "date64[ms]".to_owned(),
        DataType::Time32(unit) => format!("time32[{}]", time_unit(unit)),
        DataType::Time64(unit) => format!("time64[{}]", time_unit(unit)),
        DataType::Duration(unit) => format!("duration[{}]", time_unit(unit)),
        DataType::Interval(IntervalUnit::YearMonth) => "month_interval".to_owned(),
        DataType::Interval(IntervalUnit::DayTime) => "day_time_interval".to_owned(),
        DataType::Interval(IntervalUnit::MonthDayNano) => "month_day_nano_interval".to_owned(),
        DataType::Binary => "binary".to_owned(),
        DataType::LargeBinary => "large_binary".to_owned(),
        DataType::BinaryView => "binary_view".to_owned(),
        DataType::FixedSizeBinary(size) => format!("fixed_size_binary[{size}]"),
        DataType::Utf8 => "string".to_owned(),
        DataType::LargeUtf8 => "large_string".to_owned(),
        DataType::Utf8View => "string_view".to_owned(),
        DataType::List(f) => format!("list<{}>", field_name(f)),
        DataType::LargeList(f) => format!("large_list<{}>", field_name(f)),
        DataType::ListView(f) => format!("list_view<{}>", field_name(f)),
        DataType::LargeListView(f) => format!("large_list_view<{}>", field_name(f)),
        DataType::FixedSizeList(f, size) => format!("fixed_size_list<{}>[{size}]", field_name(f)),
        DataType::Struct(children) => format!("struct<{}>", fields(children)),
        DataType::Map(entries, sorted) => {
            let (key, value) = match entries.data_type() {
                DataType::Struct(kv) if kv.len() == 2 => (
                    arrow_format_name(kv[0].data_type()),
                    arrow_format_name(kv[1].data_type()),
                ),
                other => ("null".to_owned(), arrow_format_name(other)),
            };
            let sorted = if *sorted { ", keys_sorted" } else { "" };
            format!("map<{key}, {value}{sorted}>")
        }
        DataType::Union(children, mode) => {
            let mode = match mode {
                UnionMode::Sparse => "sparse",
                UnionMode::Dense => "dense",
            };
            let children = children
                .iter()
                .map(|(code, f)| format!("{}={code}", field_name(f)))
                .collect::<Vec<_>>()
                .join(", ");
            format!("{mode}_union<{children}>")
        }
        DataType::Dictionary(key, value) => format!(
            "dictionary<values={}, indices={}, ordered=0>",
            arrow_format_name(value),
            arrow_format_name(key)
        ),
        DataType::Decimal32(p, s) => format!("decimal32({p}, {s})"),
        DataType::Decimal64(p, s) => format!("decimal64({p}, {s})"),
        DataType::Decimal128(p, s) => format!("decimal128({p}, {s})"),
        DataType::Decimal256(p, s) => format!("decimal256({p}, {s})"),
        DataType::RunEndEncoded(run_ends, values) => format!(
            "run_end_encoded<run_ends: {}, values: {}>",
            arrow_format_name(run_ends.data_type()),
            arrow_format_name(values.data_type())
        ),
    }
}

fn status(state: ContractState) -> &'static str {
    match state {
        ContractState::Requested | ContractState::Pending => "proposed",
        ContractState::Agreed => "active",
        ContractState::Rejected | ContractState::Revoked | ContractState::Expired => "retired",
    }
}

/// The ODCS document of a contract, with `descriptor` from this node's catalog.
pub fn data_contract(view: &AgreementView, descriptor: &ProductDescriptor) -> DataContract {
    // The columns the terms name (all of them under `*`), restricted ones never: what an
    // agreed contract grants, and what a pending or rejected one proposed. Computed here from
    // the terms and the policy rather than taken from elsewhere, so that no state of the
    // contract can put a restricted column in the schema.
    let restricted = &descriptor.policy.restricted_columns;
    let properties = descriptor
        .schema
        .iter()
        .filter(|c| {
            let asked = view.all_future_columns
                || view
                    .columns
                    .as_ref()
                    .is_some_and(|listed| listed.contains(&c.name));
            asked && !restricted.contains(&c.name)
        })
        .map(|c| SchemaProperty {
            name: c.name.clone(),
            logical_type: logical_type(&c.data_type).to_owned(),
            physical_type: physical_type(&c.data_type),
            required: !c.nullable,
        })
        .collect();
    let rows = match &view.filter {
        Some(f) => format!("only rows where {f}"),
        None => "all rows".to_owned(),
    };
    let mut limitations = format!(
        "Only for the purpose `{}`; only the columns listed in the schema, {rows}; valid until {}.",
        view.purpose, view.expires_at
    );
    if !descriptor.policy.restricted_columns.is_empty() {
        limitations.push_str(&format!(
            " Restricted columns never shared: {}.",
            descriptor.policy.restricted_columns.join(", ")
        ));
    }
    let sla = &descriptor.sla;
    let custom = |property: &str, value: serde_json::Value| CustomProperty {
        property: property.to_owned(),
        value,
    };
    let mut document = DataContract {
        api_version: API_VERSION.to_owned(),
        kind: "DataContract".to_owned(),
        id: view.id.clone(),
        name: format!("{} for {}", view.product, view.consumer),
        version: "1.0.0".to_owned(),
        status: status(view.state).to_owned(),
        domain: view.provider.clone(),
        data_product: descriptor.name.clone(),
        description: Description {
            purpose: view.purpose.clone(),
            usage: format!(
                "Fetch with `meshnode fetch {} --agreement {}` from the {} domain; the provider applies the column projection and row filter before the data leaves it.",
                view.product, view.short_id, view.consumer
            ),
            limitations,
        },
        schema: vec![SchemaObject {
            name: descriptor.name.clone(),
            physical_type: "table".to_owned(),
            logical_type: "object".to_owned(),
            description: descriptor.description.clone(),
            properties,
        }],
        roles: vec![
            RoleEntry {
                role: "provider".to_owned(),
                access: "owner".to_owned(),
                description: format!("{} (key {})", view.provider, view.provider_key),
            },
            RoleEntry {
                role: "consumer".to_owned(),
                access: "read".to_owned(),
                description: format!("{} (key {})", view.consumer, view.consumer_key),
            },
        ],
        sla_properties: vec![
            SlaProperty {
                property: "frequency".to_owned(),
                value: sla.update_frequency.clone().into(),
                unit: None,
            },
            SlaProperty {
                property: "latency".to_owned(),
                value: sla.freshness_hours.into(),
                unit: Some("h".to_owned()),
            },
            SlaProperty {
                property: "availability".to_owned(),
                value: serde_json::Value::from(f64::from(sla.availability_bp) / 100.0),
                unit: Some("%".to_owned()),
            },
        ],
        custom_properties: vec![
            custom("agreementId", view.id.clone().into()),
            custom("contractState", view.state.as_str().into()),
            custom(
                "validFrom",
                crate::views::rfc3339(view.created_at_ms).into(),
            ),
            custom("expiresAt", view.expires_at.clone().into()),
            custom("versions", view.version_range.clone().into()),
            custom("providerKey", view.provider_key.clone().into()),
            custom("consumerKey", view.consumer_key.clone().into()),
            custom("consumerDomain", view.consumer.clone().into()),
        ],
    };
    // Only when there is one: a null value would be the one non-string custom property.
    if let Some(filter) = &view.filter {
        document
            .custom_properties
            .insert(2, custom("filter", filter.clone().into()));
    }
    document
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_types() {
        for (arrow, odcs) in [
            ("Int64", "integer"),
            ("UInt8", "integer"),
            ("Float64", "number"),
            ("Decimal128(10, 2)", "number"),
            ("Utf8", "string"),
            ("LargeUtf8", "string"),
            ("Boolean", "boolean"),
            ("Date32", "date"),
            ("Timestamp(Microsecond, None)", "date"),
            ("Time32(s)", "string"),
            ("Time64(Microsecond)", "string"),
            ("Dictionary(Int32, Utf8)", "string"),
            ("not a type", "string"),
        ] {
            assert_eq!(logical_type(arrow), odcs, "{arrow}");
        }
    }

    #[test]
    fn physical_types_are_named_as_pyarrow_names_them() {
        for (arrow, name) in [
            ("Int64", "int64"),
            ("UInt8", "uint8"),
            ("Float64", "double"),
            ("Float32", "float"),
            ("Boolean", "bool"),
            ("Utf8", "string"),
            ("LargeUtf8", "large_string"),
            ("Binary", "binary"),
            ("Date32", "date32[day]"),
            ("Date64", "date64[ms]"),
            ("Timestamp(Microsecond, None)", "timestamp[us]"),
            ("Timestamp(ms)", "timestamp[ms]"),
            (
                r#"Timestamp(Microsecond, Some("UTC"))"#,
                "timestamp[us, tz=UTC]",
            ),
            (
                r#"Timestamp(Nanosecond, Some("+01:00"))"#,
                "timestamp[ns, tz=+01:00]",
            ),
            ("Time32(s)", "time32[s]"),
            ("Time64(Microsecond)", "time64[us]"),
            ("Duration(Second)", "duration[s]"),
            ("Decimal128(10, 2)", "decimal128(10, 2)"),
            ("FixedSizeBinary(16)", "fixed_size_binary[16]"),
            ("List(Int64)", "list<item: int64>"),
            ("List(non-null Int64)", "list<item: int64 not null>"),
            (
                "Dictionary(Int32, Utf8)",
                "dictionary<values=string, indices=int32, ordered=0>",
            ),
            (
                r#"Struct("a": Int64, "b": non-null Utf8)"#,
                "struct<a: int64, b: string not null>",
            ),
            ("Null", "null"),
        ] {
            assert_eq!(physical_type(arrow), name, "{arrow}");
        }
        // What does not parse (unknown, or beyond the parser's bounds) is kept as it is.
        assert_eq!(physical_type("not a type"), "not a type");
        let deep = format!("{}Int32{}", "List(".repeat(3000), ")".repeat(3000));
        assert_eq!(physical_type(&deep), deep);
    }

    #[test]
    fn every_string_is_double_quoted_and_escaped() {
        for (text, yaml) in [
            ("2024-12-31T00:00:00Z", r#""2024-12-31T00:00:00Z""#),
            ("yes", r#""yes""#),
            ("1:20", r#""1:20""#),
            ("~", r#""~""#),
            ("", r#""""#),
            ("a \"b\" \\ c", r#""a \"b\" \\ c""#),
            ("line\nbreak\ttab", r#""line\nbreak\ttab""#),
            (
                "\u{85}\u{2028}\u{feff}\u{7f}\u{1}",
                r#""\u0085\u2028\ufeff\u007f\u0001""#,
            ),
            ("été 🦀", "\"été 🦀\""),
        ] {
            assert_eq!(quoted(text), yaml, "{text:?}");
        }
        assert_eq!(yaml_key("apiVersion"), "apiVersion");
        assert_eq!(yaml_key("on"), r#""on""#);
        assert_eq!(yaml_key("a b"), r#""a b""#);
        assert_eq!(yaml_scalar(&Yaml::from(100.0)), "100.0");
        assert_eq!(yaml_scalar(&Yaml::from(99.9)), "99.9");
        assert_eq!(yaml_scalar(&Yaml::from(24)), "24");
        assert_eq!(yaml_scalar(&Yaml::Null), "null");
    }

    const NOW: u64 = 1_735_603_200_000;

    fn descriptor() -> ProductDescriptor {
        use mesh_protocol::descriptor::{
            Approval, ColumnSchema, ContentDigest, Policy, Sla, Status,
        };
        let column = |name: &str, data_type: &str| ColumnSchema {
            name: name.into(),
            data_type: data_type.into(),
            nullable: name != "order_id",
        };
        ProductDescriptor {
            owner: mesh_protocol::Identity::from_secret_bytes([1; 32]).public_key(),
            domain: "sales".into(),
            name: "orders".into(),
            version: 2,
            title: "Orders".into(),
            description: "Orders per region".into(),
            tags: vec![],
            schema: vec![
                column("order_id", "Int64"),
                column("region", "Utf8"),
                column("email", "Utf8"),
                column("at", r#"Timestamp(Microsecond, Some("UTC"))"#),
            ],
            rows: 3,
            bytes: 100,
            digest: ContentDigest([0; 32]),
            published_at_ms: NOW,
            sla: Sla {
                update_frequency: "daily".into(),
                freshness_hours: 24,
                availability_bp: 10_000,
            },
            policy: Policy {
                approval: Approval::Manual,
                allowed_purposes: vec!["analytics".into()],
                max_contract_days: 90,
                restricted_columns: vec!["email".into()],
            },
            lineage: vec![],
            data_addr: None,
            status: Status::Active,
            stewardship: Default::default(),
        }
    }

    fn view(state: ContractState, columns: Option<&[&str]>) -> AgreementView {
        AgreementView {
            id: "ab".repeat(32),
            short_id: "ab".repeat(6),
            product: "sales/orders".into(),
            provider: "sales".into(),
            consumer: "yes".into(),
            provider_key: "01".repeat(32),
            consumer_key: "02".repeat(32),
            role: crate::agreements::Role::Provider,
            state,
            purpose: "analytics".into(),
            columns: columns.map(|c| c.iter().map(|s| (*s).to_owned()).collect()),
            all_future_columns: columns.is_none(),
            // Deliberately wrong: the document must not trust it.
            granted_columns: Some(vec!["email".into()]),
            filter: Some("region = 'EU'".into()),
            version_range: "2..".into(),
            min_version: 2,
            max_version: None,
            created_at_ms: NOW,
            expires_at_ms: NOW + 86_400_000,
            expires_at: crate::views::rfc3339(NOW + 86_400_000),
            updated_at_ms: NOW,
            reason: None,
            revoked_by: None,
        }
    }

    fn columns(doc: &DataContract) -> Vec<(&str, &str)> {
        doc.schema[0]
            .properties
            .iter()
            .map(|p| (p.name.as_str(), p.physical_type.as_str()))
            .collect()
    }

    #[test]
    fn restricted_columns_are_in_no_schema_whatever_the_state() {
        let d = descriptor();
        for state in [
            ContractState::Requested,
            ContractState::Pending,
            ContractState::Agreed,
            ContractState::Rejected,
            ContractState::Revoked,
            ContractState::Expired,
        ] {
            // Asked for by name (a request the policy rejects).
            let doc = data_contract(&view(state, Some(&["email", "region"])), &d);
            assert_eq!(columns(&doc), [("region", "string")], "{state:?}");
            // Every current and future column.
            let doc = data_contract(&view(state, None), &d);
            assert_eq!(
                columns(&doc),
                [
                    ("order_id", "int64"),
                    ("region", "string"),
                    ("at", "timestamp[us, tz=UTC]")
                ],
                "{state:?}"
            );
            assert!(!doc.to_yaml().unwrap().contains("name: \"email\""));
        }
    }

    #[test]
    fn yaml_keeps_every_value_a_string_where_it_is_one() {
        let doc = data_contract(
            &view(ContractState::Agreed, Some(&["order_id"])),
            &descriptor(),
        );
        let yaml = doc.to_yaml().unwrap();
        assert!(
            yaml.starts_with("apiVersion: \"v3.0.2\"\nkind: \"DataContract\"\n"),
            "{yaml}"
        );
        assert!(
            yaml.contains("- property: \"validFrom\"\n    value: \"2024-12-31T00:00:00.000Z\"\n"),
            "{yaml}"
        );
        assert!(yaml.contains("    value: 100.0\n"), "{yaml}");
        assert!(yaml.contains("    required: true\n"), "{yaml}");
        // No filter: no `filter` property (a null would be the one value that is no string).
        let mut all_rows = view(ContractState::Agreed, None);
        all_rows.filter = None;
        let all_rows = data_contract(&all_rows, &descriptor());
        assert!(
            all_rows
                .custom_properties
                .iter()
                .all(|p| p.property != "filter" && p.value.is_string())
        );
        assert!(doc.custom_properties.iter().any(|p| p.property == "filter"));
        // The YAML reads back as the same document.
        let back: DataContract = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(back, doc);
        let back: Yaml = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(back, serde_yaml_ng::to_value(&doc).unwrap());
    }

    #[test]
    fn deeply_nested_types_are_not_parsed() {
        let nested = |n: usize| format!("{}Int32{}", "List(".repeat(n), ")".repeat(n));
        let (shallow, deep) = (nested(2), nested(3000));
        // On a small stack: an unbounded parse of the deep type would overflow it.
        let kinds = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || (logical_type(&shallow), logical_type(&deep)))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(kinds, ("array", "string"));
    }
}
