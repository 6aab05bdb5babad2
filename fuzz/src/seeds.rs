//! The seed corpus: real messages, encoded exactly as nodes send and store them, built from
//! [`crate::fixtures`]. `cargo run -p mesh-fuzz --bin mesh-fuzz-seeds` writes them to
//! `fuzz/corpus/<target>/seed-<name>`; the replay test runs both the files and these values.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, TimeUnit};
use mesh_protocol::audit::{self, AuditEntry, AuditHead, AuditKind};
use mesh_protocol::catalog::NodeRecord;
use mesh_protocol::contract::{Agreement, ContractRequest, Decision, Rejection, Revocation};
use mesh_protocol::descriptor::ProductDescriptor;
use mesh_protocol::envelope::Signed;
use mesh_protocol::governance::{
    Action, Charter, JoinClaim, JoinReply, Member, Motion, Policies, Ticket,
};
use mesh_protocol::reconcile::{self, Reconciler, SetAnswer};
use mesh_protocol::transfer::{
    self, Compression, FetchRefusal, FetchRequest, Frame, Refusal, TransferHeader,
};
use mesh_protocol::wire::{self, GossipMessage, SyncRequest, SyncResponse};
use mesh_protocol::{ContractMessage, ContractReply};

use crate::fixtures::{self, NOW_MS};

/// One seed: the target it feeds, a file name, the bytes.
#[derive(Debug, Clone)]
pub struct Seed {
    /// Target name (corpus directory).
    pub target: &'static str,
    /// File name inside the corpus directory, without the `seed-` prefix.
    pub name: String,
    /// The input.
    pub bytes: Vec<u8>,
    /// Whether the target's decoder must accept it (a real message), as opposed to a
    /// hand-made hostile input that must only be refused cleanly.
    pub valid: bool,
}

fn seed(target: &'static str, name: &str, bytes: Vec<u8>) -> Seed {
    Seed {
        target,
        name: name.to_owned(),
        bytes,
        valid: true,
    }
}

fn hostile(target: &'static str, name: &str, bytes: Vec<u8>) -> Seed {
    Seed {
        valid: false,
        ..seed(target, name, bytes)
    }
}

/// The signed reference descriptor.
pub fn descriptor() -> Signed<ProductDescriptor> {
    Signed::sign(fixtures::provider(), fixtures::product())
}

/// The provider's signed node record.
pub fn node_record() -> Signed<NodeRecord> {
    let key = fixtures::provider().public_key();
    Signed::sign(
        fixtures::provider(),
        &NodeRecord {
            key,
            domain: "sales".into(),
            peer_id: "12D3KooWExamplePeerIdOfTheSalesDomain".into(),
            addrs: vec!["/ip4/127.0.0.1/udp/4001/quic-v1".into()],
            data_addr: Some("127.0.0.1:7000".into()),
            issued_at_ms: NOW_MS,
        },
    )
}

/// The consumer's signed request for [`fixtures::terms`].
pub fn request() -> Signed<ContractRequest> {
    Signed::sign(
        fixtures::consumer(),
        &ContractRequest {
            terms: fixtures::terms(),
        },
    )
}

/// The agreement on [`fixtures::terms`], countersigned by the provider.
pub fn agreement() -> Agreement {
    Agreement::countersign(fixtures::provider(), request()).expect("fixture terms are valid")
}

/// The provider's rejection of the request.
pub fn rejection() -> Signed<Rejection> {
    Signed::sign(
        fixtures::provider(),
        &Rejection {
            agreement_id: fixtures::terms().id(),
            provider: fixtures::provider().public_key(),
            reason: "purpose not allowed".into(),
            at_ms: NOW_MS,
        },
    )
}

/// The consumer's withdrawal of the agreement.
pub fn revocation() -> Signed<Revocation> {
    Signed::sign(
        fixtures::consumer(),
        &Revocation {
            agreement_id: fixtures::terms().id(),
            by: fixtures::consumer().public_key(),
            reason: "no longer needed".into(),
            at_ms: NOW_MS,
        },
    )
}

/// The frames of one successful fetch, provider side, and the consumer's request frame.
fn frames() -> (Frame, Vec<Frame>) {
    let agreement = agreement();
    let terms = fixtures::terms();
    let product = fixtures::product();
    let request = Frame::Request(Box::new(FetchRequest {
        agreement,
        product: product.id(),
        version: Some(product.version),
        resume_from_batch: 0,
        compression: Compression::None,
        narrowing: None,
        stripe: transfer::Stripe::WHOLE,
    }));
    let expected = crate::targets::expected_trailer();
    let mut tally = transfer::TransferTally::new();
    tally.add_batch(b"batch-0", 10);
    tally.add_batch(b"batch-1", 5);
    let trailer = tally.trailer(terms.id(), product.id(), product.version, 0);
    assert_eq!(trailer.digest, expected.digest);
    let granted: Vec<_> = product
        .schema
        .iter()
        .filter(|c| {
            terms
                .granted_columns(&product.schema, &product.policy.restricted_columns)
                .contains(&c.name)
        })
        .cloned()
        .collect();
    let answer = vec![
        Frame::Header(TransferHeader {
            agreement_id: terms.id(),
            version: product.version,
            schema: granted,
            total_batches_hint: Some(2),
            resume_from_batch: 0,
            compression: Compression::None,
            stripe: transfer::Stripe::WHOLE,
        }),
        Frame::Data(b"batch-0".to_vec()),
        Frame::Data(b"batch-1".to_vec()),
        Frame::Trailer(Signed::sign(fixtures::provider(), &trailer)),
    ];
    (request, answer)
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    frames
        .iter()
        .flat_map(|f| transfer::encode_frame(f).expect("seed frames are small"))
        .collect()
}

/// An audit chain of three entries, as stored.
fn audit_chain() -> Vec<Vec<u8>> {
    let mut prev = audit::GENESIS;
    let details = [
        (
            AuditKind::Publish,
            r#"{"product":"sales/orders","version":3}"#,
        ),
        (
            AuditKind::Request,
            r#"{"product":"sales/orders","agreement":"ab12","role":"provider","consumer":"churn"}"#,
        ),
        (
            AuditKind::Rejection,
            r#"{"product":"sales/orders","reason":"purpose not allowed","decided_by":"operator"}"#,
        ),
    ];
    details
        .iter()
        .enumerate()
        .map(|(seq, (kind, detail))| {
            let bytes = AuditEntry {
                seq: seq as u64,
                prev,
                at_ms: NOW_MS + seq as u64,
                kind: *kind,
                detail: (*detail).to_owned(),
            }
            .to_bytes();
            prev = audit::entry_hash(&bytes);
            bytes
        })
        .collect()
}

/// Arrow types a Parquet or CSV file can give a column, flat and nested.
fn data_types() -> Vec<(&'static str, DataType)> {
    let item = |t: DataType| Arc::new(Field::new("item", t, true));
    let entries = Field::new_struct(
        "entries",
        vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Int32, true),
        ],
        false,
    );
    vec![
        ("int", DataType::Int64),
        (
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        ),
        ("decimal", DataType::Decimal128(38, 10)),
        ("list", DataType::List(item(DataType::Int64))),
        (
            "struct",
            DataType::Struct(Fields::from(vec![
                Field::new("a", DataType::Int64, false),
                Field::new("b b", DataType::List(item(DataType::Utf8)), true),
            ])),
        ),
        (
            "dictionary",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        ),
        ("map", DataType::Map(Arc::new(entries), false)),
        ("fixed", DataType::FixedSizeBinary(16)),
        ("large-list", DataType::LargeList(item(DataType::Date32))),
    ]
}

/// Entries as `audit_entry` reads them: `u16 length || entry` each.
fn framed_chain(chain: &[Vec<u8>]) -> Vec<u8> {
    let mut framed = Vec::new();
    for entry in chain {
        framed.extend_from_slice(&(entry.len() as u16).to_be_bytes());
        framed.extend_from_slice(entry);
    }
    framed
}

/// Every seed, for every target.
pub fn all() -> Vec<Seed> {
    let descriptor = descriptor();
    let node = node_record();
    let request = request();
    let agreement = agreement();
    let rejection = rejection();
    let revocation = revocation();
    let (fetch, transfer) = frames();
    // One real reconciliation round: the requester's first query, the responder's answer.
    let requester = fixtures::requester_catalog_set();
    let nodes = fixtures::node_set();
    let sync_request = SyncRequest {
        products: Reconciler::new(&requester).next_query(&requester, wire::MAX_SET_QUERY),
        nodes: Reconciler::new(nodes).next_query(nodes, wire::MAX_SET_QUERY),
        votes: Default::default(),
    };
    let answer = reconcile::respond(fixtures::catalog_set(), &sync_request.products)
        .expect("a real query is within bounds");
    // A requester that lacks some votes: its query over the votes, the answer, the votes.
    let requester_votes = fixtures::requester_vote_set();
    let vote_query =
        Reconciler::new(&requester_votes).next_query(&requester_votes, wire::MAX_SET_QUERY);
    let vote_answer = reconcile::respond(fixtures::vote_set(), &vote_query)
        .expect("a real query is within bounds");
    let missing_votes: Vec<Signed<Motion>> = vote_answer
        .send
        .iter()
        .filter_map(|k| fixtures::mesh_state().vote(k).cloned())
        .collect();
    assert!(!missing_votes.is_empty(), "the requester lacks votes");
    let mut seeds = vec![
        seed(
            "gossip_message",
            "descriptor",
            GossipMessage::Descriptor(descriptor.clone()).to_bytes(),
        ),
        seed(
            "gossip_message",
            "node",
            GossipMessage::Node(node.clone()).to_bytes(),
        ),
        seed(
            "gossip_message",
            "revocation",
            GossipMessage::Revocation(revocation.clone()).to_bytes(),
        ),
        seed("sync_request", "first-round", sync_request.to_bytes()),
        seed("sync_request", "empty", SyncRequest::default().to_bytes()),
        seed(
            "sync_request",
            "votes",
            SyncRequest {
                votes: vote_query,
                ..SyncRequest::default()
            }
            .to_bytes(),
        ),
        seed(
            "sync_response",
            "votes",
            SyncResponse {
                votes: vote_answer.answer,
                vote_envelopes: missing_votes,
                ..SyncResponse::default()
            }
            .to_bytes(),
        ),
        seed(
            "sync_response",
            "first-round",
            SyncResponse {
                products: answer.answer,
                nodes: SetAnswer::default(),
                descriptors: vec![descriptor.clone()],
                records: vec![node.clone()],
                votes: SetAnswer::default(),
                vote_envelopes: vec![],
                truncated: true,
            }
            .to_bytes(),
        ),
        seed("envelope_descriptor", "orders", descriptor.to_bytes()),
        seed("envelope_node_record", "sales", node.to_bytes()),
        seed("envelope_contract_request", "analytics", request.to_bytes()),
        seed("envelope_rejection", "purpose", rejection.to_bytes()),
        seed("envelope_revocation", "withdrawal", revocation.to_bytes()),
        seed(
            "envelope_audit_head",
            "head",
            Signed::sign(
                fixtures::provider(),
                &AuditHead {
                    count: 3,
                    last: [3; 32],
                },
            )
            .to_bytes(),
        ),
        seed("agreement", "agreed", agreement.to_bytes()),
        seed(
            "contract_message",
            "request",
            ContractMessage::Request(request.clone()).to_bytes(),
        ),
        seed(
            "contract_message",
            "status",
            ContractMessage::Status(fixtures::terms().id()).to_bytes(),
        ),
        seed(
            "contract_message",
            "revoke",
            ContractMessage::Revoke(revocation.clone()).to_bytes(),
        ),
        seed(
            "contract_message",
            "decided",
            ContractMessage::Decided(Decision::Agreed(agreement.clone())).to_bytes(),
        ),
        seed(
            "contract_reply",
            "agreed",
            ContractReply::Agreed(agreement.clone()).to_bytes(),
        ),
        seed(
            "contract_reply",
            "pending",
            ContractReply::Pending(fixtures::terms().id()).to_bytes(),
        ),
        seed(
            "contract_reply",
            "rejected",
            ContractReply::Rejected(rejection.clone()).to_bytes(),
        ),
        seed(
            "contract_reply",
            "revoked",
            ContractReply::Revoked(revocation.clone()).to_bytes(),
        ),
        seed(
            "contract_reply",
            "error",
            ContractReply::Error("malformed contract message".into()).to_bytes(),
        ),
    ];
    if let Frame::Trailer(trailer) = &transfer[3] {
        seeds.push(seed(
            "envelope_transfer_trailer",
            "fetch",
            trailer.to_bytes(),
        ));
    }
    // Data-plane streams: a leading byte picks the read size (see `targets::data_frames`).
    let stream = |chunk: u8, frames: &[Frame]| [vec![chunk], encode(frames)].concat();
    seeds.push(seed(
        "data_frames",
        "request",
        stream(7, std::slice::from_ref(&fetch)),
    ));
    seeds.push(seed("data_frames", "transfer", stream(3, &transfer)));
    seeds.push(seed(
        "data_frames",
        "refusal",
        stream(
            63,
            &[Frame::Error(Refusal::new(
                FetchRefusal::Busy,
                "too many transfers at once",
            ))],
        ),
    ));
    let mut huge = vec![0u8, 3];
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    seeds.push(hostile("data_frames", "oversized-length", huge));
    for (name, text) in [
        ("simple", "region = 'EU'"),
        ("and", "region = 'EU' AND amount > 10.5 AND paid = true"),
        (
            "quoted",
            "\"odd \"\"name\"\"\" != 'it''s' AND order_id <= -42",
        ),
        (
            "dates",
            "day >= '2024-03-01' AND at < '2024-03-01T12:00:00Z'",
        ),
        ("decimal", "price >= 12.34 AND small < 255"),
        (
            "sql",
            "(region IN ('EU', 'US') OR NOT (amount BETWEEN 1 AND 9.5)) \
             AND email IS NOT NULL AND sku NOT LIKE 'x\\_%' AND day < DATE '2024-03-01'",
        ),
        (
            "sql-temporal",
            "at >= TIMESTAMP '2024-03-01 12:00:00.5' OR \"odd name\" ILIKE '%é%'",
        ),
    ] {
        seeds.push(seed("filter", name, text.as_bytes().to_vec()));
    }
    seeds.push(hostile(
        "filter",
        "many-predicates",
        vec!["a = 1"; 300].join(" AND ").into_bytes(),
    ));
    seeds.push(hostile(
        "filter",
        "deep-nesting",
        format!("{}a = 1{}", "(".repeat(1000), ")".repeat(1000)).into_bytes(),
    ));
    seeds.push(hostile(
        "filter",
        "function-call",
        b"lower(region) = 'eu' OR amount + 1 > 2".to_vec(),
    ));
    // Type strings exactly as publish writes them: Arrow's own display of real types.
    for (name, data_type) in data_types() {
        seeds.push(seed(
            "type_string",
            name,
            data_type.to_string().into_bytes(),
        ));
    }
    seeds.push(hostile(
        "type_string",
        "nested-64",
        format!("{}Int64{}", "List(".repeat(64), ")".repeat(64)).into_bytes(),
    ));
    // The descriptor that overflowed every node's stack (issue 13): 2,500 levels, under the
    // length limit so that the depth check is what refuses it.
    let deep = format!("{}Int64{}", "List(".repeat(2500), ")".repeat(2500));
    seeds.push(hostile(
        "type_string",
        "nested-2500",
        deep.clone().into_bytes(),
    ));
    let mut product = fixtures::product().clone();
    product.schema[0].data_type = deep;
    seeds.push(hostile(
        "envelope_descriptor",
        "nested-type",
        Signed::sign(fixtures::provider(), &product).to_bytes(),
    ));
    let chain = audit_chain();
    seeds.push(seed("audit_entry", "chain", framed_chain(&chain)));
    seeds.push(hostile("audit_entry", "broken-link", {
        let mut broken = framed_chain(&[chain[0].clone(), chain[2].clone()]);
        broken.push(0);
        broken
    }));
    seeds.extend(governance_seeds());
    seeds.push(seed(
        "text_ids",
        "agreement-id",
        fixtures::terms().id().to_hex().into_bytes(),
    ));
    seeds.push(seed(
        "text_ids",
        "storage-key",
        fixtures::product().id().storage_key().into_bytes(),
    ));
    seeds
}

/// Seeds of the governance targets: the fixture mesh's votes, charter, a ticket, a claim and
/// the join answer, as nodes send and store them, and hostile variants.
fn governance_seeds() -> Vec<Seed> {
    let votes = fixtures::votes();
    let mut seeds: Vec<Seed> = votes
        .iter()
        .enumerate()
        .map(|(i, v)| seed("vote", &format!("fixture-{i}"), v.to_bytes()))
        .collect();
    // The second governor's signature carries the open amendment.
    seeds.push(seed(
        "vote",
        "carry-amendment",
        Signed::sign(fixtures::consumer(), &fixtures::amendment()).to_bytes(),
    ));
    seeds.push(seed(
        "vote",
        "admit",
        Signed::sign(
            fixtures::newcomer(),
            &fixtures::motion(
                fixtures::newcomer(),
                Action::Admit(Member {
                    key: fixtures::outsider().public_key(),
                    domain: "partner".into(),
                }),
                NOW_MS,
            ),
        )
        .to_bytes(),
    ));
    seeds.push(seed(
        "vote",
        "remove-newcomer",
        Signed::sign(
            fixtures::governor(),
            &fixtures::motion(
                fixtures::governor(),
                Action::Remove {
                    key: fixtures::newcomer().public_key(),
                    reason: "left the company".into(),
                },
                NOW_MS,
            ),
        )
        .to_bytes(),
    ));
    // Hostile: a governor's removal (never carried), a forged signer.
    seeds.push(seed(
        "vote",
        "remove-governor",
        Signed::sign(
            fixtures::consumer(),
            &fixtures::motion(
                fixtures::consumer(),
                Action::Remove {
                    key: fixtures::provider().public_key(),
                    reason: "coup".into(),
                },
                NOW_MS,
            ),
        )
        .to_bytes(),
    ));
    seeds.push(hostile(
        "vote",
        "forged-signer",
        votes[4]
            .with_claimed_signer(fixtures::consumer().public_key())
            .to_bytes(),
    ));

    let charter = fixtures::charter();
    seeds.push(seed("charter", "shop", charter.to_bytes()));
    let with_policies = Charter {
        policies: Policies {
            version: 0,
            restricted_tags: vec!["pii".into(), "financial".into()],
            ..Policies::default()
        },
        ..charter
            .decode_trusted()
            .expect("the fixture charter decodes")
    };
    seeds.push(seed(
        "charter",
        "policies",
        Signed::sign(fixtures::consumer(), &with_policies).to_bytes(),
    ));
    seeds.push(hostile(
        "charter",
        "not-a-governor",
        Signed::sign(fixtures::outsider(), &with_policies).to_bytes(),
    ));
    let unreachable = Charter {
        quorum: 4,
        ..with_policies.clone()
    };
    seeds.push(hostile(
        "charter",
        "quorum-over-governors",
        Signed::sign(fixtures::provider(), &unreachable).to_bytes(),
    ));

    let ticket = Ticket {
        mesh: fixtures::mesh_id(),
        domain: "analytics".into(),
        inviter: fixtures::member().public_key(),
        bootstrap: vec![
            "/ip4/127.0.0.1/udp/4001/quic-v1".into(),
            "/ip6/::1/udp/4001/quic-v1".into(),
        ],
        secret: [0x77; 32],
        expires_at_ms: NOW_MS + 3_600_000,
    };
    seeds.push(seed("ticket", "analytics", ticket.encode().into_bytes()));
    seeds.push(hostile(
        "ticket",
        "too-long",
        format!("meshnode-ticket-{}", "A".repeat(8_000)).into_bytes(),
    ));
    seeds.push(hostile(
        "ticket",
        "truncated",
        ticket.encode().as_bytes()[..40].to_vec(),
    ));

    let claim = JoinClaim {
        mesh: fixtures::mesh_id(),
        invitation: fixtures::invitation_key().public_key(),
        member: Member {
            key: fixtures::outsider().public_key(),
            domain: "analytics".into(),
        },
    };
    seeds.push(seed(
        "join_claim",
        "analytics",
        Signed::sign(fixtures::outsider(), &claim).to_bytes(),
    ));
    seeds.push(hostile(
        "join_claim",
        "other-domain",
        Signed::sign(
            fixtures::outsider(),
            &JoinClaim {
                member: Member {
                    domain: "sales".into(),
                    ..claim.member.clone()
                },
                ..claim.clone()
            },
        )
        .to_bytes(),
    ));
    seeds.push(hostile(
        "join_claim",
        "signed-for-another",
        Signed::sign(fixtures::newcomer(), &claim).to_bytes(),
    ));

    seeds.push(seed(
        "join_reply",
        "welcome",
        JoinReply::Welcome {
            charter: charter.clone(),
            votes: votes.to_vec(),
        }
        .to_bytes(),
    ));
    seeds.push(seed(
        "join_reply",
        "refused",
        JoinReply::Refused("the invitation was already used: ask for a new one".into()).to_bytes(),
    ));
    seeds.push(seed(
        "gossip_message",
        "vote",
        GossipMessage::Vote(votes[4].clone()).to_bytes(),
    ));
    seeds
}
