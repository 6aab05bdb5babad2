//! Fixed keys, clock and reference product: what the targets verify against and what the
//! seeds are made from. Everything is deterministic, so the seeds are too.

use std::sync::OnceLock;

use mesh_protocol::contract::Columns;
use mesh_protocol::descriptor::ProductId;
use mesh_protocol::descriptor::{
    Approval, ColumnSchema, ContentDigest, LineageRef, Policy, ProductDescriptor, Sla, Status,
};
use mesh_protocol::reconcile::SyncSet;
use mesh_protocol::{ContractTerms, Identity, PublicKey};

/// "Now" for every validity check: 2023-11-14.
pub const NOW_MS: u64 = 1_700_000_000_000;

/// Clock-skew tolerance for validity checks, as a node's default.
pub const SKEW_MS: u64 = 5 * 60 * 1000;

/// The providing domain's key: owns the reference product, countersigns, signs trailers.
pub fn provider() -> &'static Identity {
    static KEY: OnceLock<Identity> = OnceLock::new();
    KEY.get_or_init(|| Identity::from_secret_bytes([0x11; 32]))
}

/// The consuming domain's key: signs requests and withdrawals.
pub fn consumer() -> &'static Identity {
    static KEY: OnceLock<Identity> = OnceLock::new();
    KEY.get_or_init(|| Identity::from_secret_bytes([0x22; 32]))
}

/// The reference product: one column of each type family a filter can meet, a restricted
/// column, manual approval, a purpose list.
pub fn product() -> &'static ProductDescriptor {
    static PRODUCT: OnceLock<ProductDescriptor> = OnceLock::new();
    PRODUCT.get_or_init(|| {
        let column = |name: &str, data_type: &str, nullable: bool| ColumnSchema {
            name: name.into(),
            data_type: data_type.into(),
            nullable,
        };
        ProductDescriptor {
            owner: provider().public_key(),
            domain: "sales".into(),
            name: "orders".into(),
            version: 3,
            title: "Orders per day".into(),
            description: "Every order, one row each".into(),
            tags: vec!["sales".into(), "orders".into()],
            schema: vec![
                column("order_id", "Int64", false),
                column("region", "Utf8", true),
                column("email", "Utf8", true),
                column("amount", "Float64", true),
                column("price", "Decimal128(10, 2)", true),
                column("paid", "Boolean", true),
                column("day", "Date32", true),
                column("at", "Timestamp(Microsecond, None)", true),
                column("small", "UInt8", true),
                column("tags", "List(Utf8)", true),
            ],
            rows: 1000,
            bytes: 65_536,
            digest: ContentDigest([7; 32]),
            published_at_ms: NOW_MS - 60_000,
            sla: Sla {
                update_frequency: "daily".into(),
                freshness_hours: 24,
                availability_bp: 9990,
            },
            policy: Policy {
                approval: Approval::Manual,
                allowed_purposes: vec!["analytics".into(), "fraud".into()],
                max_contract_days: 90,
                restricted_columns: vec!["email".into()],
            },
            lineage: vec![LineageRef {
                domain: "shop".into(),
                product: "carts".into(),
                version: 2,
            }],
            data_addr: Some("127.0.0.1:7000".into()),
            status: Status::Active,
            stewardship: Default::default(),
        }
    })
}

/// Terms the consumer asks for on the reference product: three columns, a filter, 30 days.
pub fn terms() -> ContractTerms {
    let product = product();
    ContractTerms {
        product: product.id(),
        provider_domain: product.domain.clone(),
        consumer_domain: "churn".into(),
        provider: product.owner,
        consumer: consumer().public_key(),
        min_version: product.version,
        max_version: None,
        purpose: "analytics".into(),
        columns: Columns::Listed(vec!["order_id".into(), "region".into(), "amount".into()]),
        filter: Some("region = 'EU' AND amount > 10.5".into()),
        valid_from_ms: NOW_MS - 1000,
        valid_until_ms: NOW_MS + 30 * mesh_protocol::contract::DAY_MS,
        nonce: [9; 16],
    }
}

/// The responder's catalog for sync: 100 products of the provider (more than one range can
/// list, so queries split), versions 1 to 3.
pub fn catalog_set() -> &'static SyncSet<ProductId> {
    static SET: OnceLock<SyncSet<ProductId>> = OnceLock::new();
    SET.get_or_init(|| {
        let owner = provider().public_key();
        let map = (0..100u64)
            .map(|i| {
                let id = ProductId {
                    owner,
                    name: format!("p{i:03}"),
                };
                (id, 1 + i % 3)
            })
            .collect();
        SyncSet::from_map(&map)
    })
}

/// The responder's node records for sync: the two fixture keys.
pub fn node_set() -> &'static SyncSet<PublicKey> {
    static SET: OnceLock<SyncSet<PublicKey>> = OnceLock::new();
    SET.get_or_init(|| {
        let map = [
            (provider().public_key(), NOW_MS),
            (consumer().public_key(), NOW_MS - 5),
        ]
        .into_iter()
        .collect();
        SyncSet::from_map(&map)
    })
}

/// The requester's catalog for sync: every other product of [`catalog_set`], some older.
pub fn requester_catalog_set() -> SyncSet<ProductId> {
    let owner = provider().public_key();
    let map = (0..100u64)
        .filter(|i| i % 2 == 0)
        .map(|i| {
            let id = ProductId {
                owner,
                name: format!("p{i:03}"),
            };
            (id, 1 + i % 2)
        })
        .collect();
    SyncSet::from_map(&map)
}
