//! Product descriptors: the signed metadata every node gossips about a data product.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use arrow_schema::{Field, Schema};
use serde::{Deserialize, Serialize};

use crate::bounds::{self, BoundsError, TypeError, check_count, check_len};
use crate::envelope::{Signable, Signed};
use crate::identity::{Identity, PublicKey};

/// Longest product or domain name.
pub const MAX_NAME_LEN: usize = 64;
/// Largest encoded descriptor body (schema, description and lineage included). Receivers
/// refuse larger bodies before decoding, so [`ProductDescriptor::sign_for_publication`]
/// refuses to sign one.
pub const MAX_DESCRIPTOR_BYTES: usize = 64 * 1024;
/// Most columns in a schema. Wider tables do not fit [`MAX_DESCRIPTOR_BYTES`] anyway once
/// names and types are spelled out; the count is checked first so the error says why.
pub const MAX_COLUMNS: usize = 2048;
/// Longest column name, in bytes.
pub const MAX_COLUMN_NAME_LEN: usize = 256;
/// Longest title, in bytes.
pub const MAX_TITLE_LEN: usize = 256;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 16 * 1024;
/// Most tags.
pub const MAX_TAGS: usize = 32;
/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 64;
/// Most allowed purposes in a policy.
pub const MAX_PURPOSES: usize = 32;
/// Longest allowed purpose, in bytes.
pub const MAX_PURPOSE_LEN: usize = 128;
/// Most lineage inputs.
pub const MAX_LINEAGE: usize = 64;
/// Longest short label: a lineage domain or product, the SLA's update frequency, the
/// data-plane address.
pub const MAX_LABEL_LEN: usize = 256;

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

/// Rebuilds the Arrow schema from descriptor columns. Bounded: checks the column count, name
/// lengths and every type string ([`bounds::parse_data_type`]) before parsing it.
pub fn columns_to_arrow(columns: &[ColumnSchema]) -> Result<Schema, DescriptorError> {
    check_columns(columns)?;
    let fields = columns
        .iter()
        .map(|c| {
            let data_type = bounds::parse_data_type(&c.data_type).map_err(|source| {
                DescriptorError::ColumnType {
                    column: c.name.clone(),
                    source,
                }
            })?;
            Ok(Field::new(&c.name, data_type, c.nullable))
        })
        .collect::<Result<Vec<_>, DescriptorError>>()?;
    Ok(Schema::new(fields))
}

/// Checks the column count and the length of every column name, without parsing types.
pub fn check_columns(columns: &[ColumnSchema]) -> Result<(), DescriptorError> {
    check_count("the schema", columns.len(), MAX_COLUMNS)?;
    for c in columns {
        check_len("a column name", &c.name, MAX_COLUMN_NAME_LEN)?;
    }
    Ok(())
}

/// Checks the operator-supplied text of a descriptor: title, description and tags. Exposed so
/// that `publish` can refuse them before it ingests a file.
pub fn check_text(title: &str, description: &str, tags: &[String]) -> Result<(), BoundsError> {
    check_len("the title", title, MAX_TITLE_LEN)?;
    check_len("the description", description, MAX_DESCRIPTION_LEN)?;
    check_count("the tag list", tags.len(), MAX_TAGS)?;
    for tag in tags {
        check_len("a tag", tag, MAX_TAG_LEN)?;
    }
    Ok(())
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

/// Who answers for a product and what its columns hold: the fields the mesh's global
/// policies ([`crate::governance::policy`]) check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Stewardship {
    /// How to reach the owning team (an e-mail address or a chat channel); empty if not given.
    pub contact: String,
    /// Classification tags of columns (`pii`, `financial`), one entry per tagged column.
    pub column_tags: Vec<ColumnTags>,
}

/// The classification tags of one column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnTags {
    /// Column name; must be in the schema.
    pub column: String,
    /// Tags, e.g. `pii`.
    pub tags: Vec<String>,
}

impl Stewardship {
    /// The classification tags of `column` (empty when it has none).
    pub fn tags_of(&self, column: &str) -> &[String] {
        self.column_tags
            .iter()
            .find(|c| c.column == column)
            .map(|c| c.tags.as_slice())
            .unwrap_or(&[])
    }
}

/// Reads `column=tag` pairs (the operator's `--classify`) into per-column tag lists, in the
/// order columns first appear. Tags are `[a-z0-9-]` names.
pub fn parse_column_tags(pairs: &[String]) -> Result<Vec<ColumnTags>, DescriptorError> {
    let mut out: Vec<ColumnTags> = Vec::new();
    for pair in pairs {
        let Some((column, tag)) = pair.split_once('=') else {
            return Err(DescriptorError::Invalid(format!(
                "classification `{}` is not `column=tag` (e.g. `email=pii`)",
                shown(pair)
            )));
        };
        validate_name("classification tag", tag)?;
        match out.iter_mut().find(|c| c.column == column) {
            Some(entry) if entry.tags.iter().any(|t| t == tag) => {}
            Some(entry) => entry.tags.push(tag.to_owned()),
            None => out.push(ColumnTags {
                column: column.to_owned(),
                tags: vec![tag.to_owned()],
            }),
        }
    }
    Ok(out)
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
    /// Owner contact and column classification.
    pub stewardship: Stewardship,
}

impl Signable for ProductDescriptor {
    const CONTEXT: &'static str = "meshnode/descriptor/v2";
    const MAX_BODY: usize = MAX_DESCRIPTOR_BYTES;
}

/// Why a descriptor is not acceptable even with a good signature.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum DescriptorError {
    /// A field breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// A text, list or nesting over its limit (see the `MAX_*` constants).
    #[error(transparent)]
    OverLimit(#[from] BoundsError),
    /// A column's type is too long, too deeply nested, or not an Arrow type.
    #[error("column `{}`: {source}", shown(column))]
    ColumnType {
        /// The column's name.
        column: String,
        /// What is wrong with its type.
        #[source]
        source: TypeError,
    },
    /// The encoded descriptor is larger than peers accept.
    #[error(
        "the descriptor encodes to {len} bytes; peers accept at most {max}: shorten the \
         description or publish fewer columns"
    )]
    TooLarge {
        /// Encoded size in bytes.
        len: usize,
        /// [`MAX_DESCRIPTOR_BYTES`].
        max: usize,
    },
}

impl DescriptorError {
    /// True when the descriptor breaks a size, count or depth limit rather than a rule of
    /// content: receivers count these rejections apart.
    pub fn is_over_limit(&self) -> bool {
        matches!(
            self,
            DescriptorError::OverLimit(_)
                | DescriptorError::TooLarge { .. }
                | DescriptorError::ColumnType {
                    source: TypeError::Bounds(_),
                    ..
                }
        )
    }
}

/// A name for an error message, cut to [`bounds::SHOWN_TYPE_CHARS`] characters.
fn shown(name: &str) -> String {
    let mut chars = name.chars();
    let head: String = chars.by_ref().take(bounds::SHOWN_TYPE_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}...")
    } else {
        head
    }
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
            "{kind} name `{}` is invalid: use 1-{MAX_NAME_LEN} characters of a-z, 0-9 and `-`, not starting with `-`",
            shown(name)
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

    /// Checks the rules a signature cannot: names, version, every length, count and nesting
    /// limit, column names distinct, restricted and classified columns in the schema and
    /// each named once, types parseable. Limits come first, so no parser sees a field that is
    /// over its bound. Linear in the descriptor's size (name checks are hash lookups). Never
    /// panics.
    pub fn validate(&self) -> Result<(), DescriptorError> {
        validate_name("domain", &self.domain)?;
        validate_name("product", &self.name)?;
        if self.version == 0 {
            return Err(DescriptorError::Invalid("version must start at 1".into()));
        }
        check_text(&self.title, &self.description, &self.tags)?;
        check_columns(&self.schema)?;
        let policy = &self.policy;
        check_count(
            "the allowed purposes",
            policy.allowed_purposes.len(),
            MAX_PURPOSES,
        )?;
        for purpose in &policy.allowed_purposes {
            check_len("an allowed purpose", purpose, MAX_PURPOSE_LEN)?;
        }
        check_count(
            "the restricted columns",
            policy.restricted_columns.len(),
            MAX_COLUMNS,
        )?;
        check_count("the lineage", self.lineage.len(), MAX_LINEAGE)?;
        for input in &self.lineage {
            check_len("a lineage domain", &input.domain, MAX_LABEL_LEN)?;
            check_len("a lineage product", &input.product, MAX_LABEL_LEN)?;
        }
        check_len(
            "the update frequency",
            &self.sla.update_frequency,
            MAX_LABEL_LEN,
        )?;
        if let Some(addr) = &self.data_addr {
            check_len("the data-plane address", addr, MAX_LABEL_LEN)?;
        }
        check_len("the contact", &self.stewardship.contact, MAX_LABEL_LEN)?;
        check_count(
            "the classified columns",
            self.stewardship.column_tags.len(),
            MAX_COLUMNS,
        )?;
        for classified in &self.stewardship.column_tags {
            check_count("a column's tag list", classified.tags.len(), MAX_TAGS)?;
            for tag in &classified.tags {
                check_len("a column tag", tag, MAX_TAG_LEN)?;
            }
        }
        if self.schema.is_empty() {
            return Err(DescriptorError::Invalid("the schema has no columns".into()));
        }
        let mut names: HashSet<&str> = HashSet::with_capacity(self.schema.len());
        for name in self.column_names() {
            if !names.insert(name) {
                return Err(DescriptorError::Invalid(format!(
                    "column name `{}` is used twice in the schema: rename one of the columns",
                    shown(name)
                )));
            }
        }
        columns_to_arrow(&self.schema)?;
        let mut restricted: HashSet<&str> = HashSet::with_capacity(policy.restricted_columns.len());
        for col in &policy.restricted_columns {
            if !names.contains(col.as_str()) {
                return Err(DescriptorError::Invalid(format!(
                    "restricted column `{}` is not in the schema",
                    shown(col)
                )));
            }
            if !restricted.insert(col) {
                return Err(DescriptorError::Invalid(format!(
                    "restricted column `{}` is listed twice: list each column once",
                    shown(col)
                )));
            }
        }
        let column_tags = &self.stewardship.column_tags;
        let mut classified: HashSet<&str> = HashSet::with_capacity(column_tags.len());
        for entry in column_tags {
            if !names.contains(entry.column.as_str()) {
                return Err(DescriptorError::Invalid(format!(
                    "classified column `{}` is not in the schema",
                    shown(&entry.column)
                )));
            }
            if !classified.insert(&entry.column) {
                return Err(DescriptorError::Invalid(format!(
                    "classified column `{}` has two entries: give all its tags in one entry",
                    shown(&entry.column)
                )));
            }
        }
        Ok(())
    }

    /// Signs the descriptor after the checks every receiving peer runs on it: [`validate`]
    /// and the encoded size limit [`MAX_DESCRIPTOR_BYTES`]. A descriptor this refuses would
    /// be rejected by every peer and could not be read back from the local store.
    ///
    /// [`validate`]: ProductDescriptor::validate
    pub fn sign_for_publication(
        &self,
        identity: &Identity,
    ) -> Result<Signed<ProductDescriptor>, DescriptorError> {
        self.validate()?;
        let envelope = Signed::sign(identity, self);
        if envelope.body().len() > MAX_DESCRIPTOR_BYTES {
            return Err(DescriptorError::TooLarge {
                len: envelope.body().len(),
                max: MAX_DESCRIPTOR_BYTES,
            });
        }
        Ok(envelope)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use arrow_schema::DataType;

    use super::*;

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
            stewardship: Stewardship {
                contact: "sales-data@example.com".into(),
                column_tags: vec![ColumnTags {
                    column: "email".into(),
                    tags: vec!["pii".into()],
                }],
            },
        }
    }

    #[test]
    fn column_tags_are_parsed_and_grouped() {
        let pairs: Vec<String> = [
            "email=pii",
            "amount=financial",
            "email=contact",
            "email=pii",
        ]
        .map(String::from)
        .to_vec();
        let tags = parse_column_tags(&pairs).unwrap();
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0].column, "email");
        assert_eq!(tags[0].tags, vec!["pii", "contact"]);
        assert!(parse_column_tags(&["email".into()]).is_err());
        assert!(parse_column_tags(&["email=PII".into()]).is_err());
        let mut d = sample(&Identity::from_secret_bytes([1; 32]), "p", 1);
        d.stewardship.column_tags[0].column = "nope".into();
        assert!(
            d.validate().is_err(),
            "a classified column must be in the schema"
        );
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

    /// `List(` nested `n` deep around `Int32`.
    fn nested_list(n: usize) -> String {
        format!("{}Int32{}", "List(".repeat(n), ")".repeat(n))
    }

    /// Validates on a thread with a small stack: an unbounded type parse would overflow it
    /// (and abort the test run) instead of returning.
    fn validate_on_small_stack(d: ProductDescriptor) -> Result<(), DescriptorError> {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || d.validate())
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn deeply_nested_type_is_refused_before_parsing() {
        let id = Identity::from_secret_bytes([1; 32]);
        let mut d = sample(&id, "p", 1);
        d.schema[0].data_type = nested_list(3000);
        let err = validate_on_small_stack(d.clone()).unwrap_err();
        assert!(err.is_over_limit());
        assert_eq!(
            err.to_string(),
            "column `order_id`: the Arrow type is nested 3000 levels deep; the limit is 32"
        );
        // It fits the gossip limit, so only this check stands between it and the parser.
        let envelope = Signed::sign(&id, &d);
        let gossip = crate::wire::GossipMessage::Descriptor(envelope.clone()).to_bytes();
        assert!(gossip.len() < crate::wire::MAX_GOSSIP_MESSAGE);
        assert_eq!(
            crate::catalog::merge(&envelope, |_| None),
            crate::catalog::MergeOutcome::Rejected(crate::catalog::RejectReason::OverLimit)
        );
        assert!(d.sign_for_publication(&id).unwrap_err().is_over_limit());

        // At the limit it is a valid, if odd, descriptor.
        d.schema[0].data_type = nested_list(crate::bounds::MAX_TYPE_DEPTH);
        d.policy.restricted_columns.clear();
        assert_eq!(validate_on_small_stack(d), Ok(()));
    }

    #[test]
    fn every_text_and_list_is_bounded() {
        let id = Identity::from_secret_bytes([1; 32]);
        let refused = |change: &dyn Fn(&mut ProductDescriptor)| {
            let mut d = sample(&id, "p", 1);
            change(&mut d);
            let err = d.validate().unwrap_err();
            assert!(err.is_over_limit(), "{err}");
            // Peers refuse it too: counted as over a limit, or as oversized when the whole
            // body is over the wire limit and never decoded.
            let outcome = crate::catalog::merge(&Signed::sign(&id, &d), |_| None);
            assert!(
                matches!(
                    outcome,
                    crate::catalog::MergeOutcome::Rejected(
                        crate::catalog::RejectReason::OverLimit
                            | crate::catalog::RejectReason::Oversized
                    )
                ),
                "{outcome:?}"
            );
            err.to_string()
        };
        assert_eq!(
            refused(&|d| d.description = "x".repeat(100_000)),
            "the description is 100000 bytes long; the limit is 16384"
        );
        assert_eq!(
            refused(&|d| d.title = "t".repeat(MAX_TITLE_LEN + 1)),
            "the title is 257 bytes long; the limit is 256"
        );
        assert_eq!(
            refused(&|d| d.tags = vec!["t".into(); MAX_TAGS + 1]),
            "the tag list has 33 entries; the limit is 32"
        );
        refused(&|d| d.tags = vec!["t".repeat(MAX_TAG_LEN + 1)]);
        assert_eq!(
            refused(&|d| {
                d.schema = (0..5000)
                    .map(|i| ColumnSchema {
                        name: format!("c{i}"),
                        data_type: "Int64".into(),
                        nullable: true,
                    })
                    .collect()
            }),
            "the schema has 5000 entries; the limit is 2048"
        );
        refused(&|d| d.schema[0].name = "n".repeat(MAX_COLUMN_NAME_LEN + 1));
        refused(&|d| d.schema[0].data_type = format!("Struct({})", "\"a\": Int8, ".repeat(4000)));
        refused(&|d| d.policy.allowed_purposes = vec!["p".into(); MAX_PURPOSES + 1]);
        refused(&|d| d.policy.allowed_purposes = vec!["p".repeat(MAX_PURPOSE_LEN + 1)]);
        refused(&|d| {
            d.lineage = vec![
                LineageRef {
                    domain: "a".into(),
                    product: "b".into(),
                    version: 1
                };
                MAX_LINEAGE + 1
            ]
        });
        refused(&|d| d.sla.update_frequency = "d".repeat(MAX_LABEL_LEN + 1));
        refused(&|d| d.data_addr = Some("h".repeat(MAX_LABEL_LEN + 1)));
        // At every limit the descriptor is still valid.
        let mut d = sample(&id, "p", 1);
        d.title = "t".repeat(MAX_TITLE_LEN);
        d.description = "x".repeat(MAX_DESCRIPTION_LEN);
        d.tags = vec!["t".repeat(MAX_TAG_LEN); MAX_TAGS];
        assert_eq!(d.validate(), Ok(()));
        assert!(d.sign_for_publication(&id).is_ok());
    }

    #[test]
    fn publication_refuses_what_peers_could_not_decode() {
        let id = Identity::from_secret_bytes([1; 32]);
        let mut d = sample(&id, "p", 1);
        // Every field within its own limit, the whole over the wire limit.
        d.description = "x".repeat(MAX_DESCRIPTION_LEN);
        d.schema = (0..MAX_COLUMNS)
            .map(|i| ColumnSchema {
                name: format!("a_fairly_long_column_name_{i:05}"),
                data_type: "Int64".into(),
                nullable: true,
            })
            .collect();
        d.policy.restricted_columns.clear();
        d.stewardship.column_tags.clear();
        assert_eq!(d.validate(), Ok(()));
        let err = d.sign_for_publication(&id).unwrap_err();
        let DescriptorError::TooLarge { len, max } = err else {
            panic!("expected TooLarge, got {err:?}");
        };
        assert!(len > MAX_DESCRIPTOR_BYTES);
        assert_eq!(max, MAX_DESCRIPTOR_BYTES);
        assert!(err.is_over_limit());
        assert!(
            err.to_string()
                .contains("shorten the description or publish fewer columns")
        );
        // What a peer does with it: refused before decoding.
        let envelope = Signed::sign(&id, &d);
        assert_eq!(
            crate::catalog::merge(&envelope, |_| None),
            crate::catalog::MergeOutcome::Rejected(crate::catalog::RejectReason::Oversized)
        );

        // The largest descriptor publication accepts still fits one gossip message.
        let mut fits = sample(&id, "p", 1);
        fits.description = "x".repeat(MAX_DESCRIPTION_LEN);
        fits.schema = d.schema[..1200].to_vec();
        fits.policy.restricted_columns.clear();
        fits.stewardship.column_tags.clear();
        let envelope = fits.sign_for_publication(&id).unwrap();
        assert!(envelope.body().len() > MAX_DESCRIPTOR_BYTES - 8 * 1024);
        let gossip = crate::wire::GossipMessage::Descriptor(envelope.clone()).to_bytes();
        assert!(gossip.len() <= crate::wire::MAX_GOSSIP_MESSAGE);
        assert!(matches!(
            crate::catalog::merge(&envelope, |_| None),
            crate::catalog::MergeOutcome::Accepted(_)
        ));
    }

    #[test]
    fn names_listed_twice_are_refused() {
        let id = Identity::from_secret_bytes([1; 32]);
        let refused = |change: &dyn Fn(&mut ProductDescriptor)| {
            let mut d = sample(&id, "p", 1);
            change(&mut d);
            let err = d.validate().unwrap_err();
            assert!(!err.is_over_limit(), "{err}");
            assert_eq!(
                crate::catalog::merge(&Signed::sign(&id, &d), |_| None),
                crate::catalog::MergeOutcome::Rejected(crate::catalog::RejectReason::Invalid)
            );
            err.to_string()
        };
        assert_eq!(
            refused(&|d| d.schema.push(d.schema[0].clone())),
            "column name `order_id` is used twice in the schema: rename one of the columns"
        );
        assert_eq!(
            refused(&|d| d.policy.restricted_columns.push("email".into())),
            "restricted column `email` is listed twice: list each column once"
        );
        assert_eq!(
            refused(&|d| {
                d.stewardship.column_tags.push(ColumnTags {
                    column: "email".into(),
                    tags: vec!["contact".into()],
                })
            }),
            "classified column `email` has two entries: give all its tags in one entry"
        );
        // The widest lists of repeated entries, refused as quickly.
        let started = std::time::Instant::now();
        let err = refused(&|d| {
            d.schema = wide_schema();
            let last = d.schema[MAX_COLUMNS - 1].name.clone();
            d.policy.restricted_columns = vec![last.clone(); MAX_COLUMNS];
            d.stewardship.column_tags = vec![
                ColumnTags {
                    column: last.clone(),
                    tags: vec!["pii".into()],
                };
                MAX_COLUMNS
            ];
        });
        assert!(started.elapsed() < QUICK, "{:?}", started.elapsed());
        assert_eq!(
            err,
            "restricted column `c2047` is listed twice: list each column once"
        );
    }

    /// A generous bound for work linear in a descriptor: a quadratic scan of the widest one
    /// takes far longer in a debug build.
    pub(crate) const QUICK: std::time::Duration = std::time::Duration::from_secs(1);

    /// [`MAX_COLUMNS`] columns `c0`, `c1`, ...: short names, so that a descriptor restricting
    /// and classifying every one of them still fits one gossip message.
    pub(crate) fn wide_schema() -> Vec<ColumnSchema> {
        (0..MAX_COLUMNS)
            .map(|i| ColumnSchema {
                name: format!("c{i}"),
                data_type: "Int8".into(),
                nullable: true,
            })
            .collect()
    }

    /// [`sample`] with [`wide_schema`], every column restricted and classified `pii`, in
    /// reverse order.
    pub(crate) fn widest(owner: &Identity) -> ProductDescriptor {
        let mut d = sample(owner, "p", 1);
        d.schema = wide_schema();
        d.policy.restricted_columns = d.schema.iter().rev().map(|c| c.name.clone()).collect();
        d.stewardship.column_tags = d
            .schema
            .iter()
            .rev()
            .map(|c| ColumnTags {
                column: c.name.clone(),
                tags: vec!["pii".into()],
            })
            .collect();
        d
    }

    #[test]
    fn the_widest_descriptor_validates_quickly() {
        let id = Identity::from_secret_bytes([1; 32]);
        let d = widest(&id);
        let started = std::time::Instant::now();
        for _ in 0..5 {
            assert_eq!(d.validate(), Ok(()));
        }
        let elapsed = started.elapsed();
        // Five validations: the gossip of a few copies.
        assert!(elapsed < QUICK, "five validations took {elapsed:?}");
        // It is a descriptor peers take: it fits one gossip message.
        let envelope = d.sign_for_publication(&id).unwrap();
        let gossip = crate::wire::GossipMessage::Descriptor(envelope.clone()).to_bytes();
        assert!(gossip.len() <= crate::wire::MAX_GOSSIP_MESSAGE);
        assert!(matches!(
            crate::catalog::merge(&envelope, |_| None),
            crate::catalog::MergeOutcome::Accepted(_)
        ));
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
