//! Fixed keys, clock, reference product and mesh (charter, votes, invitation): what the
//! targets verify against and what the seeds are made from. Everything is deterministic, so the seeds are too.

use std::sync::OnceLock;

use mesh_protocol::contract::Columns;
use mesh_protocol::descriptor::ProductId;
use mesh_protocol::descriptor::{
    Approval, ColumnSchema, ContentDigest, LineageRef, Policy, ProductDescriptor, Sla, Status,
};
use mesh_protocol::governance::{
    Action, AdmissionRule, Charter, Invitation, Member, MeshId, MeshState, Motion, Policies,
    RequiredField, VoteKey,
};
use mesh_protocol::reconcile::SyncSet;
use mesh_protocol::{ContractTerms, Identity, PublicKey, Signed};

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

/// Governance: the third governing domain of the fixture mesh (with [`provider`] and
/// [`consumer`], 2 of 3 carry a motion).
pub fn governor() -> &'static Identity {
    static KEY: OnceLock<Identity> = OnceLock::new();
    KEY.get_or_init(|| Identity::from_secret_bytes([0x33; 32]))
}

/// A founding member of the fixture mesh that governs nothing (it admits, under
/// any-member admission).
pub fn member() -> &'static Identity {
    static KEY: OnceLock<Identity> = OnceLock::new();
    KEY.get_or_init(|| Identity::from_secret_bytes([0x44; 32]))
}

/// A key that belongs to no mesh.
pub fn outsider() -> &'static Identity {
    static KEY: OnceLock<Identity> = OnceLock::new();
    KEY.get_or_init(|| Identity::from_secret_bytes([0x55; 32]))
}

/// A domain the member admitted (in the fixture state).
pub fn newcomer() -> &'static Identity {
    static KEY: OnceLock<Identity> = OnceLock::new();
    KEY.get_or_init(|| Identity::from_secret_bytes([0x66; 32]))
}

/// The key of the open invitation (its secret travels in a ticket).
pub fn invitation_key() -> &'static Identity {
    static KEY: OnceLock<Identity> = OnceLock::new();
    KEY.get_or_init(|| Identity::from_secret_bytes([0x77; 32]))
}

/// A domain the member admitted and the governors then removed (in the fixture state).
pub fn removed() -> &'static Identity {
    static KEY: OnceLock<Identity> = OnceLock::new();
    KEY.get_or_init(|| Identity::from_secret_bytes([0x88; 32]))
}

/// Every fixture key that can sign a vote, a claim or a charter, in a fixed order: what a
/// target re-signs fuzzed bodies with.
pub fn signers() -> [&'static Identity; 7] {
    [
        provider(),
        consumer(),
        governor(),
        member(),
        newcomer(),
        outsider(),
        removed(),
    ]
}

/// The fixture key whose public half is `key`, if any.
pub fn identity_of(key: &PublicKey) -> Option<&'static Identity> {
    signers()
        .into_iter()
        .chain([invitation_key()])
        .find(|i| &i.public_key() == key)
}

/// The charter of the fixture mesh: three governors (sales = [`provider`], churn =
/// [`consumer`], product = [`governor`]), 2 of 3, any member admits, [`member`] belongs from
/// the start, no policies yet. Signed by the provider.
pub fn charter() -> &'static Signed<Charter> {
    static CHARTER: OnceLock<Signed<Charter>> = OnceLock::new();
    CHARTER.get_or_init(|| {
        let m = |identity: &Identity, domain: &str| Member {
            key: identity.public_key(),
            domain: domain.into(),
        };
        let charter = Charter {
            name: "shop".into(),
            founded_at_ms: NOW_MS - 86_400_000,
            governors: vec![
                m(provider(), "sales"),
                m(consumer(), "churn"),
                m(governor(), "product"),
            ],
            quorum: 2,
            admission: AdmissionRule::AnyMember,
            members: vec![m(member(), "customer")],
            policies: Policies::default(),
            nonce: [1; 16],
        };
        Signed::sign(provider(), &charter)
    })
}

/// The fixture mesh's id.
pub fn mesh_id() -> MeshId {
    MeshId::of_body(charter().body())
}

/// A motion of the fixture mesh.
pub fn motion(proposer: &Identity, action: Action, at_ms: u64) -> Motion {
    Motion {
        mesh: mesh_id(),
        action,
        proposer: proposer.public_key(),
        proposed_at_ms: at_ms,
    }
}

/// The pii amendment (policies version 1): `pii` columns must be restricted, every product
/// names a contact, contracts run at most a year.
pub fn amendment() -> Motion {
    motion(
        provider(),
        Action::Amend {
            policies: Policies {
                version: 1,
                restricted_tags: vec!["pii".into()],
                required_fields: vec![RequiredField::Contact],
                max_contract_days: Some(365),
                purposes: vec!["analytics".into(), "fraud".into()],
            },
            summary: "pii columns are restricted".into(),
        },
        NOW_MS - 1_000,
    )
}

/// The votes of the fixture state, in the order they were given: the member admits the
/// newcomer and the removed domain, two governors remove the latter, one governor signs
/// the amendment (open: 1 of 2).
pub fn votes() -> &'static [Signed<Motion>] {
    static VOTES: OnceLock<Vec<Signed<Motion>>> = OnceLock::new();
    VOTES.get_or_init(|| {
        let admit = |identity: &Identity, domain: &str, at| {
            motion(
                member(),
                Action::Admit(Member {
                    key: identity.public_key(),
                    domain: domain.into(),
                }),
                at,
            )
        };
        let remove = motion(
            provider(),
            Action::Remove {
                key: removed().public_key(),
                reason: "leaked data".into(),
            },
            NOW_MS - 2_000,
        );
        vec![
            Signed::sign(
                member(),
                &admit(newcomer(), "recommendation", NOW_MS - 5_000),
            ),
            Signed::sign(member(), &admit(removed(), "ads", NOW_MS - 4_000)),
            Signed::sign(provider(), &remove),
            Signed::sign(consumer(), &remove),
            Signed::sign(provider(), &amendment()),
        ]
    })
}

/// The fixture mesh after [`votes`]: members, a removed key, carried and open motions.
pub fn mesh_state() -> &'static MeshState {
    static STATE: OnceLock<MeshState> = OnceLock::new();
    STATE.get_or_init(|| {
        let (state, refused) = MeshState::restore(charter().clone(), votes().iter().cloned())
            .expect("the fixture charter is valid");
        assert!(refused.is_empty(), "fixture votes refused: {refused:?}");
        state
    })
}

/// The fixture state's votes as a reconciliation set, as a node builds it.
pub fn vote_set() -> &'static SyncSet<VoteKey> {
    static SET: OnceLock<SyncSet<VoteKey>> = OnceLock::new();
    SET.get_or_init(|| SyncSet::from_sorted(mesh_state().vote_keys().map(|k| (k, 0))))
}

/// A requester that holds only the first two votes.
pub fn requester_vote_set() -> SyncSet<VoteKey> {
    let mut keys: Vec<VoteKey> = votes()[..2].iter().map(VoteKey::of).collect();
    keys.sort();
    SyncSet::from_sorted(keys.into_iter().map(|k| (k, 0)))
}

/// The invitation the inviting member ([`member`]) holds for domain `analytics`.
pub fn invitation() -> Invitation {
    Invitation {
        key: invitation_key().public_key(),
        domain: "analytics".into(),
        expires_at_ms: NOW_MS + 3_600_000,
        used: false,
        claimed_by: None,
    }
}
