//! Product descriptors: the signed metadata every node gossips about a data product.

use std::fmt;
use std::str::FromStr;

use arrow_schema::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

use crate::envelope::Signable;
use crate::identity::PublicKey;

/// Longest product or domain name.
pub const MAX_NAME_LEN: usize = 64;
/// Largest encoded descriptor body (schema, description and lineage included).
pub const MAX_DESCRIPTOR_BYTES: usize = 64 * 1024;

/// Canonical identity of a product: the owner's key and the product name. Domain names are
/// only labels; two keys may claim the same one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProductId {
    /// Key of the owning domain.
    pub owner: PublicKey,
    /// Product name, `[a-z0-9-]`.
    pub name: String,
}

impl ProductId {
    /// Stable key for stores and maps: `<owner hex>/<name>`.
    pub fn storage_key(&self) -> String {
        format!("{}/{}", self.owner.to_hex(), self.name)
    }

    /// Inverse of [`ProductId::storage_key`].
    pub fn from_storage_key(key: &str) -> Option<Self> {
        let (owner, name) = key.split_once('/')?;
        Some(Self {
            owner: PublicKey::from_hex(owner).ok()?,
            name: name.to_owned(),
        })
    }
}

/// BLAKE3 digest of a product's Arrow IPC file.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContentDigest(pub [u8; 32]);

impl ContentDigest {
    /// Hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<blake3::Hash> for ContentDigest {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl fmt::Debug for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentDigest({})", self.to_hex())
    }
}

impl fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// One column of a product's Arrow schema, in a deterministic, tool-neutral form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSchema {
    /// Column name.
    pub name: String,
    /// Arrow data type in its canonical display form (`Int64`, `Utf8`,
    /// `Timestamp(Microsecond, None)`), parseable by `arrow_schema::DataType::from_str`.
    pub data_type: String,
    /// Whether the column may hold nulls.
    pub nullable: bool,
}

/// Converts an Arrow schema into descriptor columns.
pub fn columns_from_arrow(schema: &Schema) -> Vec<ColumnSchema> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnSchema {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}

/// Rebuilds the Arrow schema from descriptor columns.
pub fn columns_to_arrow(columns: &[ColumnSchema]) -> Result<Schema, DescriptorError> {
    let fields = columns
        .iter()
        .map(|c| {
            let data_type = DataType::from_str(&c.data_type).map_err(|_| {
                DescriptorError::Invalid(format!(
                    "column `{}` has an unknown Arrow type `{}`",
                    c.name, c.data_type
                ))
            })?;
            Ok(Field::new(&c.name, data_type, c.nullable))
        })
        .collect::<Result<Vec<_>, DescriptorError>>()?;
    Ok(Schema::new(fields))
}

/// How a provider answers contract requests for a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    /// Requests that satisfy the policy are agreed at once.
    #[default]
    Auto,
    /// Requests wait for the operator's `share accept` or `share reject`.
    Manual,
}

impl fmt::Display for Approval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Approval::Auto => "auto",
            Approval::Manual => "manual",
        })
    }
}

impl FromStr for Approval {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Approval::Auto),
            "manual" => Ok(Approval::Manual),
            other => Err(format!(
                "approval must be `auto` or `manual`, not `{other}`"
            )),
        }
    }
}

/// Sharing policy published with the product.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Policy {
    /// Automatic or operator approval.
    pub approval: Approval,
    /// Purposes a consumer may state; empty means any purpose.
    pub allowed_purposes: Vec<String>,
    /// Longest contract validity in days.
    pub max_contract_days: u32,
    /// Columns (e.g. PII) that no contract may grant.
    pub restricted_columns: Vec<String>,
}

/// Service levels the owner promises.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Sla {
    /// How often a new version is published, e.g. `daily`.
    pub update_frequency: String,
    /// Largest age of the newest data the owner promises, in hours.
    pub freshness_hours: u32,
    /// Availability target in basis points (9990 = 99.90 %).
    pub availability_bp: u32,
}

/// Lifecycle of a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Published and served.
    #[default]
    Active,
    /// Still served; consumers should move on.
    Deprecated,
    /// No longer served. Retirement is a newer version with this status.
    Retired,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Active => "active",
            Status::Deprecated => "deprecated",
            Status::Retired => "retired",
        })
    }
}

/// A product this one was derived from, `domain/product@version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineageRef {
    /// Domain name of the input's owner.
    pub domain: String,
    /// Product name of the input.
    pub product: String,
    /// Version used.
    pub version: u64,
}

/// Everything the mesh knows about one version of a data product. Signed by its owner and
/// gossiped; the data itself moves only over the data plane under a contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductDescriptor {
    /// Key of the owning domain; must equal the envelope's signer.
    pub owner: PublicKey,
    /// Human name of the owning domain.
    pub domain: String,
    /// Product name, `[a-z0-9-]`, unique per owner.
    pub name: String,
    /// Strictly increasing per product.
    pub version: u64,
    /// One-line title.
    pub title: String,
    /// Longer description.
    pub description: String,
    /// Search tags.
    pub tags: Vec<String>,
    /// Arrow schema of the data.
    pub schema: Vec<ColumnSchema>,
    /// Number of rows.
    pub rows: u64,
    /// Size of the Arrow IPC file in bytes.
    pub bytes: u64,
    /// BLAKE3 of the Arrow IPC file.
    pub digest: ContentDigest,
    /// Publication time, milliseconds since the Unix epoch.
    pub published_at_ms: u64,
    /// Promised service levels.
    pub sla: Sla,
    /// Sharing policy.
    pub policy: Policy,
    /// Products this one was derived from.
    pub lineage: Vec<LineageRef>,
    /// Data-plane address (`host:port`) to fetch from, if the owner serves one.
    pub data_addr: Option<String>,
    /// Lifecycle status.
    pub status: Status,
}

impl Signable for ProductDescriptor {
    const CONTEXT: &'static str = "meshnode/descriptor/v1";
    const MAX_BODY: usize = MAX_DESCRIPTOR_BYTES;
}

/// Why a descriptor is not acceptable even with a good signature.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum DescriptorError {
    /// A field breaks a rule.
    #[error("{0}")]
    Invalid(String),
}

/// Checks a domain or product name: 1–64 characters of `[a-z0-9-]`, not starting with `-`.
pub fn validate_name(kind: &str, name: &str) -> Result<(), DescriptorError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(DescriptorError::Invalid(format!(
            "{kind} name `{name}` is invalid: use 1-{MAX_NAME_LEN} characters of a-z, 0-9 and `-`, not starting with `-`"
        )))
    }
}

impl ProductDescriptor {
    /// The canonical id.
    pub fn id(&self) -> ProductId {
        ProductId {
            owner: self.owner,
            name: self.name.clone(),
        }
    }

    /// Human form `domain/name`.
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.domain, self.name)
    }

    /// Column names in schema order.
    pub fn column_names(&self) -> impl Iterator<Item = &str> {
        self.schema.iter().map(|c| c.name.as_str())
    }

    /// Checks the rules a signature cannot: names, version, restricted columns in the schema,
    /// types parseable.
    pub fn validate(&self) -> Result<(), DescriptorError> {
        validate_name("domain", &self.domain)?;
        validate_name("product", &self.name)?;
        if self.version == 0 {
            return Err(DescriptorError::Invalid("version must start at 1".into()));
        }
        if self.schema.is_empty() {
            return Err(DescriptorError::Invalid("the schema has no columns".into()));
        }
        columns_to_arrow(&self.schema)?;
        for col in &self.policy.restricted_columns {
            if !self.column_names().any(|c| c == col) {
                return Err(DescriptorError::Invalid(format!(
                    "restricted column `{col}` is not in the schema"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::identity::Identity;

    /// A valid descriptor for tests in this crate.
    pub(crate) fn sample(owner: &Identity, name: &str, version: u64) -> ProductDescriptor {
        ProductDescriptor {
            owner: owner.public_key(),
            domain: "sales".into(),
            name: name.into(),
            version,
            title: "Product sales".into(),
            description: "Daily sales per product".into(),
            tags: vec!["sales".into()],
            schema: vec![
                ColumnSchema {
                    name: "order_id".into(),
                    data_type: "Int64".into(),
                    nullable: false,
                },
                ColumnSchema {
                    name: "email".into(),
                    data_type: "Utf8".into(),
                    nullable: true,
                },
            ],
            rows: 10,
            bytes: 1000,
            digest: ContentDigest([1; 32]),
            published_at_ms: 1_700_000_000_000,
            sla: Sla::default(),
            policy: Policy {
                restricted_columns: vec!["email".into()],
                max_contract_days: 30,
                ..Policy::default()
            },
            lineage: vec![],
            data_addr: None,
            status: Status::Active,
        }
    }

    #[test]
    fn names() {
        assert!(validate_name("product", "product-sales").is_ok());
        assert!(validate_name("product", "Product").is_err());
        assert!(validate_name("product", "a/b").is_err());
        assert!(validate_name("product", "").is_err());
        assert!(validate_name("product", "-x").is_err());
        assert!(validate_name("product", &"a".repeat(65)).is_err());
    }

    #[test]
    fn validation() {
        let id = Identity::from_secret_bytes([1; 32]);
        assert!(sample(&id, "p", 1).validate().is_ok());
        let mut d = sample(&id, "p", 1);
        d.policy.restricted_columns.push("ssn".into());
        assert!(d.validate().unwrap_err().to_string().contains("ssn"));
        let mut d = sample(&id, "p", 1);
        d.schema[0].data_type = "NotAType".into();
        assert!(d.validate().is_err());
        assert!(sample(&id, "p", 0).validate().is_err());
    }

    #[test]
    fn arrow_schema_round_trip() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new(
                "t",
                DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, None),
                true,
            ),
            Field::new("s", DataType::Utf8, true),
        ]);
        let cols = columns_from_arrow(&schema);
        assert_eq!(columns_to_arrow(&cols).unwrap(), schema);
    }

    #[test]
    fn storage_key_round_trip() {
        let id = Identity::from_secret_bytes([1; 32]);
        let pid = sample(&id, "p", 1).id();
        assert_eq!(ProductId::from_storage_key(&pid.storage_key()), Some(pid));
    }
}
