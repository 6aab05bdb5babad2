//! The target bodies. Each takes arbitrary bytes, runs them through a decoder and everything
//! that trusts the decoder's output, and returns. Errors are the expected outcome for almost
//! every input; a panic is a bug.

use std::collections::BTreeSet;
use std::str::FromStr;

use mesh_protocol::audit::{self, AuditEntry, AuditHead};
use mesh_protocol::bounds;
use mesh_protocol::catalog::{self, MergeOutcome, NodeRecord};
use mesh_protocol::codec;
use mesh_protocol::contract::{
    self, Agreement, AgreementId, ContractRequest, Rejection, Revocation,
};
use mesh_protocol::descriptor::{self, ColumnSchema, ProductDescriptor, ProductId};
use mesh_protocol::envelope::{Signable, Signed};
use mesh_protocol::governance::{
    self, Action, Charter, JoinClaim, JoinReply, MeshId, MeshState, Motion, Ticket, VoteKey,
    VoteRefusal, state::MAX_MEMBERS,
};
use mesh_protocol::reconcile::{self, Reconciler, SetQuery, SyncSet};
use mesh_protocol::transfer::{
    self, Compression, ExpectedTrailer, FetchRequest, Frame, FrameDecoder, TransferTrailer,
};
use mesh_protocol::wire::{self, GossipMessage, SyncRequest, SyncResponse};
use mesh_protocol::{ContractMessage, ContractReply, Filter, PublicKey};

use crate::fixtures::{self, NOW_MS, SKEW_MS};

/// The same body signed by `identity`: what a peer holding that key can send.
fn resign<T: Signable>(envelope: &Signed<T>, identity: &mesh_protocol::Identity) -> Signed<T> {
    Signed::sign_raw_for_tests(identity, envelope.body().to_vec())
}

/// Text from bytes the way a parser of untrusted text sees it: invalid UTF-8 is refused
/// before any parser, so only valid text goes further.
fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// The catalog topic.
pub fn gossip_message(data: &[u8]) {
    let Ok(message) = GossipMessage::from_bytes(data) else {
        return;
    };
    match &message {
        GossipMessage::Descriptor(envelope) => descriptor_envelope(envelope),
        GossipMessage::Node(envelope) => node_record_envelope(envelope),
        GossipMessage::Revocation(envelope) => revocation_envelope(envelope),
        GossipMessage::Vote(envelope) => {
            let mut state = fixtures::mesh_state().clone();
            offer_checked(&mut state, envelope);
            offer_checked(&mut state, &resign_as_claimed(envelope));
        }
    }
    // What was accepted is forwarded as is: re-encoding gives a message that decodes again.
    let again = GossipMessage::from_bytes(&message.to_bytes());
    assert_eq!(again.as_ref(), Ok(&message), "gossip re-encoding changed");
}

/// A peer's sync request: one reconciliation round, answered from our sets. What we send
/// back is only ever keys we hold, each once.
pub fn sync_request(data: &[u8]) {
    let Ok(request) = SyncRequest::from_bytes(data) else {
        return;
    };
    respond_checked(fixtures::catalog_set(), &request.products);
    respond_checked(fixtures::node_set(), &request.nodes);
    respond_checked(fixtures::vote_set(), &request.votes);
}

fn respond_checked<K: reconcile::SyncKey>(ours: &SyncSet<K>, query: &SetQuery<K>) {
    let Ok(response) = reconcile::respond(ours, query) else {
        return;
    };
    let mut seen = BTreeSet::new();
    for key in &response.send {
        assert!(ours.version(key).is_some(), "sends a key it does not hold");
        assert!(seen.insert(key), "sends a key twice");
    }
    assert!(response.answer.replies.len() <= query.ranges.len());
}

/// A peer's sync answer to our first query: the range replies drive our reconciler, every
/// envelope goes through the same merge rules as gossip.
pub fn sync_response(data: &[u8]) {
    let Ok(response) = SyncResponse::from_bytes(data) else {
        return;
    };
    let ours = fixtures::requester_catalog_set();
    let mut reconciler = Reconciler::new(&ours);
    let asked = reconciler.next_query(&ours, wire::MAX_SET_QUERY);
    if reconciler
        .on_answer(&ours, &asked, response.products)
        .is_ok()
    {
        // However the peer answers, the session stays bounded.
        for _ in 0..reconcile::MAX_ROUNDS + 1 {
            let query = reconciler.next_query(&ours, wire::MAX_SET_QUERY);
            assert!(codec::encode(&query).len() <= wire::MAX_SET_QUERY);
            if reconciler.is_done() {
                break;
            }
        }
        assert!(reconciler.is_done(), "a session outlived its round limit");
    }
    let nodes = fixtures::node_set();
    let mut reconciler = Reconciler::new(nodes);
    let asked = reconciler.next_query(nodes, wire::MAX_SET_QUERY);
    let _ = reconciler.on_answer(nodes, &asked, response.nodes);
    for envelope in &response.descriptors {
        descriptor_envelope(envelope);
    }
    for envelope in &response.records {
        node_record_envelope(envelope);
    }
    let ours = fixtures::requester_vote_set();
    let mut reconciler = Reconciler::new(&ours);
    let asked = reconciler.next_query(&ours, wire::MAX_SET_QUERY);
    let _ = reconciler.on_answer(&ours, &asked, response.votes);
    // Every vote goes through the same checks as a gossiped one, into one state.
    let mut state = fixtures::mesh_state().clone();
    for envelope in &response.vote_envelopes {
        offer_checked(&mut state, envelope);
        offer_checked(&mut state, &resign_as_claimed(envelope));
    }
    assert_order_free(&state);
}

/// `Signed<ProductDescriptor>` as gossiped, synced or read back from the store.
pub fn envelope_descriptor(data: &[u8]) {
    if let Ok(envelope) = Signed::<ProductDescriptor>::from_bytes(data) {
        descriptor_envelope(&envelope);
    }
}

fn descriptor_envelope(envelope: &Signed<ProductDescriptor>) {
    // As received: the store reads its own envelopes back without a signature check.
    let _ = envelope.decode_trusted();
    let _ = catalog::merge(envelope, |_| None);
    // As a well-keyed owner would send it.
    let signed = resign(envelope, fixtures::provider());
    let MergeOutcome::Accepted(descriptor) = catalog::merge(&signed, |_| None) else {
        return;
    };
    // Accepted means valid: the schema converts, and the same bytes again are a duplicate.
    descriptor::columns_to_arrow(&descriptor.schema).expect("a validated schema converts");
    let again = catalog::merge(&signed, |_| Some((descriptor.version, signed.clone())));
    assert_eq!(again, MergeOutcome::Duplicate);
    let _ = descriptor.display_name();
    // The policy of an accepted product is evaluated against every request.
    let _ = contract::evaluate(&descriptor, &fixtures::terms(), NOW_MS, SKEW_MS);
}

/// `Signed<NodeRecord>`.
pub fn envelope_node_record(data: &[u8]) {
    if let Ok(envelope) = Signed::<NodeRecord>::from_bytes(data) {
        node_record_envelope(&envelope);
    }
}

fn node_record_envelope(envelope: &Signed<NodeRecord>) {
    let _ = envelope.decode_trusted();
    let _ = catalog::merge_node_record(envelope, None);
    let signed = resign(envelope, fixtures::provider());
    if let Ok(Some(record)) = catalog::merge_node_record(&signed, None) {
        assert_eq!(
            catalog::merge_node_record(&signed, Some(record.issued_at_ms)),
            Ok(None),
            "the same record twice is not news"
        );
    }
}

/// `Signed<ContractRequest>`.
pub fn envelope_contract_request(data: &[u8]) {
    if let Ok(envelope) = Signed::<ContractRequest>::from_bytes(data) {
        request_envelope(&envelope);
    }
}

fn request_envelope(envelope: &Signed<ContractRequest>) {
    let _ = envelope.decode_trusted();
    let _ = contract::verify_request(envelope);
    let signed = resign(envelope, fixtures::consumer());
    let Ok(terms) = contract::verify_request(&signed) else {
        return;
    };
    // What the provider does with verified terms.
    let product = fixtures::product();
    let _ = contract::evaluate(product, &terms, NOW_MS, SKEW_MS);
    let _ = terms.granted_columns(&product.schema, &product.policy.restricted_columns);
    if let Ok(Some(filter)) = terms.parsed_filter() {
        let _ = filter.check(&product.schema);
    }
    let _ = (
        terms.id().short(),
        terms.validity_days(),
        terms.is_valid_at(NOW_MS, SKEW_MS),
    );
    if let Ok(agreement) = Agreement::countersign(fixtures::provider(), signed) {
        agreement_checks(&agreement);
    }
}

/// `Signed<Rejection>`.
pub fn envelope_rejection(data: &[u8]) {
    if let Ok(envelope) = Signed::<Rejection>::from_bytes(data) {
        rejection_envelope(&envelope);
    }
}

fn rejection_envelope(envelope: &Signed<Rejection>) {
    let _ = envelope.decode_trusted();
    let terms = fixtures::terms();
    let _ = contract::verify_rejection(envelope, &terms);
    let signed = resign(envelope, fixtures::provider());
    if let Ok(rejection) = contract::verify_rejection(&signed, &terms) {
        assert_eq!(rejection.agreement_id, terms.id());
    }
}

/// `Signed<Revocation>`: checked by relays (signer only), then by parties (against terms).
pub fn envelope_revocation(data: &[u8]) {
    if let Ok(envelope) = Signed::<Revocation>::from_bytes(data) {
        revocation_envelope(&envelope);
    }
}

fn revocation_envelope(envelope: &Signed<Revocation>) {
    let _ = envelope.decode_trusted();
    let terms = fixtures::terms();
    let _ = contract::verify_revocation_signer(envelope);
    for key in [fixtures::consumer(), fixtures::provider()] {
        let signed = resign(envelope, key);
        let _ = contract::verify_revocation_signer(&signed);
        if let Ok(revocation) = contract::verify_revocation(&signed, &terms) {
            assert_eq!(revocation.by, key.public_key());
        }
    }
}

/// `Signed<TransferTrailer>` at the end of a fetch.
pub fn envelope_transfer_trailer(data: &[u8]) {
    if let Ok(envelope) = Signed::<TransferTrailer>::from_bytes(data) {
        trailer_envelope(&envelope);
    }
}

fn trailer_envelope(envelope: &Signed<TransferTrailer>) {
    let provider = fixtures::provider();
    let expected = expected_trailer();
    let _ = transfer::verify_trailer(envelope, &provider.public_key(), &expected);
    let signed = resign(envelope, provider);
    if let Ok(trailer) = transfer::verify_trailer(&signed, &provider.public_key(), &expected) {
        assert_eq!(trailer.digest, expected.digest);
    }
}

/// What the consumer of the seed transfer counted.
pub(crate) fn expected_trailer() -> ExpectedTrailer {
    let mut tally = transfer::TransferTally::new();
    tally.add_batch(b"batch-0", 10);
    tally.add_batch(b"batch-1", 5);
    tally.expected(
        fixtures::terms().id(),
        fixtures::product().id(),
        fixtures::product().version,
        0,
    )
}

/// `Signed<AuditHead>` as read back from the store at start and by `audit --verify`.
pub fn envelope_audit_head(data: &[u8]) {
    let Ok(envelope) = Signed::<AuditHead>::from_bytes(data) else {
        return;
    };
    let owner = fixtures::provider();
    let _ = audit::verify_head(&envelope, &owner.public_key(), 1, [3; 32]);
    let signed = resign(&envelope, owner);
    if let Ok(head) = signed.decode_trusted() {
        audit::verify_head(&signed, &owner.public_key(), head.count, head.last)
            .expect("a head signed by the owner matches its own figures");
    }
}

/// A co-signed agreement, as stored and as carried in a fetch request.
pub fn agreement(data: &[u8]) {
    if let Ok(agreement) = Agreement::from_bytes(data) {
        agreement_checks(&agreement);
    }
}

fn agreement_checks(agreement: &Agreement) {
    let _ = agreement.verify();
    let _ = agreement.id();
    let fetch = |agreement: Agreement, product| FetchRequest {
        agreement,
        product,
        version: Some(fixtures::product().version),
        resume_from_batch: 0,
        compression: Compression::None,
        narrowing: None,
        stripe: transfer::Stripe::WHOLE,
    };
    let (provider, consumer) = (fixtures::provider(), fixtures::consumer());
    let as_sent = fetch(agreement.clone(), fixtures::product().id());
    let _ = transfer::authorize_fetch(
        &as_sent,
        &provider.public_key(),
        &consumer.public_key(),
        NOW_MS,
        SKEW_MS,
    );
    // The same terms, signed by both fixture keys: reaches the checks after the signatures.
    let request = resign(agreement.request(), consumer);
    let Ok(signed) = Agreement::countersign(provider, request) else {
        return;
    };
    let terms = signed.verify().expect("a fresh countersignature verifies");
    assert_eq!(signed.id(), terms.id());
    let request = fetch(signed, terms.product.clone());
    if let Ok(granted) = transfer::authorize_fetch(
        &request,
        &provider.public_key(),
        &consumer.public_key(),
        NOW_MS,
        SKEW_MS,
    ) {
        assert_eq!(granted, terms);
    }
}

/// A message on `/meshnode/contract/1`, as the provider (or, for a decision notice, the
/// consumer) receives it.
pub fn contract_message(data: &[u8]) {
    let Ok(message) = ContractMessage::from_bytes(data) else {
        return;
    };
    match &message {
        ContractMessage::Request(envelope) => request_envelope(envelope),
        ContractMessage::Status(id) => {
            let _ = AgreementId::from_str(&id.to_hex()).expect("an id's hex parses back");
        }
        ContractMessage::StatusBatch(ids) => {
            let _ = ids.iter().map(AgreementId::short).count();
        }
        ContractMessage::Revoke(envelope) => revocation_envelope(envelope),
        ContractMessage::Decided(decision) => {
            let _ = decision.claimed_id();
            status_entry(decision.clone().into_reply());
        }
    }
}

/// A reply on `/meshnode/contract/1`, as the consumer receives it.
pub fn contract_reply(data: &[u8]) {
    if let Ok(reply) = ContractReply::from_bytes(data) {
        status_entry(reply);
    }
}

fn status_entry(reply: ContractReply) {
    match &reply {
        ContractReply::Agreed(agreement) => agreement_checks(agreement),
        ContractReply::Rejected(envelope) => rejection_envelope(envelope),
        ContractReply::Revoked(envelope) => revocation_envelope(envelope),
        ContractReply::Pending(id) | ContractReply::Unknown(id) => {
            let _ = id.short();
        }
        ContractReply::Error(message) => {
            let _ = message.len();
        }
        ContractReply::Statuses(entries) => {
            for entry in entries {
                status_entry(entry.clone().into_reply());
            }
        }
        ContractReply::Busy(refusal) => {
            let _ = refusal.to_string();
        }
    }
}

/// A data-plane stream. The first byte picks the read size the shell would see; the rest is
/// the stream. Decoding in those chunks must give exactly what decoding in one piece gives.
pub fn data_frames(data: &[u8]) {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 64) + 1;
    let whole = decode_stream(stream, stream.len().max(1));
    let chunked = decode_stream(stream, chunk);
    assert_eq!(whole, chunked, "chunked decoding disagrees (chunk {chunk})");
    let (frames, _) = whole;
    for frame in &frames {
        match frame {
            Frame::Request(request) => {
                agreement_checks(&request.agreement);
                let _ = transfer::authorize_fetch(
                    request,
                    &fixtures::provider().public_key(),
                    &fixtures::consumer().public_key(),
                    NOW_MS,
                    SKEW_MS,
                );
            }
            Frame::Header(header) => {
                // The consumer compares the announced columns with those it was granted.
                let product = fixtures::product();
                let granted = fixtures::terms()
                    .granted_columns(&product.schema, &product.policy.restricted_columns);
                let _ = header.schema.iter().find(|c| !granted.contains(&c.name));
            }
            Frame::Trailer(envelope) => trailer_envelope(envelope),
            Frame::Data(_) | Frame::Error(_) => {}
        }
        // Every decoded frame encodes again and decodes to itself.
        let bytes = transfer::encode_frame(frame).expect("a decoded frame is within limits");
        let (again, end) = decode_stream(&bytes, bytes.len());
        assert_eq!((again.as_slice(), end), (std::slice::from_ref(frame), None));
    }
}

/// Frames decoded from `stream` pushed `chunk` bytes at a time, and the first error (from
/// `next_frame` or `finish`).
fn decode_stream(stream: &[u8], chunk: usize) -> (Vec<Frame>, Option<mesh_protocol::FrameError>) {
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    for piece in stream.chunks(chunk) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
        assert!(decoder.bytes_needed() >= 1);
    }
    (frames, decoder.finish().err())
}

/// Row-filter text, as typed by a consumer and as carried in terms from a peer.
pub fn filter(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    let Ok(filter) = Filter::parse(text) else {
        return;
    };
    // The canonical text is what agreements carry: it must parse back to the same filter.
    let canonical = filter.to_string();
    let again = Filter::parse(&canonical)
        .unwrap_or_else(|e| panic!("canonical text {canonical:?} does not parse: {e}"));
    assert_eq!(
        again, filter,
        "canonical text {canonical:?} changed the filter"
    );
    assert_eq!(again.to_string(), canonical);
    let _ = filter.check(&fixtures::product().schema);
    let _ = filter.columns().count();
}

/// A column type string, as it arrives in a descriptor (from a peer, or from a Parquet or
/// CSV file at publish): the descriptor's own validation is the gate.
pub fn type_string(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    // The text bound must bound the parser: whatever parses is no deeper than the limit
    // (the depth check models Arrow's tokenizer; a gap there would let deep types through).
    if let Ok(data_type) = bounds::parse_data_type(text) {
        let depth = bounds::data_type_depth(&data_type);
        assert!(
            depth <= bounds::MAX_TYPE_DEPTH,
            "{text:?} parsed to a type {depth} levels deep"
        );
    }
    let mut descriptor = fixtures::product().clone();
    descriptor.schema.push(ColumnSchema {
        name: "fuzzed".into(),
        data_type: text.to_owned(),
        nullable: true,
    });
    if descriptor.validate().is_ok() {
        let schema =
            descriptor::columns_to_arrow(&descriptor.schema).expect("a validated schema converts");
        // A type that validated prints as a type string that validates again: publish writes
        // types in this printed form. Known exception, left out here: Arrow prints a quoted
        // name or time zone with Rust escapes (`\"`, `\\`, `\u{18}`) that its own parser
        // does not read back, so such a name does not survive the round trip (see the corpus
        // file `type_string/known-escaped-quote`).
        let printed = schema
            .field(schema.fields().len() - 1)
            .data_type()
            .to_string();
        descriptor
            .schema
            .last_mut()
            .expect("pushed above")
            .data_type = printed.clone();
        assert!(
            printed.contains('\\') || descriptor.validate().is_ok(),
            "{text:?} validated but its printed form {printed:?} does not"
        );
    }
}

/// Stored audit entries: the input is a sequence of `u16 length || entry` records (a shorter
/// tail is cut to what is left), checked as a chain; each entry's detail is JSON for views.
pub fn audit_entry(data: &[u8]) {
    let entries = audit_records(data);
    for bytes in &entries {
        if let Ok(entry) = AuditEntry::from_bytes(bytes) {
            let _ = serde_json::from_str::<serde_json::Value>(&entry.detail);
            let _ = (entry.kind.as_str(), audit::entry_hash(bytes));
        }
    }
    if let Ok((count, last)) = audit::verify_chain(entries.iter().copied()) {
        assert_eq!(count, entries.len() as u64);
        if let Some(end) = entries.last() {
            assert_eq!(last, audit::entry_hash(end));
        }
    }
}

/// Splits the `audit_entry` input into stored entries.
pub fn audit_records(data: &[u8]) -> Vec<&[u8]> {
    let mut entries = Vec::new();
    let mut rest = data;
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (entry, next) = tail.split_at(len);
        entries.push(entry);
        rest = next;
    }
    entries
}

/// Ids that an operator types or a file holds.
pub fn text_ids(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    if let Ok(id) = AgreementId::from_str(text) {
        assert_eq!(id.to_hex(), text.to_ascii_lowercase());
    }
    if let Ok(key) = PublicKey::from_hex(text) {
        let _ = key.fingerprint();
    }
    if let Some(id) = ProductId::from_storage_key(text) {
        assert_eq!(ProductId::from_storage_key(&id.storage_key()), Some(id));
    }
    let _ = mesh_protocol::Identity::from_secret_slice(data);
}

/// The same body signed by the fixture key it claims as signer, if it claims one: what
/// that member would send. Other envelopes are returned as they are.
fn resign_as_claimed<T: Signable>(envelope: &Signed<T>) -> Signed<T> {
    match fixtures::identity_of(&envelope.signer()) {
        Some(identity) => resign(envelope, identity),
        None => envelope.clone(),
    }
}

/// Offers `vote` to `state` and checks the state's invariants whatever the outcome.
fn offer_checked(state: &mut MeshState, vote: &Signed<Motion>) {
    let before = state.vote_keys().count();
    let outcome = state.offer(vote);
    if let Err(refusal) = &outcome {
        // A refused vote changes nothing.
        assert_eq!(
            state.vote_keys().count(),
            before,
            "refused ({refusal}) but changed"
        );
        if let VoteRefusal::Envelope(_) = refusal {
            assert!(vote.verify().is_err());
        }
    }
    check_state(state);
}

/// What any set of votes must leave true: members are governors, founding members or
/// admitted by a carried motion; no member is removed; governors stay members; every vote
/// held is a member's or a governor's; the mesh and each signer stay within their budgets.
fn check_state(state: &MeshState) {
    let charter = state.charter();
    let motions = state.motions();
    let admitted: BTreeSet<PublicKey> = motions
        .iter()
        .filter(|m| m.carried)
        .filter_map(|m| match &m.motion.action {
            Action::Admit(member) => Some(member.key),
            _ => None,
        })
        .collect();
    for (key, _) in state.members() {
        assert!(
            charter.is_governor(key)
                || charter.members.iter().any(|m| &m.key == key)
                || admitted.contains(key),
            "a member nobody admitted"
        );
        assert!(!state.is_removed(key), "a removed key is a member");
    }
    for key in state.removed() {
        assert!(!state.is_member(key), "a removed key is a member");
        assert!(!charter.is_governor(key), "a governor was removed");
    }
    for g in &charter.governors {
        assert!(state.is_member(&g.key), "a governor is not a member");
    }
    assert!(state.member_count() <= MAX_MEMBERS);
    assert!(state.policies().version >= charter.policies.version);
    state
        .policies()
        .validate()
        .expect("the policies in force are valid");
    let mut per_signer = std::collections::BTreeMap::<PublicKey, usize>::new();
    for vote in state.votes() {
        let signer = vote.signer();
        assert!(
            state.is_member(&signer) || charter.is_governor(&signer),
            "a vote of a non-member is held"
        );
        assert_eq!(vote.verify().map(|m| m.mesh), Ok(state.id()));
        *per_signer.entry(signer).or_default() += 1;
    }
    assert!(
        per_signer
            .values()
            .all(|n| *n <= governance::state::MAX_VOTES_PER_SIGNER)
    );
    for m in &motions {
        assert_eq!(
            m.carried,
            m.signers
                .iter()
                .filter(|s| match m.eligible {
                    governance::Eligible::Governors => charter.is_governor(s),
                    governance::Eligible::Members => state.is_member(s),
                })
                .count()
                >= m.needed,
            "a tally disagrees with its rule"
        );
    }
}

/// The state is a function of the set of votes: the same votes restored in another order
/// decide the same members, removals and policies.
fn assert_order_free(state: &MeshState) {
    let mut votes: Vec<Signed<Motion>> = state.votes().cloned().collect();
    votes.reverse();
    let (again, refused) = MeshState::restore(state.charter_envelope().clone(), votes)
        .expect("the charter was valid once");
    assert!(
        refused.is_empty(),
        "held votes refused on restore: {refused:?}"
    );
    let members = |s: &MeshState| s.members().map(|(k, _)| *k).collect::<Vec<_>>();
    assert_eq!(
        members(&again),
        members(state),
        "members depend on vote order"
    );
    assert_eq!(
        again.removed().collect::<Vec<_>>(),
        state.removed().collect::<Vec<_>>(),
        "removals depend on vote order"
    );
    assert_eq!(
        again.policies(),
        state.policies(),
        "policies depend on vote order"
    );
}

/// A vote (`Signed<Motion>`) from gossip or sync, offered to the fixture mesh as sent, as
/// signed by each fixture key, and with the fixture mesh's id (the fuzzer cannot guess 32
/// bytes); the state's invariants hold after every offer, and the votes held decide the
/// same state in any order.
pub fn vote(data: &[u8]) {
    let Ok(envelope) = Signed::<Motion>::from_bytes(data) else {
        return;
    };
    let _ = envelope.decode_trusted();
    let _ = (
        VoteKey::of(&envelope),
        governance::MotionId::of(&envelope).to_hex(),
    );
    let mut state = fixtures::mesh_state().clone();
    offer_checked(&mut state, &envelope);
    for identity in fixtures::signers() {
        offer_checked(&mut state, &resign(&envelope, identity));
    }
    if let Ok(mut motion) = envelope.decode_trusted()
        && motion.mesh != state.id()
    {
        motion.mesh = state.id();
        for identity in fixtures::signers() {
            offer_checked(&mut state, &Signed::sign(identity, &motion));
        }
    }
    // A second copy of a vote held is a duplicate and changes nothing.
    let first = state.votes().next().cloned();
    if let Some(held) = first {
        let keys: Vec<VoteKey> = state.vote_keys().collect();
        assert_eq!(state.offer(&held), Ok(governance::VoteOutcome::Duplicate));
        assert_eq!(state.vote_keys().collect::<Vec<_>>(), keys);
    }
    let _ = state.motions();
    assert_order_free(&state);
}

/// A charter envelope (`init --charter`, a join answer, the store): verified as sent and as
/// signed by the fixture provider; a verified charter founds a state whose members are
/// exactly its governors and founding members, under the id of its body.
pub fn charter(data: &[u8]) {
    let Ok(envelope) = Signed::<Charter>::from_bytes(data) else {
        return;
    };
    let _ = envelope.decode_trusted();
    charter_checked(&envelope);
    charter_checked(&resign(&envelope, fixtures::provider()));
}

fn charter_checked(envelope: &Signed<Charter>) {
    let Ok((id, charter)) = governance::verify_charter(envelope) else {
        return;
    };
    assert_eq!(id, MeshId::of_body(envelope.body()));
    assert!(charter.is_governor(&envelope.signer()));
    assert!(charter.quorum >= 1 && usize::from(charter.quorum) <= charter.governors.len());
    let state = MeshState::new(envelope.clone()).expect("a verified charter founds a mesh");
    assert_eq!(state.id(), id);
    assert_eq!(
        state.member_count(),
        charter.governors.len() + charter.members.len(),
        "the founders are the members"
    );
    check_state(&state);
    let _ = (id.short(), id.to_hex(), wire::catalog_topic(&id));
}

/// Ticket text, as pasted into `init --join` or `mesh join`: bounded before decoding; a
/// ticket that decodes encodes to text that decodes to the same ticket.
pub fn ticket(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    let Ok(ticket) = Ticket::decode(text) else {
        return;
    };
    assert!(ticket.bootstrap.len() <= governance::join::MAX_TICKET_ADDRS);
    let again = Ticket::decode(&ticket.encode()).expect("an encoded ticket decodes");
    assert_eq!(again, ticket);
    let _ = ticket.invitation_identity().public_key();
}

/// A newcomer's join claim (`Signed<JoinClaim>`) on a connection made with the invitation
/// key, checked against the fixture invitation: as sent, as signed by the newcomer key it
/// claims, and re-aimed at the fixture mesh and invitation. A claim that passes admits
/// exactly its signer under the invited domain.
pub fn join_claim(data: &[u8]) {
    let Ok(envelope) = Signed::<JoinClaim>::from_bytes(data) else {
        return;
    };
    claim_checked(&envelope);
    claim_checked(&resign_as_claimed(&envelope));
    if let Ok(mut claim) = envelope.decode_trusted() {
        claim.mesh = fixtures::mesh_id();
        claim.invitation = fixtures::invitation_key().public_key();
        for identity in fixtures::signers() {
            let mut claim = claim.clone();
            claim.member.key = identity.public_key();
            claim_checked(&Signed::sign(identity, &claim));
        }
    }
}

fn claim_checked(claim: &Signed<JoinClaim>) {
    let invitation = fixtures::invitation();
    let mesh = fixtures::mesh_id();
    let connection = invitation.key;
    let _ = governance::check_claim(mesh, None, claim, &connection, NOW_MS);
    let used = governance::Invitation {
        used: true,
        ..invitation.clone()
    };
    assert!(governance::check_claim(mesh, Some(&used), claim, &connection, NOW_MS).is_err());
    let late = invitation.expires_at_ms;
    assert!(governance::check_claim(mesh, Some(&invitation), claim, &connection, late).is_err());
    let other = fixtures::outsider().public_key();
    assert!(governance::check_claim(mesh, Some(&invitation), claim, &other, NOW_MS).is_err());
    if let Ok(member) = governance::check_claim(mesh, Some(&invitation), claim, &connection, NOW_MS)
    {
        assert_eq!(
            member.key,
            claim.signer(),
            "admits someone else than the signer"
        );
        assert_eq!(member.domain, invitation.domain, "admits another domain");
        // The admission the inviter then signs is a vote the mesh takes.
        let mut state = fixtures::mesh_state().clone();
        let admit = fixtures::motion(fixtures::member(), Action::Admit(member.clone()), NOW_MS);
        offer_checked(&mut state, &Signed::sign(fixtures::member(), &admit));
    }
}

/// The inviter's answer to a join (`JoinReply`), as the newcomer reads it: the charter is
/// verified and the state restored from the votes, as sent and re-signed by the keys they
/// claim; the restored state keeps the invariants.
pub fn join_reply(data: &[u8]) {
    let Ok(reply) = JoinReply::from_bytes(data) else {
        return;
    };
    let (charter, votes) = match &reply {
        JoinReply::Welcome { charter, votes } => (charter, votes),
        JoinReply::Refused(why) => {
            let _ = why.len();
            return;
        }
    };
    for charter in [charter.clone(), resign_as_claimed(charter)] {
        let resigned: Vec<Signed<Motion>> = votes.iter().map(resign_as_claimed).collect();
        for votes in [votes, &resigned] {
            if let Ok((state, refused)) = MeshState::restore(charter.clone(), votes.iter().cloned())
            {
                assert!(refused.len() <= votes.len());
                check_state(&state);
                assert_order_free(&state);
            }
        }
    }
}
