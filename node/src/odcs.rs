//! A sharing contract as an Open Data Contract Standard (ODCS) v3 document
//! (`meshnode share show ID --odcs`).
//!
//! The document describes what the agreement grants: the product's schema cut down to the
//! granted columns, the provider's SLA, the purpose, and the contract-specific terms (filter,
//! validity, parties, agreement id) as custom properties. The types serialise to the ODCS
//! field names; the CLI prints them as YAML.

use arrow::datatypes::DataType;
use mesh_protocol::ProductDescriptor;
use mesh_protocol::contract::ContractState;
use serde::{Deserialize, Serialize};

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
    /// Arrow type.
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
            DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => "array",
            DataType::Struct(_) | DataType::Map(..) => "object",
            _ => "string",
        }
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
    let granted: Vec<String> = view
        .granted_columns
        .clone()
        .unwrap_or_else(|| descriptor.column_names().map(str::to_owned).collect());
    let properties = descriptor
        .schema
        .iter()
        .filter(|c| granted.contains(&c.name))
        .map(|c| SchemaProperty {
            name: c.name.clone(),
            logical_type: logical_type(&c.data_type).to_owned(),
            physical_type: c.data_type.clone(),
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
    DataContract {
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
                "filter",
                view.filter
                    .clone()
                    .map_or(serde_json::Value::Null, Into::into),
            ),
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
    }
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
            ("Dictionary(Int32, Utf8)", "string"),
            ("not a type", "string"),
        ] {
            assert_eq!(logical_type(arrow), odcs, "{arrow}");
        }
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
