//! Contract negotiation on top of the store: what a provider answers, how a party records an
//! answer, and the operator's decisions (accept, reject, revoke).
//!
//! No network here: the actor in `contracts` moves bytes over `/meshnode/contract/1` and
//! calls these functions, which decide with the pure rules of `mesh_protocol::contract` and
//! `mesh_protocol::contract_sync`,
//! persist, audit and flush. Every function that changes a record flushes the store before it
//! returns, so whatever it returns may be acknowledged to a peer or a user.

use libp2p::PeerId;
use mesh_protocol::audit::AuditKind;
use mesh_protocol::budget::RequestBudget;
use mesh_protocol::contract::{
    Agreement, AgreementId, Columns, ContractEvent, ContractMessage, ContractReply,
    ContractRequest, ContractState, ContractTerms, DAY_MS, Decision, MAX_CONTRACT_REPLY,
    MAX_REASON_BYTES, MAX_STATUS_BATCH, PolicyDecision, PolicyViolation, Rejection, Revocation,
    StatusEntry, clipped_reason, evaluate, transition, verify_rejection, verify_request,
    verify_revocation, verify_revocation_signer,
};
use mesh_protocol::contract_sync::{IgnoredNotice, check_notice};
use mesh_protocol::governance::{Policies, Violation};
use mesh_protocol::{Filter, Identity, ProductDescriptor, PublicKey, Signed};

use crate::agreements::{AgreementRecord, Role};
use crate::error::NodeError;
use crate::store::{Store, StoreError};
use crate::views::{ShareRequest, rfc3339};

/// Fewest hex digits of an agreement id accepted on the command line.
pub(crate) const MIN_ID_PREFIX: usize = 8;
/// Validity of a request when `--days` is not given (capped by the product's maximum).
pub(crate) const DEFAULT_DAYS: u32 = 30;
/// The reply text when the libp2p sender is not the consumer named in the terms.
pub(crate) const NOT_SENDER: &str = "request signed by a key that is not the sender's: a \
     consumer can only send its own requests";

/// This node as a contract party: its store, its signing identity and its limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Party<'a> {
    /// Where records, revocations and the audit log live.
    pub(crate) store: &'a Store,
    /// Signs agreements, rejections and revocations.
    pub(crate) identity: &'a Identity,
    /// Per-consumer request budgets, asked before a request is considered.
    pub(crate) budget: &'a std::sync::Mutex<RequestBudget>,
    /// Tolerated clock difference with the other party, ms (validity checks).
    pub(crate) skew_ms: u64,
    /// The mesh's policies in force: a product that breaks them cannot be negotiated, and
    /// their caps bound every contract.
    pub(crate) policies: &'a Policies,
}

/// The mesh rules a contract for `descriptor` under `terms` breaks: the product's own
/// compliance, then the caps on contracts. Empty: negotiable.
pub(crate) fn mesh_violations(
    policies: &Policies,
    descriptor: &ProductDescriptor,
    terms: &ContractTerms,
) -> Vec<Violation> {
    let mut out = policies.check_product(descriptor);
    out.extend(policies.check_terms(terms));
    out
}

/// One line naming every violated rule and its fix.
pub(crate) fn describe_violations(policies: &Policies, violations: &[Violation]) -> String {
    let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
    format!(
        "the mesh's policies (version {}) forbid it: {}",
        policies.version,
        list.join("; ")
    )
}

impl Party<'_> {
    fn budget(&self) -> std::sync::MutexGuard<'_, RequestBudget> {
        // The budget holds no invariant a panic could break half-way.
        self.budget
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How libp2p encodes an ed25519 public key before it inlines it in a peer id (protobuf:
/// field 1, key type 1 = Ed25519; field 2, 32 bytes of key).
const ED25519_KEY_PREFIX: [u8; 4] = [0x08, 0x01, 0x12, 0x20];

/// The libp2p peer id of a domain key (the same ed25519 key): the identity multihash of the
/// key's protobuf encoding, built without decompressing the curve point. A node derives one
/// for every member at start-up and for every record it dials from, so this stays cheap; a
/// peer id built from bytes that are no valid key is one nobody can authenticate as.
pub(crate) fn peer_id_of(key: &PublicKey) -> Option<PeerId> {
    // Multihash: code 0 (identity), length 36, then the encoded key.
    let mut bytes = Vec::with_capacity(2 + ED25519_KEY_PREFIX.len() + 32);
    bytes.extend_from_slice(&[0x00, (ED25519_KEY_PREFIX.len() + 32) as u8]);
    bytes.extend_from_slice(&ED25519_KEY_PREFIX);
    bytes.extend_from_slice(&key.0);
    PeerId::from_bytes(&bytes).ok()
}

/// The domain key of a libp2p peer id (the inverse of [`peer_id_of`]), if it inlines an
/// ed25519 key. The key is not decompressed: a connected peer proved it holds the key in
/// the handshake, and every other use compares the key with known ones.
pub(crate) fn key_of(peer: &PeerId) -> Option<PublicKey> {
    // Code 0 is the identity multihash: the key itself, not a hash of it.
    if peer.as_ref().code() != 0 {
        return None;
    }
    let key = peer.as_ref().digest().strip_prefix(&ED25519_KEY_PREFIX)?;
    Some(PublicKey(key.try_into().ok()?))
}

/// The other party's key.
pub(crate) fn counterparty(role: Role, terms: &ContractTerms) -> PublicKey {
    match role {
        Role::Provider => terms.consumer,
        Role::Consumer => terms.provider,
    }
}

fn corrupt(id: &AgreementId, e: impl std::fmt::Display) -> NodeError {
    NodeError::Store(StoreError::Corrupt {
        tree: "agreements",
        key: id.to_hex(),
        reason: e.to_string(),
    })
}

fn terms_of(id: &AgreementId, record: &AgreementRecord) -> Result<ContractTerms, NodeError> {
    record.terms().map_err(|e| corrupt(id, e))
}

fn illegal(e: mesh_protocol::TransitionError) -> NodeError {
    NodeError::Conflict(e.to_string())
}

/// Appends an audit entry about one contract.
fn audit(
    store: &Store,
    kind: AuditKind,
    id: &AgreementId,
    role: Role,
    terms: &ContractTerms,
    extra: serde_json::Value,
    now_ms: u64,
) -> Result<(), StoreError> {
    let mut detail = serde_json::json!({
        "agreement": id.to_hex(),
        "role": role,
        "product": format!("{}/{}", terms.provider_domain, terms.product.name),
        "provider": terms.provider_domain,
        "consumer": terms.consumer_domain,
        "provider_key": terms.provider.to_hex(),
        "consumer_key": terms.consumer.to_hex(),
        "purpose": terms.purpose,
        "columns": terms.columns,
        "filter": terms.filter,
        "valid_until_ms": terms.valid_until_ms,
    });
    if let (Some(detail), serde_json::Value::Object(extra)) = (detail.as_object_mut(), extra) {
        detail.extend(extra);
    }
    store.audit_append(kind, &detail, now_ms)?;
    Ok(())
}

// ------------------------------------------------------------------ consumer: building

/// Whether a policy violation is a mistake in the request itself (refused locally, before
/// anything is stored or sent) rather than a policy decision that the provider makes and
/// signs.
fn is_malformed(violation: &PolicyViolation) -> bool {
    use PolicyViolation as V;
    matches!(
        violation,
        V::WrongProduct { .. }
            | V::EmptyValidity { .. }
            | V::AlreadyEnded { .. }
            | V::NotYetValid { .. }
            | V::EmptyVersionRange { .. }
            | V::MissingPurpose
            | V::NoColumns
            | V::UnknownColumns { .. }
            | V::TooManyColumns { .. }
            | V::DuplicateColumn { .. }
            | V::BadFilter(_)
    )
}

/// Builds the terms of `request` for `descriptor` (from our catalog) and pre-checks them
/// locally, so that mistakes (unknown columns, a filter that does not fit the schema, ...)
/// get a clear error before anything is stored or sent. Policy decisions (purpose,
/// restricted columns, duration) are left to the provider, which signs its answer.
pub(crate) fn build_terms(
    descriptor: &ProductDescriptor,
    consumer: PublicKey,
    consumer_domain: &str,
    request: &ShareRequest,
    now_ms: u64,
    nonce: [u8; 16],
) -> Result<ContractTerms, NodeError> {
    let product = descriptor.display_name();
    if descriptor.owner == consumer {
        return Err(NodeError::BadRequest(format!(
            "`{product}` is published by this node: a contract is between two domains, request it from another node"
        )));
    }
    let purpose = request.purpose.trim();
    if purpose.is_empty() {
        return Err(NodeError::BadRequest(
            "state why you need the data with --purpose (e.g. --purpose analytics)".into(),
        ));
    }
    let star = request
        .columns
        .as_ref()
        .is_some_and(|list| list.iter().any(|c| c.trim() == "*"));
    let columns = match (
        &request.columns,
        request.all_columns_including_future || star,
    ) {
        (Some(list), true) if list.iter().any(|c| !c.trim().is_empty() && c.trim() != "*") => {
            return Err(NodeError::BadRequest(
                "`*` (all current and future columns) cannot be combined with named columns: give one or the other".into(),
            ));
        }
        (_, true) => Columns::AllCurrentAndFuture,
        // All columns means the ones this version has and that may be shared, listed: an
        // agreement covers what its approver saw, not columns added later.
        (None, false) => {
            let restricted = &descriptor.policy.restricted_columns;
            let columns: Vec<String> = descriptor
                .column_names()
                .filter(|c| !restricted.iter().any(|r| r == c))
                .map(str::to_owned)
                .collect();
            if columns.is_empty() {
                return Err(NodeError::BadRequest(format!(
                    "every column of `{product}` is restricted: nothing can be shared"
                )));
            }
            Columns::Listed(columns)
        }
        (Some(list), false) => {
            let mut columns: Vec<String> = Vec::new();
            for c in list.iter().map(|c| c.trim()).filter(|c| !c.is_empty()) {
                if !columns.iter().any(|k| k == c) {
                    columns.push(c.to_owned());
                }
            }
            if columns.is_empty() {
                return Err(NodeError::BadRequest(
                    "--columns names no column: list them separated by commas, or leave the flag out for all shareable columns".into(),
                ));
            }
            Columns::Listed(columns)
        }
    };
    let filter = match request.filter.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(
            Filter::parse(text)
                .map_err(|e| NodeError::BadRequest(format!("invalid --filter `{text}`: {e}")))?
                .to_string(),
        ),
    };
    let max = descriptor.policy.max_contract_days;
    let validity_ms = match (request.days, request.valid_for_secs) {
        (Some(_), Some(_)) => {
            return Err(NodeError::BadRequest(
                "give the validity with --days or with --valid-for, not both".into(),
            ));
        }
        (Some(0), None) => {
            return Err(NodeError::BadRequest("--days must be at least 1".into()));
        }
        (None, Some(0)) => {
            return Err(NodeError::BadRequest(
                "--valid-for must be at least one second".into(),
            ));
        }
        (Some(days), None) => u64::from(days) * DAY_MS,
        (None, Some(secs)) => secs.saturating_mul(1000),
        (None, None) if max > 0 => u64::from(DEFAULT_DAYS.min(max)) * DAY_MS,
        (None, None) => u64::from(DEFAULT_DAYS) * DAY_MS,
    };
    let terms = ContractTerms {
        product: descriptor.id(),
        provider_domain: descriptor.domain.clone(),
        consumer_domain: consumer_domain.to_owned(),
        provider: descriptor.owner,
        consumer,
        min_version: descriptor.version,
        max_version: None,
        purpose: purpose.to_owned(),
        columns,
        filter,
        valid_from_ms: now_ms,
        valid_until_ms: now_ms.saturating_add(validity_ms),
        nonce,
    };
    if let Err(violation) = evaluate(descriptor, &terms, now_ms, 0)
        && is_malformed(&violation)
    {
        return Err(NodeError::BadRequest(format!(
            "{violation} (see `meshnode catalog show {product}`)"
        )));
    }
    Ok(terms)
}

/// Signs `terms` and stores them as a fresh `requested` record (flushed), ready to be sent.
pub(crate) async fn store_request(
    party: Party<'_>,
    terms: ContractTerms,
    now_ms: u64,
) -> Result<(AgreementId, Signed<ContractRequest>), NodeError> {
    let id = terms.id();
    let envelope = Signed::sign(party.identity, &ContractRequest { terms });
    let record = AgreementRecord {
        role: Role::Consumer,
        request: envelope.clone(),
        agreement: None,
        rejection: None,
        revocation: None,
        state: ContractState::Requested,
        updated_ms: now_ms,
    };
    party.store.put_agreement(&id, &record)?;
    party.store.flush().await?;
    Ok((id, envelope))
}

/// Removes a request that never reached its provider (or that it refused without storing
/// it), so that nothing half-done stays behind. Only `requested` records are removed.
pub(crate) async fn forget_request(party: Party<'_>, id: &AgreementId) -> Result<(), NodeError> {
    if let Some(record) = party.store.agreement(id)?
        && record.state == ContractState::Requested
        && record.role == Role::Consumer
    {
        party.store.remove_agreement(id)?;
        party.store.flush().await?;
    }
    Ok(())
}

// ------------------------------------------------------------------ answering a peer

/// Answers the bytes of one `/meshnode/contract/1` message from `sender`, as the actor does
/// (which decodes first, to count decision notices itself).
#[cfg(test)]
pub(crate) async fn answer(
    party: Party<'_>,
    sender: PeerId,
    bytes: &[u8],
    now_ms: u64,
) -> ContractReply {
    match ContractMessage::from_bytes(bytes) {
        Ok(message) => answer_message(party, sender, message, now_ms).await,
        Err(e) => ContractReply::Error(format!("malformed contract message: {e}")),
    }
}

/// Answers one decoded `/meshnode/contract/1` message from `sender`. Anything stored is
/// flushed before this returns, so the reply may be sent at once. A decision notice is
/// applied with [`apply_notice`] (the actor calls that itself, to count what it ignores).
pub(crate) async fn answer_message(
    party: Party<'_>,
    sender: PeerId,
    message: ContractMessage,
    now_ms: u64,
) -> ContractReply {
    let result = match message {
        ContractMessage::Request(envelope) => answer_request(party, sender, envelope, now_ms).await,
        ContractMessage::Status(id) => answer_status(party, sender, &id),
        ContractMessage::StatusBatch(ids) => answer_status_batch(party, sender, &ids),
        ContractMessage::Revoke(envelope) => answer_revoke(party, envelope, now_ms).await,
        ContractMessage::Decided(decision) => {
            Ok(match apply_notice(party, sender, decision, now_ms).await {
                Ok((id, record)) => reply_for(&id, &record),
                Err(NoticeRefused::Ignored(id, _)) => ContractReply::Unknown(id),
                Err(NoticeRefused::Invalid(e)) => ContractReply::Error(e.to_string()),
            })
        }
    };
    result.unwrap_or_else(|e| {
        tracing::error!("cannot answer a contract message: {e}");
        ContractReply::Error(format!(
            "the peer could not handle the message ({e}); try again later"
        ))
    })
}

/// The reply that describes a stored record.
pub(crate) fn reply_for(id: &AgreementId, record: &AgreementRecord) -> ContractReply {
    let missing =
        |what: &str| ContractReply::Error(format!("contract {} has no {what}", id.short()));
    match record.state {
        ContractState::Requested | ContractState::Pending => ContractReply::Pending(*id),
        ContractState::Agreed | ContractState::Expired => match &record.agreement {
            Some(a) => ContractReply::Agreed(a.clone()),
            None => missing("agreement"),
        },
        ContractState::Rejected => match &record.rejection {
            Some(r) => ContractReply::Rejected(r.clone()),
            None => missing("rejection"),
        },
        ContractState::Revoked => match &record.revocation {
            Some(r) => ContractReply::Revoked(r.clone()),
            None => missing("revocation"),
        },
    }
}

/// The provider's side of a request: verify, refuse replays, evaluate the policy, store,
/// audit, flush, answer.
pub(crate) async fn answer_request(
    party: Party<'_>,
    sender: PeerId,
    envelope: Signed<ContractRequest>,
    now_ms: u64,
) -> Result<ContractReply, NodeError> {
    let store = party.store;
    let terms = match verify_request(&envelope) {
        Ok(t) => t,
        Err(e) => return Ok(ContractReply::Error(format!("invalid request: {e}"))),
    };
    if peer_id_of(&terms.consumer) != Some(sender) {
        return Ok(ContractReply::Error(NOT_SENDER.into()));
    }
    let id = terms.id();
    // The same request again (a retry or a replay): its current state, never a second
    // agreement.
    if let Some(record) = store.agreement(&id)? {
        return Ok(reply_for(&id, &record));
    }
    if let Some(other) = store.agreement_with_nonce(&terms.consumer, &terms.nonce)? {
        return Ok(ContractReply::Error(format!(
            "the request reuses the nonce of contract {}: a replayed or altered request is refused; send a new request",
            other.short()
        )));
    }
    // The consumer's rate, before anything is evaluated, stored or audited.
    if let Err(refusal) = party.budget().take_token(&terms.consumer, now_ms) {
        tracing::debug!(
            consumer = terms.consumer_domain,
            "contract request over budget: {refusal}"
        );
        return Ok(ContractReply::Busy(refusal));
    }
    let me = party.identity.public_key();
    let product = format!("{}/{}", terms.provider_domain, terms.product.name);
    let descriptor = match (
        terms.provider == me,
        store.local_version(&terms.product.name)?,
    ) {
        (true, Some(_)) => store.descriptor(&terms.product)?,
        _ => None,
    };
    let Some((_, descriptor)) = descriptor else {
        return Ok(ContractReply::Error(format!(
            "product `{product}` is not published by this node"
        )));
    };
    let descriptor = descriptor
        .decode_trusted()
        .map_err(|e| NodeError::Internal(format!("our own descriptor does not decode: {e}")))?;
    let mut record = AgreementRecord {
        role: Role::Provider,
        request: envelope.clone(),
        agreement: None,
        rejection: None,
        revocation: None,
        state: ContractState::Requested,
        updated_ms: now_ms,
    };
    // The mesh's rules first: a product that breaks them is not negotiable, and the caps
    // bind every contract, whatever the product's own policy allows.
    let violations = mesh_violations(party.policies, &descriptor, &terms);
    let evaluated = if violations.is_empty() {
        evaluate(&descriptor, &terms, now_ms, party.skew_ms)
            .map_err(|violation| violation.to_string())
    } else {
        Err(describe_violations(party.policies, &violations))
    }
    // A verdict can name every column of a wide product: it must still fit the notice.
    .map_err(|violation| clipped_reason(&violation));
    let outcome = match evaluated {
        Err(violation) => {
            let rejection = Signed::sign(
                party.identity,
                &Rejection {
                    agreement_id: id,
                    provider: me,
                    reason: violation.clone(),
                    at_ms: now_ms,
                },
            );
            record.state = transition(record.state, ContractEvent::Reject).map_err(illegal)?;
            record.rejection = Some(rejection.clone());
            Some((
                AuditKind::Rejection,
                serde_json::json!({ "reason": violation, "decided_by": "policy" }),
                ContractReply::Rejected(rejection),
            ))
        }
        Ok(PolicyDecision::AutoApprove) => {
            // Approval at once waits for no one: what bounds the agreements one consumer
            // keeps here is the live-agreement limit. The count stops at it.
            let per_consumer = party.budget().config().max_live_per_consumer;
            let live = store.count_agreements_of(
                &terms.consumer,
                Role::Provider,
                ContractState::Agreed,
                per_consumer as usize,
            );
            let live = party
                .budget()
                .check_live(u32::try_from(live).unwrap_or(u32::MAX));
            if let Err(refusal) = live {
                tracing::debug!(
                    consumer = terms.consumer_domain,
                    "contract request over budget: {refusal}"
                );
                return Ok(ContractReply::Busy(refusal));
            }
            let agreement = Agreement::countersign(party.identity, envelope)
                .map_err(|e| NodeError::Internal(format!("cannot countersign: {e}")))?;
            record.state = transition(record.state, ContractEvent::Approve).map_err(illegal)?;
            record.agreement = Some(agreement.clone());
            Some((
                AuditKind::Agreement,
                serde_json::json!({ "decided_by": "policy" }),
                ContractReply::Agreed(agreement),
            ))
        }
        Ok(PolicyDecision::NeedsOperator) => {
            // Only a request that would wait for the operator takes a place in the queue,
            // so a full queue never blocks automatic approval. The counts stop at the
            // limits: their cost does not grow with what the store holds.
            let (per_consumer, total) = {
                let budget = party.budget();
                let config = budget.config();
                (
                    config.max_open_per_consumer as usize,
                    config.max_open_total as usize,
                )
            };
            let open_by_consumer = [ContractState::Requested, ContractState::Pending]
                .into_iter()
                .map(|state| {
                    store.count_agreements_of(&terms.consumer, Role::Provider, state, per_consumer)
                })
                .sum::<usize>();
            let open_total =
                store.count_agreements_in(Role::Provider, ContractState::Pending, total);
            let open = party.budget().check_open(
                u32::try_from(open_by_consumer).unwrap_or(u32::MAX),
                u32::try_from(open_total).unwrap_or(u32::MAX),
            );
            if let Err(refusal) = open {
                tracing::debug!(
                    consumer = terms.consumer_domain,
                    "contract request over budget: {refusal}"
                );
                return Ok(ContractReply::Busy(refusal));
            }
            record.state =
                transition(record.state, ContractEvent::ParkForOperator).map_err(illegal)?;
            None
        }
    };
    store.put_agreement(&id, &record)?;
    let direction = serde_json::json!({ "direction": "received", "state": record.state });
    audit(
        store,
        AuditKind::Request,
        &id,
        Role::Provider,
        &terms,
        direction,
        now_ms,
    )?;
    let reply = match outcome {
        Some((kind, extra, reply)) => {
            audit(store, kind, &id, Role::Provider, &terms, extra, now_ms)?;
            reply
        }
        None => ContractReply::Pending(id),
    };
    store.flush().await?;
    tracing::info!(id = %id.short(), product, consumer = terms.consumer_domain, state = %record.state, "contract request answered");
    Ok(reply)
}

/// The state of a contract, for one of its parties only.
fn answer_status(
    party: Party<'_>,
    sender: PeerId,
    id: &AgreementId,
) -> Result<ContractReply, NodeError> {
    let Some(record) = party.store.agreement(id)? else {
        return Ok(ContractReply::Unknown(*id));
    };
    let terms = terms_of(id, &record)?;
    let is_party =
        peer_id_of(&terms.consumer) == Some(sender) || peer_id_of(&terms.provider) == Some(sender);
    if !is_party {
        return Ok(ContractReply::Unknown(*id));
    }
    Ok(reply_for(id, &record))
}

/// The states of several contracts with the same party, in the order asked, as many as fit
/// in one reply (the consumer asks again for the rest).
fn answer_status_batch(
    party: Party<'_>,
    sender: PeerId,
    ids: &[AgreementId],
) -> Result<ContractReply, NodeError> {
    if ids.len() > MAX_STATUS_BATCH {
        return Ok(ContractReply::Error(format!(
            "a status batch asks for {} contracts; at most {MAX_STATUS_BATCH} are answered at once",
            ids.len()
        )));
    }
    // Room for the reply's own framing.
    let mut room = MAX_CONTRACT_REPLY - 1024;
    let mut entries = Vec::with_capacity(ids.len());
    for id in ids {
        let reply = answer_status(party, sender, id)?;
        let Some(entry) = StatusEntry::from_reply(reply) else {
            continue;
        };
        let len = entry.encoded_len() + 8;
        if len > room {
            break;
        }
        room -= len;
        entries.push(entry);
    }
    Ok(ContractReply::Statuses(entries))
}

/// A revocation sent to us directly by the other party.
async fn answer_revoke(
    party: Party<'_>,
    envelope: Signed<Revocation>,
    now_ms: u64,
) -> Result<ContractReply, NodeError> {
    let body = match verify_revocation_signer(&envelope) {
        Ok(b) => b,
        Err(e) => return Ok(ContractReply::Error(format!("invalid revocation: {e}"))),
    };
    let id = body.agreement_id;
    let Some(record) = party.store.agreement(&id)? else {
        return Ok(ContractReply::Unknown(id));
    };
    let terms = terms_of(&id, &record)?;
    if let Err(e) = verify_revocation(&envelope, &terms) {
        return Ok(ContractReply::Error(format!("invalid revocation: {e}")));
    }
    match apply_revocation(party, &id, record, envelope, now_ms).await {
        Ok(record) => Ok(reply_for(&id, &record)),
        Err(NodeError::Conflict(message)) => Ok(ContractReply::Error(message)),
        Err(e) => Err(e),
    }
}

// ------------------------------------------------------------------ recording outcomes

/// Records a revocation that was verified against `record`'s terms, without flushing.
/// Returns the record and whether it changed. A contract that is already revoked keeps its
/// first revocation. One we still hold as requested or pending (the provider agreed and
/// revoked before we heard of the agreement) ends as revoked too; a rejected or expired one
/// cannot be revoked.
pub(crate) fn record_revocation(
    store: &Store,
    id: &AgreementId,
    mut record: AgreementRecord,
    envelope: Signed<Revocation>,
    now_ms: u64,
) -> Result<(AgreementRecord, bool), NodeError> {
    let terms = terms_of(id, &record)?;
    match record.state {
        ContractState::Revoked => return Ok((record, false)),
        ContractState::Requested | ContractState::Pending => {}
        state => {
            transition(state, ContractEvent::Revoke).map_err(illegal)?;
        }
    }
    let body = envelope.decode_trusted().map_err(|e| corrupt(id, e))?;
    let by = if body.by == terms.provider {
        Role::Provider
    } else {
        Role::Consumer
    };
    record.state = ContractState::Revoked;
    record.revocation = Some(envelope.clone());
    record.updated_ms = now_ms;
    store.put_agreement(id, &record)?;
    store.put_revocation(id, &envelope)?;
    let extra = serde_json::json!({ "revoked_by": by, "reason": body.reason });
    audit(
        store,
        AuditKind::Revocation,
        id,
        record.role,
        &terms,
        extra,
        now_ms,
    )?;
    tracing::info!(id = %id.short(), ?by, "contract revoked");
    Ok((record, true))
}

/// A revocation heard on gossip, without flushing: `Ok(true)` when it ended a contract this
/// node holds (accept and forward), `Ok(false)` when there is nothing to do (ignore: neither
/// stored nor forwarded), which includes every revocation of an agreement this node is not a
/// party to. `Err` for a forgery (reject).
pub(crate) fn revocation_from_gossip(
    store: &Store,
    envelope: &Signed<Revocation>,
    now_ms: u64,
) -> Result<bool, mesh_protocol::RejectReason> {
    use mesh_protocol::RejectReason;
    // The agreement is looked up first: a revocation of one this node does not hold is
    // dropped without a signature check, whoever claims to have signed it.
    let id = envelope
        .decode_trusted()
        .map_err(|_| RejectReason::Malformed)?
        .agreement_id;
    let record = match store.agreement(&id) {
        Ok(Some(record)) => record,
        Ok(None) => {
            tracing::debug!(id = %id.short(), "revocation of an unknown agreement ignored");
            return Ok(false);
        }
        Err(e) => {
            tracing::error!("cannot read contract {}: {e}", id.short());
            return Ok(false);
        }
    };
    verify_revocation_signer(envelope).map_err(|_| RejectReason::BadSignature)?;
    let Ok(terms) = record.terms() else {
        return Ok(false);
    };
    if verify_revocation(envelope, &terms).is_err() {
        return Err(RejectReason::NotOwner);
    }
    match record_revocation(store, &id, record, envelope.clone(), now_ms) {
        Ok((_, changed)) => Ok(changed),
        Err(e) => {
            tracing::info!(id = %id.short(), "revocation from gossip not applied: {e}");
            Ok(false)
        }
    }
}

/// [`record_revocation`], then flush.
async fn apply_revocation(
    party: Party<'_>,
    id: &AgreementId,
    record: AgreementRecord,
    envelope: Signed<Revocation>,
    now_ms: u64,
) -> Result<AgreementRecord, NodeError> {
    let (record, changed) = record_revocation(party.store, id, record, envelope, now_ms)?;
    if changed {
        party.store.flush().await?;
    }
    Ok(record)
}

/// Records the other party's answer about contract `id` (to our request, a status poll or a
/// revocation), after checking every signature against the stored terms. Flushes when
/// something changed. [`ContractReply::Unknown`] changes nothing; [`ContractReply::Error`]
/// is returned as [`NodeError::Refused`].
pub(crate) async fn apply_reply(
    party: Party<'_>,
    id: &AgreementId,
    reply: ContractReply,
    now_ms: u64,
) -> Result<AgreementRecord, NodeError> {
    let store = party.store;
    let mut record = store.agreement(id)?.ok_or_else(|| {
        NodeError::NotFound(format!("contract {} is no longer stored", id.short()))
    })?;
    let terms = terms_of(id, &record)?;
    let other = match record.role {
        Role::Provider => &terms.consumer_domain,
        Role::Consumer => &terms.provider_domain,
    };
    let before = record.state;
    let mut outcome: Option<(AuditKind, serde_json::Value)> = None;
    match reply {
        ContractReply::Agreed(agreement) => {
            if agreement.id() != *id {
                return Err(NodeError::Refused(format!(
                    "{other} answered about contract {} instead of {}",
                    agreement.id().short(),
                    id.short()
                )));
            }
            agreement.verify().map_err(|e| {
                NodeError::Refused(format!(
                    "{other} sent an agreement that does not verify: {e}"
                ))
            })?;
            if matches!(before, ContractState::Requested | ContractState::Pending) {
                record.state = transition(before, ContractEvent::Approve).map_err(illegal)?;
                record.agreement = Some(agreement);
                outcome = Some((AuditKind::Agreement, serde_json::json!({})));
            }
        }
        ContractReply::Pending(pending) => {
            if pending != *id {
                return Err(NodeError::Refused(format!(
                    "{other} answered about contract {} instead of {}",
                    pending.short(),
                    id.short()
                )));
            }
            if before == ContractState::Requested {
                record.state =
                    transition(before, ContractEvent::ParkForOperator).map_err(illegal)?;
            }
        }
        ContractReply::Rejected(rejection) => {
            let body = verify_rejection(&rejection, &terms).map_err(|e| {
                NodeError::Refused(format!(
                    "{other} sent a rejection that does not verify: {e}"
                ))
            })?;
            if matches!(before, ContractState::Requested | ContractState::Pending) {
                record.state = transition(before, ContractEvent::Reject).map_err(illegal)?;
                record.rejection = Some(rejection);
                outcome = Some((
                    AuditKind::Rejection,
                    serde_json::json!({ "reason": body.reason }),
                ));
            }
        }
        ContractReply::Revoked(revocation) => {
            verify_revocation(&revocation, &terms).map_err(|e| {
                NodeError::Refused(format!(
                    "{other} sent a revocation that does not verify: {e}"
                ))
            })?;
            if before == ContractState::Requested {
                audit_sent(store, id, &terms, now_ms)?;
            }
            return apply_revocation(party, id, record, revocation, now_ms).await;
        }
        ContractReply::Unknown(_) => return Ok(record),
        ContractReply::Error(message) => {
            return Err(NodeError::Refused(format!("{other} refused: {message}")));
        }
        ContractReply::Busy(refusal) => {
            return Err(NodeError::Refused(format!("{other} refused: {refusal}")));
        }
        ContractReply::Statuses(_) => {
            return Err(NodeError::Refused(format!(
                "{other} answered with a status batch where one answer was expected"
            )));
        }
    }
    if record.state == before {
        return Ok(record);
    }
    record.updated_ms = now_ms;
    store.put_agreement(id, &record)?;
    if before == ContractState::Requested {
        audit_sent(store, id, &terms, now_ms)?;
    }
    if let Some((kind, extra)) = outcome {
        audit(store, kind, id, record.role, &terms, extra, now_ms)?;
    }
    store.flush().await?;
    tracing::info!(id = %id.short(), from = %before, to = %record.state, "contract updated");
    Ok(record)
}

/// The consumer's audit entry for a request, written once the provider has acknowledged it.
fn audit_sent(
    store: &Store,
    id: &AgreementId,
    terms: &ContractTerms,
    now_ms: u64,
) -> Result<(), StoreError> {
    let extra = serde_json::json!({ "direction": "sent" });
    audit(
        store,
        AuditKind::Request,
        id,
        Role::Consumer,
        terms,
        extra,
        now_ms,
    )
}

/// Why a decision notice was not applied.
#[derive(Debug)]
pub(crate) enum NoticeRefused {
    /// Not about an undecided request of ours to the sender: nothing read beyond the record,
    /// nothing stored (counted by reason).
    Ignored(AgreementId, IgnoredNotice),
    /// About one of our requests, but it does not verify against its terms (as a status reply
    /// that does not verify).
    Invalid(NodeError),
}

/// A provider's decision pushed to us ([`ContractMessage::Decided`]). Applied only when it
/// names an undecided request this node sent to `sender` ([`check_notice`], before any
/// signature is checked); then verified and recorded by [`apply_reply`], exactly like the
/// same decision in a status reply.
pub(crate) async fn apply_notice(
    party: Party<'_>,
    sender: PeerId,
    decision: Decision,
    now_ms: u64,
) -> Result<(AgreementId, AgreementRecord), NoticeRefused> {
    let Ok(id) = decision.claimed_id() else {
        return Err(NoticeRefused::Ignored(
            AgreementId([0; 32]),
            IgnoredNotice::Unknown,
        ));
    };
    let record = party
        .store
        .agreement(&id)
        .map_err(|e| NoticeRefused::Invalid(e.into()))?;
    let terms = match &record {
        Some(record) => Some(terms_of(&id, record).map_err(NoticeRefused::Invalid)?),
        None => None,
    };
    let held = terms.as_ref().zip(record.as_ref().map(|r| r.state));
    // A sender whose peer id is not an ed25519 key is no contract's provider.
    let from = key_of(&sender).unwrap_or(PublicKey([0; 32]));
    check_notice(&party.identity.public_key(), &from, held)
        .map_err(|reason| NoticeRefused::Ignored(id, reason))?;
    apply_reply(party, &id, decision.into_reply(), now_ms)
        .await
        .map(|record| (id, record))
        .map_err(NoticeRefused::Invalid)
}

// ------------------------------------------------------------------ operator decisions

/// Finds a contract by its full id or a unique prefix of at least [`MIN_ID_PREFIX`] hex
/// digits.
pub(crate) fn find(store: &Store, text: &str) -> Result<(AgreementId, AgreementRecord), NodeError> {
    let prefix = text.trim().to_ascii_lowercase();
    let see = "see `meshnode share list`";
    if prefix.len() < MIN_ID_PREFIX
        || prefix.len() > 64
        || !prefix.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(NodeError::BadRequest(format!(
            "`{text}` is not a contract id: give the full id or at least {MIN_ID_PREFIX} of its hex digits ({see})"
        )));
    }
    let mut hits: Vec<(AgreementId, AgreementRecord)> = if prefix.len() == 64 {
        let id: AgreementId =
            prefix
                .parse()
                .map_err(|e: mesh_protocol::contract::ParseAgreementIdError| {
                    NodeError::BadRequest(e.to_string())
                })?;
        store.agreement(&id)?.map(|r| (id, r)).into_iter().collect()
    } else {
        store
            .agreements_with_hex_prefix(&prefix, 64)?
            .into_iter()
            .take(2)
            .collect()
    };
    match hits.len() {
        0 => Err(NodeError::NotFound(format!(
            "no contract with id `{text}` on this node ({see})"
        ))),
        1 => Ok(hits.pop().expect("one hit")),
        _ => {
            let ids: Vec<String> = hits.iter().map(|(id, _)| id.to_hex()).collect();
            Err(NodeError::BadRequest(format!(
                "contract id `{text}` is ambiguous: it starts {}; give more digits",
                ids.join(" and ")
            )))
        }
    }
}

/// Checks that a pending request is ours to decide.
fn pending_for_provider(
    id: &AgreementId,
    record: &AgreementRecord,
    terms: &ContractTerms,
    verb: &str,
    now_ms: u64,
) -> Result<(), NodeError> {
    if record.role != Role::Provider {
        return Err(NodeError::Conflict(format!(
            "contract {} is a request this node sent: only its provider ({}) can {verb} it",
            id.short(),
            terms.provider_domain
        )));
    }
    let state = record.state_at(now_ms);
    if state != ContractState::Pending {
        return Err(NodeError::Conflict(format!(
            "contract {} is {state}, not pending: only a pending request can be {verb}ed",
            id.short()
        )));
    }
    Ok(())
}

/// `share accept`: the provider's operator countersigns a pending request.
pub(crate) async fn accept(
    party: Party<'_>,
    text: &str,
    now_ms: u64,
) -> Result<(AgreementId, AgreementRecord), NodeError> {
    let (id, mut record) = find(party.store, text)?;
    let terms = terms_of(&id, &record)?;
    pending_for_provider(&id, &record, &terms, "accept", now_ms)?;
    // Policies may have been amended since the request arrived.
    if let Some((_, envelope)) = party.store.descriptor(&terms.product)?
        && let Ok(descriptor) = envelope.decode_trusted()
    {
        let violations = mesh_violations(party.policies, &descriptor, &terms);
        if !violations.is_empty() {
            return Err(NodeError::Refused(format!(
                "cannot accept {}: {}; reject it instead",
                id.short(),
                describe_violations(party.policies, &violations)
            )));
        }
    }
    if now_ms >= terms.valid_until_ms {
        return Err(NodeError::Conflict(format!(
            "the request {} asked for a contract that ended on {}: reject it instead",
            id.short(),
            rfc3339(terms.valid_until_ms)
        )));
    }
    let agreement = Agreement::countersign(party.identity, record.request.clone())
        .map_err(|e| NodeError::Internal(format!("cannot countersign: {e}")))?;
    record.state = transition(record.state, ContractEvent::Approve).map_err(illegal)?;
    record.agreement = Some(agreement);
    record.updated_ms = now_ms;
    party.store.put_agreement(&id, &record)?;
    let extra = serde_json::json!({ "decided_by": "operator" });
    audit(
        party.store,
        AuditKind::Agreement,
        &id,
        record.role,
        &terms,
        extra,
        now_ms,
    )?;
    party.store.flush().await?;
    Ok((id, record))
}

/// Most pending requests looked at by one expiry sweep (the whole queue is bounded by the
/// budget's total, so a few sweeps cover it).
const SWEEP_BATCH: usize = 4096;

/// Ends the requests that waited longer than the budget's time to live for the provider's
/// operator: each gets a signed rejection (the consumer learns it on its next poll), so
/// its slot in the per-consumer and total budgets is free again. Returns how many ended;
/// the caller flushes (nobody waits for these).
pub(crate) fn expire_pending(party: Party<'_>, now_ms: u64) -> Result<usize, NodeError> {
    let store = party.store;
    let ttl_ms = party.budget().config().pending_ttl_ms;
    let mut expired = 0;
    for id in store.agreement_ids_in(Role::Provider, ContractState::Pending, SWEEP_BATCH)? {
        let Some(mut record) = store.agreement(&id)? else {
            continue;
        };
        if record.state != ContractState::Pending
            || !party.budget().pending_expired(record.updated_ms, now_ms)
        {
            continue;
        }
        let terms = terms_of(&id, &record)?;
        let reason = format!(
            "no decision within {} days: the request expired; send a new one if it is still needed",
            ttl_ms.div_ceil(DAY_MS)
        );
        let rejection = Signed::sign(
            party.identity,
            &Rejection {
                agreement_id: id,
                provider: party.identity.public_key(),
                reason: reason.clone(),
                at_ms: now_ms,
            },
        );
        record.state = transition(record.state, ContractEvent::Reject).map_err(illegal)?;
        record.rejection = Some(rejection);
        record.updated_ms = now_ms;
        store.put_agreement(&id, &record)?;
        let extra = serde_json::json!({ "reason": reason, "decided_by": "expiry" });
        audit(
            store,
            AuditKind::Rejection,
            &id,
            Role::Provider,
            &terms,
            extra,
            now_ms,
        )?;
        expired += 1;
    }
    if expired > 0 {
        tracing::info!(expired, "pending contract requests expired");
    }
    Ok(expired)
}

/// `share reject`: the provider's operator refuses a pending request, with a signed reason.
pub(crate) async fn reject(
    party: Party<'_>,
    text: &str,
    reason: &str,
    now_ms: u64,
) -> Result<(AgreementId, AgreementRecord), NodeError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(NodeError::BadRequest(
            "say why with --reason: the consumer sees it".into(),
        ));
    }
    check_reason_length(reason)?;
    let (id, mut record) = find(party.store, text)?;
    let terms = terms_of(&id, &record)?;
    pending_for_provider(&id, &record, &terms, "reject", now_ms)?;
    let rejection = Signed::sign(
        party.identity,
        &Rejection {
            agreement_id: id,
            provider: party.identity.public_key(),
            reason: reason.to_owned(),
            at_ms: now_ms,
        },
    );
    record.state = transition(record.state, ContractEvent::Reject).map_err(illegal)?;
    record.rejection = Some(rejection);
    record.updated_ms = now_ms;
    party.store.put_agreement(&id, &record)?;
    let extra = serde_json::json!({ "reason": reason, "decided_by": "operator" });
    audit(
        party.store,
        AuditKind::Rejection,
        &id,
        record.role,
        &terms,
        extra,
        now_ms,
    )?;
    party.store.flush().await?;
    Ok((id, record))
}

/// Refuses an operator's reason that a signed notice cannot carry: receivers refuse notices
/// over their bound, so it would reach nobody.
fn check_reason_length(reason: &str) -> Result<(), NodeError> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(NodeError::BadRequest(format!(
            "the reason is {} bytes; a signed notice carries at most {MAX_REASON_BYTES}: shorten --reason",
            reason.len()
        )));
    }
    Ok(())
}

/// `share revoke`: either party ends an agreed contract. Returns the signed revocation to
/// send to the other party and to gossip.
pub(crate) async fn revoke(
    party: Party<'_>,
    text: &str,
    reason: Option<&str>,
    now_ms: u64,
) -> Result<(AgreementId, AgreementRecord, Signed<Revocation>), NodeError> {
    if let Some(reason) = reason {
        check_reason_length(reason.trim())?;
    }
    let (id, record) = find(party.store, text)?;
    let terms = terms_of(&id, &record)?;
    let short = id.short();
    match record.state_at(now_ms) {
        ContractState::Agreed => {}
        ContractState::Revoked => {
            let by = record
                .revocation
                .as_ref()
                .map(|r| {
                    if r.signer() == terms.provider {
                        terms.provider_domain.as_str()
                    } else {
                        terms.consumer_domain.as_str()
                    }
                })
                .unwrap_or("a party");
            return Err(NodeError::Conflict(format!(
                "contract {short} is already revoked (by {by}): there is nothing left to revoke"
            )));
        }
        ContractState::Rejected => {
            return Err(NodeError::Conflict(format!(
                "contract {short} was rejected: there is no agreement to revoke"
            )));
        }
        ContractState::Expired => {
            return Err(NodeError::Conflict(format!(
                "contract {short} already expired on {}: there is nothing to revoke",
                rfc3339(terms.valid_until_ms)
            )));
        }
        // The consumer may withdraw a request still waiting for the provider's operator.
        ContractState::Pending if record.role == Role::Consumer => {}
        state @ (ContractState::Requested | ContractState::Pending) => {
            return Err(NodeError::Conflict(format!(
                "contract {short} is {state}, not agreed: only an agreed contract can be revoked (its provider can `meshnode share reject` a pending request)"
            )));
        }
    }
    let reason = reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let role = match record.role {
                Role::Provider => "provider",
                Role::Consumer => "consumer",
            };
            format!("revoked by the {role}'s operator")
        });
    let envelope = Signed::sign(
        party.identity,
        &Revocation {
            agreement_id: id,
            by: party.identity.public_key(),
            reason,
            at_ms: now_ms,
        },
    );
    let record = apply_revocation(party, &id, record, envelope.clone(), now_ms).await?;
    Ok((id, record, envelope))
}

#[cfg(test)]
mod tests {
    use mesh_protocol::audit::AuditEntry;
    use mesh_protocol::descriptor::{Approval, ColumnSchema, ContentDigest, Policy, Sla, Status};

    use super::*;
    use mesh_protocol::budget::{BudgetConfig, BudgetRefusal};

    const NOW: u64 = 1_700_000_000_000;

    fn sales() -> Identity {
        Identity::from_secret_bytes([1; 32])
    }
    fn churn() -> Identity {
        Identity::from_secret_bytes([2; 32])
    }
    fn mallory() -> Identity {
        Identity::from_secret_bytes([3; 32])
    }
    fn peer(identity: &Identity) -> PeerId {
        peer_id_of(&identity.public_key()).unwrap()
    }

    #[test]
    fn peer_ids_are_libp2p_s_and_map_back_to_their_keys() {
        for identity in [sales(), churn(), mallory()] {
            let key = identity.public_key();
            let libp2p_id = crate::net::keypair(&identity).public().to_peer_id();
            assert_eq!(peer_id_of(&key), Some(libp2p_id));
            assert_eq!(key_of(&libp2p_id), Some(key));
        }
        // A peer id hashing its key (SHA-256 multihash), and one inlining 32 bytes that are
        // no encoded ed25519 key, have no domain key.
        let mut hashed = vec![0x12, 0x20];
        hashed.extend_from_slice(&[7; 32]);
        assert_eq!(key_of(&PeerId::from_bytes(&hashed).unwrap()), None);
        assert_eq!(key_of(&PeerId::random()), None);
    }

    fn column(name: &str, data_type: &str) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            data_type: data_type.into(),
            nullable: false,
        }
    }

    fn descriptor(approval: Approval) -> ProductDescriptor {
        ProductDescriptor {
            owner: sales().public_key(),
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
                column("amount", "Float64"),
            ],
            rows: 3,
            bytes: 100,
            digest: ContentDigest([0; 32]),
            published_at_ms: NOW,
            sla: Sla::default(),
            policy: Policy {
                approval,
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

    /// A provider store that publishes `orders` and a consumer store that has it in its
    /// catalog.
    struct Mesh {
        _dirs: (tempfile::TempDir, tempfile::TempDir),
        provider: Store,
        consumer: Store,
        descriptor: ProductDescriptor,
        sales: Identity,
        churn: Identity,
        /// The provider's request budget.
        provider_budget: std::sync::Mutex<RequestBudget>,
        /// The consumer's (unused by these tests, but every party has one).
        consumer_budget: std::sync::Mutex<RequestBudget>,
        /// The mesh's policies both parties apply.
        policies: Policies,
    }

    impl Mesh {
        fn new(approval: Approval) -> Self {
            let descriptor = descriptor(approval);
            let envelope = Signed::sign(&sales(), &descriptor);
            let (pd, cd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let provider = Store::open(pd.path()).unwrap();
            provider.put_descriptor(&descriptor, &envelope).unwrap();
            provider.set_local_version("orders", 2).unwrap();
            let consumer = Store::open(cd.path()).unwrap();
            consumer.put_descriptor(&descriptor, &envelope).unwrap();
            Self {
                _dirs: (pd, cd),
                provider,
                consumer,
                descriptor,
                sales: sales(),
                churn: churn(),
                provider_budget: std::sync::Mutex::new(RequestBudget::new(Default::default())),
                consumer_budget: std::sync::Mutex::new(RequestBudget::new(Default::default())),
                policies: Policies::default(),
            }
        }

        fn provider(&self) -> Party<'_> {
            Party {
                store: &self.provider,
                identity: &self.sales,
                budget: &self.provider_budget,
                skew_ms: 0,
                policies: &self.policies,
            }
        }

        fn consumer(&self) -> Party<'_> {
            Party {
                store: &self.consumer,
                identity: &self.churn,
                budget: &self.consumer_budget,
                skew_ms: 0,
                policies: &self.policies,
            }
        }

        fn terms(&self, request: &ShareRequest, nonce: u8) -> Result<ContractTerms, NodeError> {
            build_terms(
                &self.descriptor,
                self.churn.public_key(),
                "churn",
                request,
                NOW,
                [nonce; 16],
            )
        }

        /// The consumer requests, the provider answers, the consumer records the answer.
        async fn negotiate(
            &self,
            request: &ShareRequest,
            nonce: u8,
        ) -> (AgreementId, ContractReply) {
            let terms = self.terms(request, nonce).unwrap();
            let (id, envelope) = store_request(self.consumer(), terms, NOW).await.unwrap();
            let bytes = ContractMessage::Request(envelope).to_bytes();
            let reply = answer(self.provider(), peer(&self.churn), &bytes, NOW).await;
            apply_reply(self.consumer(), &id, reply.clone(), NOW)
                .await
                .unwrap();
            (id, reply)
        }

        fn states(&self, id: &AgreementId) -> (ContractState, ContractState) {
            (
                self.provider.agreement(id).unwrap().unwrap().state,
                self.consumer.agreement(id).unwrap().unwrap().state,
            )
        }
    }

    fn analytics() -> ShareRequest {
        ShareRequest {
            product: "sales/orders".into(),
            purpose: "analytics".into(),
            columns: Some(vec!["order_id".into(), "region".into()]),
            filter: Some("region='EU'".into()),
            days: Some(7),
            valid_for_secs: None,
            all_columns_including_future: false,
        }
    }

    fn audit_kinds(store: &Store) -> Vec<AuditKind> {
        assert!(store.audit_verify().unwrap().is_ok());
        store
            .audit_raw()
            .unwrap()
            .iter()
            .map(|b| AuditEntry::from_bytes(b).unwrap().kind)
            .collect()
    }

    #[tokio::test]
    async fn auto_approval_agrees_on_both_sides() {
        let mesh = Mesh::new(Approval::Auto);
        let (id, reply) = mesh.negotiate(&analytics(), 1).await;
        assert!(matches!(reply, ContractReply::Agreed(_)), "{reply:?}");
        assert_eq!(
            mesh.states(&id),
            (ContractState::Agreed, ContractState::Agreed)
        );
        let record = mesh.consumer.agreement(&id).unwrap().unwrap();
        let terms = record.agreement.unwrap().verify().unwrap();
        assert_eq!(
            terms.filter.as_deref(),
            Some("region = 'EU'"),
            "canonical filter"
        );
        assert_eq!(terms.min_version, 2);
        assert_eq!(terms.valid_until_ms, NOW + 7 * DAY_MS);
        for store in [&mesh.provider, &mesh.consumer] {
            assert_eq!(
                audit_kinds(store),
                [AuditKind::Request, AuditKind::Agreement]
            );
        }
    }

    #[tokio::test]
    async fn manual_approval_waits_for_the_operator() {
        let mesh = Mesh::new(Approval::Manual);
        let (id, reply) = mesh.negotiate(&analytics(), 1).await;
        assert_eq!(reply, ContractReply::Pending(id));
        assert_eq!(
            mesh.states(&id),
            (ContractState::Pending, ContractState::Pending)
        );
        // The consumer cannot accept its own request; the provider can, by prefix.
        let err = accept(mesh.consumer(), &id.short(), NOW).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("only its provider (sales) can accept"),
            "{err}"
        );
        let (accepted, record) = accept(mesh.provider(), &id.to_hex()[..8], NOW)
            .await
            .unwrap();
        assert_eq!((accepted, record.state), (id, ContractState::Agreed));
        let err = accept(mesh.provider(), &id.short(), NOW).await.unwrap_err();
        assert!(matches!(err, NodeError::Conflict(_)), "{err}");
        // The consumer's poll learns the decision.
        let poll = ContractMessage::Status(id).to_bytes();
        let reply = answer(mesh.provider(), peer(&mesh.churn), &poll, NOW).await;
        apply_reply(mesh.consumer(), &id, reply, NOW).await.unwrap();
        assert_eq!(
            mesh.states(&id),
            (ContractState::Agreed, ContractState::Agreed)
        );
        // A stranger learns nothing.
        let reply = answer(mesh.provider(), peer(&mallory()), &poll, NOW).await;
        assert_eq!(reply, ContractReply::Unknown(id));
    }

    #[tokio::test]
    async fn operator_rejection_reaches_the_consumer() {
        let mesh = Mesh::new(Approval::Manual);
        let (id, _) = mesh.negotiate(&analytics(), 1).await;
        let err = reject(mesh.provider(), &id.short(), " ", NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, NodeError::BadRequest(_)), "{err}");
        // A reason no receiver could verify inside the signed notice: refused, not signed.
        let long = "x".repeat(MAX_REASON_BYTES + 1);
        let err = reject(mesh.provider(), &id.short(), &long, NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, NodeError::BadRequest(m) if m.contains("shorten --reason")),
            "{err}"
        );
        assert_eq!(mesh.states(&id).0, ContractState::Pending);
        reject(mesh.provider(), &id.short(), "not this quarter", NOW)
            .await
            .unwrap();
        let poll = ContractMessage::Status(id).to_bytes();
        let reply = answer(mesh.provider(), peer(&mesh.churn), &poll, NOW).await;
        let record = apply_reply(mesh.consumer(), &id, reply, NOW).await.unwrap();
        assert_eq!(record.state, ContractState::Rejected);
        let reason = record.rejection.unwrap().decode_trusted().unwrap().reason;
        assert_eq!(reason, "not this quarter");
    }

    #[tokio::test]
    async fn the_mesh_caps_bind_whatever_the_product_allows() {
        let mut mesh = Mesh::new(Approval::Auto);
        mesh.policies = Policies {
            version: 3,
            max_contract_days: Some(5),
            ..Policies::default()
        };
        // The product offers 90 days, the mesh allows 5: not negotiable, a signed rejection
        // names the rule and the fix.
        let (id, reply) = mesh.negotiate(&analytics(), 1).await;
        let ContractReply::Rejected(rejection) = reply else {
            panic!("{reply:?}")
        };
        let reason = rejection.decode_trusted().unwrap().reason;
        assert!(reason.contains("policies (version 3)"), "{reason}");
        assert!(reason.contains("rule `max-contract-days`"), "{reason}");
        assert!(reason.contains("--max-days 5 or fewer"), "{reason}");
        assert_eq!(
            mesh.states(&id),
            (ContractState::Rejected, ContractState::Rejected)
        );
        // Republished within the cap, a request within it is agreed.
        let mut descriptor = mesh.descriptor.clone();
        descriptor.policy.max_contract_days = 5;
        descriptor.version += 1;
        let envelope = Signed::sign(&mesh.sales, &descriptor);
        mesh.provider
            .put_descriptor(&descriptor, &envelope)
            .unwrap();
        mesh.consumer
            .put_descriptor(&descriptor, &envelope)
            .unwrap();
        mesh.descriptor = descriptor;
        let short = ShareRequest {
            days: Some(5),
            ..analytics()
        };
        let (_, reply) = mesh.negotiate(&short, 2).await;
        assert!(matches!(reply, ContractReply::Agreed(_)), "{reply:?}");
    }

    #[tokio::test]
    async fn an_amendment_after_the_request_stops_the_operator_accepting() {
        let mut mesh = Mesh::new(Approval::Manual);
        let (id, reply) = mesh.negotiate(&analytics(), 1).await;
        assert!(matches!(reply, ContractReply::Pending(..)), "{reply:?}");
        // The provider classifies `email` as pii and no longer restricts it.
        let mut descriptor = mesh.descriptor.clone();
        descriptor.policy.restricted_columns.clear();
        descriptor.stewardship.column_tags = vec![mesh_protocol::descriptor::ColumnTags {
            column: "email".into(),
            tags: vec!["pii".into()],
        }];
        let envelope = Signed::sign(&mesh.sales, &descriptor);
        mesh.provider
            .put_descriptor(&descriptor, &envelope)
            .unwrap();
        // Before the amendment the operator could accept; after it, not.
        mesh.policies = Policies {
            version: 1,
            restricted_tags: vec!["pii".into()],
            ..Policies::default()
        };
        let err = accept(mesh.provider(), &id.to_hex(), NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, NodeError::Refused(_)), "{err}");
        assert!(err.to_string().contains("restricted-tag:pii"), "{err}");
        assert_eq!(mesh.states(&id).0, ContractState::Pending);
    }

    #[tokio::test]
    async fn policy_violations_are_signed_rejections_on_both_sides() {
        let mesh = Mesh::new(Approval::Auto);
        let marketing = ShareRequest {
            purpose: "marketing".into(),
            ..analytics()
        };
        let (id, reply) = mesh.negotiate(&marketing, 1).await;
        assert!(matches!(reply, ContractReply::Rejected(_)), "{reply:?}");
        assert_eq!(
            mesh.states(&id),
            (ContractState::Rejected, ContractState::Rejected)
        );
        for store in [&mesh.provider, &mesh.consumer] {
            let record = store.agreement(&id).unwrap().unwrap();
            let reason = record.rejection.unwrap().decode_trusted().unwrap().reason;
            assert_eq!(
                reason,
                "purpose `marketing` is not allowed; allowed purposes: analytics"
            );
            assert_eq!(
                audit_kinds(store),
                [AuditKind::Request, AuditKind::Rejection]
            );
        }
        // Restricted columns pass the local check and are refused by the provider.
        let email = ShareRequest {
            columns: Some(vec!["order_id".into(), "email".into()]),
            ..analytics()
        };
        let (_, reply) = mesh.negotiate(&email, 2).await;
        let ContractReply::Rejected(rejection) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(
            rejection.decode_trusted().unwrap().reason,
            "restricted columns cannot be shared: email"
        );
    }

    #[tokio::test]
    async fn request_from_another_peer_is_refused() {
        let mesh = Mesh::new(Approval::Auto);
        let terms = mesh.terms(&analytics(), 1).unwrap();
        let envelope = Signed::sign(&mesh.churn, &ContractRequest { terms });
        let bytes = ContractMessage::Request(envelope).to_bytes();
        // Mallory forwards churn's well-signed request as her own.
        let reply = answer(mesh.provider(), peer(&mallory()), &bytes, NOW).await;
        assert_eq!(reply, ContractReply::Error(NOT_SENDER.into()));
        assert!(mesh.provider.agreement_records().unwrap().is_empty());
        assert!(mesh.provider.audit_raw().unwrap().is_empty());
        // Signed by mallory but naming churn as consumer: the signature check refuses it.
        let terms = mesh.terms(&analytics(), 2).unwrap();
        let forged = Signed::sign(&mallory(), &ContractRequest { terms });
        let bytes = ContractMessage::Request(forged).to_bytes();
        let reply = answer(mesh.provider(), peer(&mallory()), &bytes, NOW).await;
        let ContractReply::Error(message) = reply else {
            panic!("{reply:?}")
        };
        assert!(
            message.starts_with("invalid request: the request names consumer"),
            "{message}"
        );
        assert!(mesh.provider.agreement_records().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_request_of_any_size_keeps_the_audit_log_verifiable() {
        let mesh = Mesh::new(Approval::Auto);
        let mut terms = mesh.terms(&analytics(), 9).unwrap();
        // 30,000 control characters: within the terms' 32 KiB, six times that in JSON.
        terms.purpose = "\u{1}".repeat(30_000);
        let envelope = Signed::sign(&mesh.churn, &ContractRequest { terms });
        let bytes = ContractMessage::Request(envelope).to_bytes();
        let _ = answer(mesh.provider(), peer(&mesh.churn), &bytes, NOW).await;
        assert!(
            !audit_kinds(&mesh.provider).is_empty(),
            "the request is audited"
        );
        let verified = mesh.provider.audit_verify().unwrap();
        assert!(verified.is_ok(), "{verified:?}");
    }

    #[tokio::test]
    async fn replays_never_make_a_second_agreement() {
        let mesh = Mesh::new(Approval::Auto);
        let terms = mesh.terms(&analytics(), 1).unwrap();
        let (id, envelope) = store_request(mesh.consumer(), terms, NOW).await.unwrap();
        let bytes = ContractMessage::Request(envelope).to_bytes();
        let first = answer(mesh.provider(), peer(&mesh.churn), &bytes, NOW).await;
        // The same request again (a retry, or a replay): the same agreement.
        let again = answer(mesh.provider(), peer(&mesh.churn), &bytes, NOW + 5).await;
        assert_eq!(first, again);
        assert_eq!(mesh.provider.agreement_records().unwrap().len(), 1);
        assert_eq!(audit_kinds(&mesh.provider).len(), 2);
        // Other terms with the same nonce: refused.
        let other = ShareRequest {
            days: Some(8),
            ..analytics()
        };
        let terms = mesh.terms(&other, 1).unwrap();
        let envelope = Signed::sign(&mesh.churn, &ContractRequest { terms });
        let bytes = ContractMessage::Request(envelope).to_bytes();
        let reply = answer(mesh.provider(), peer(&mesh.churn), &bytes, NOW).await;
        let ContractReply::Error(message) = reply else {
            panic!("{reply:?}")
        };
        assert!(
            message.contains(&format!("reuses the nonce of contract {}", id.short())),
            "{message}"
        );
        assert_eq!(mesh.provider.agreement_records().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn mistakes_are_refused_locally() {
        let mesh = Mesh::new(Approval::Auto);
        let cases: [(ShareRequest, &str); 9] = [
            (
                ShareRequest {
                    columns: Some(vec!["order_id".into(), "ssn".into()]),
                    ..analytics()
                },
                "unknown columns: ssn; the product has: order_id, region, email, amount",
            ),
            (
                ShareRequest {
                    filter: Some("country = 'EU'".into()),
                    ..analytics()
                },
                "invalid filter: unknown column `country`",
            ),
            (
                ShareRequest {
                    filter: Some("amount > 'big'".into()),
                    ..analytics()
                },
                "invalid filter: cannot apply `>` to column `amount` of type Float64",
            ),
            (
                ShareRequest {
                    filter: Some("amount >".into()),
                    ..analytics()
                },
                "invalid --filter `amount >`",
            ),
            (
                ShareRequest {
                    columns: Some(vec![" ".into()]),
                    ..analytics()
                },
                "--columns names no column",
            ),
            (
                ShareRequest {
                    days: Some(0),
                    ..analytics()
                },
                "--days must be at least 1",
            ),
            (
                ShareRequest {
                    days: None,
                    valid_for_secs: Some(0),
                    ..analytics()
                },
                "--valid-for must be at least one second",
            ),
            (
                ShareRequest {
                    valid_for_secs: Some(60),
                    ..analytics()
                },
                "--days or with --valid-for, not both",
            ),
            (
                ShareRequest {
                    purpose: "".into(),
                    ..analytics()
                },
                "--purpose",
            ),
        ];
        for (request, expected) in cases {
            let err = mesh.terms(&request, 1).unwrap_err();
            assert!(matches!(err, NodeError::BadRequest(_)), "{err}");
            assert!(err.to_string().contains(expected), "{err} / {expected}");
        }
        // Our own product.
        let err = build_terms(
            &mesh.descriptor,
            sales().public_key(),
            "sales",
            &analytics(),
            NOW,
            [0; 16],
        )
        .unwrap_err();
        assert!(err.to_string().contains("published by this node"), "{err}");
        // Policy matters are the provider's: not refused here.
        let restricted = ShareRequest {
            columns: None,
            purpose: "marketing".into(),
            days: Some(400),
            ..analytics()
        };
        assert!(mesh.terms(&restricted, 1).is_ok());
        // The default validity respects the product's maximum.
        let default_days = ShareRequest {
            days: None,
            ..analytics()
        };
        let terms = mesh.terms(&default_days, 1).unwrap();
        assert_eq!(terms.validity_days(), u64::from(DEFAULT_DAYS));
        // A validity shorter than a day.
        let brief = ShareRequest {
            days: None,
            valid_for_secs: Some(90),
            ..analytics()
        };
        let terms = mesh.terms(&brief, 1).unwrap();
        assert_eq!(terms.valid_until_ms - terms.valid_from_ms, 90_000);
    }

    #[tokio::test]
    async fn revocation_reaches_the_other_side_once() {
        let mesh = Mesh::new(Approval::Auto);
        let (id, _) = mesh.negotiate(&analytics(), 1).await;
        let long = "x".repeat(MAX_REASON_BYTES + 1);
        let err = revoke(mesh.provider(), &id.short(), Some(&long), NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, NodeError::BadRequest(_)), "{err}");
        assert_eq!(mesh.states(&id).0, ContractState::Agreed);
        let (_, record, envelope) = revoke(mesh.provider(), &id.short(), Some("breach"), NOW)
            .await
            .unwrap();
        assert_eq!(record.state, ContractState::Revoked);
        let bytes = ContractMessage::Revoke(envelope.clone()).to_bytes();
        let reply = answer(mesh.consumer(), peer(&mesh.sales), &bytes, NOW).await;
        assert_eq!(reply, ContractReply::Revoked(envelope.clone()));
        assert_eq!(
            mesh.states(&id),
            (ContractState::Revoked, ContractState::Revoked)
        );
        for store in [&mesh.provider, &mesh.consumer] {
            assert_eq!(store.revocation(&id).unwrap(), Some(envelope.clone()));
            assert_eq!(audit_kinds(store).last(), Some(&AuditKind::Revocation));
        }
        // Delivered twice (direct and gossip): recorded once.
        let again = answer(mesh.consumer(), peer(&mesh.sales), &bytes, NOW).await;
        assert_eq!(again, ContractReply::Revoked(envelope));
        assert_eq!(audit_kinds(&mesh.consumer).len(), 3);
        // Revoking again is a conflict on either side.
        for party in [mesh.provider(), mesh.consumer()] {
            let err = revoke(party, &id.short(), None, NOW).await.unwrap_err();
            assert!(matches!(err, NodeError::Conflict(_)), "{err}");
            assert!(
                err.to_string().contains("already revoked (by sales)"),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn a_stranger_cannot_revoke() {
        let mesh = Mesh::new(Approval::Auto);
        let (id, _) = mesh.negotiate(&analytics(), 1).await;
        let forged = Signed::sign(
            &mallory(),
            &Revocation {
                agreement_id: id,
                by: mallory().public_key(),
                reason: "mine now".into(),
                at_ms: NOW,
            },
        );
        let bytes = ContractMessage::Revoke(forged).to_bytes();
        let reply = answer(mesh.consumer(), peer(&mallory()), &bytes, NOW).await;
        assert!(matches!(reply, ContractReply::Error(_)), "{reply:?}");
        assert_eq!(
            mesh.states(&id),
            (ContractState::Agreed, ContractState::Agreed)
        );
        assert_eq!(mesh.consumer.revocation(&id).unwrap(), None);
    }

    #[tokio::test]
    async fn ids_resolve_by_unique_prefix() {
        let mesh = Mesh::new(Approval::Manual);
        let (id, _) = mesh.negotiate(&analytics(), 1).await;
        let hex = id.to_hex();
        for text in [hex.as_str(), &hex[..8], &hex.to_uppercase()[..20]] {
            assert_eq!(find(&mesh.provider, text).unwrap().0, id, "{text}");
        }
        let err = find(&mesh.provider, &hex[..7]).unwrap_err();
        assert!(matches!(err, NodeError::BadRequest(_)), "{err}");
        let err = find(&mesh.provider, "zzzzzzzzzz").unwrap_err();
        assert!(matches!(err, NodeError::BadRequest(_)), "{err}");
        let err = find(&mesh.provider, "00000000").unwrap_err();
        assert!(matches!(err, NodeError::NotFound(_)), "{err}");
        let err = accept(mesh.provider(), "00000000", NOW).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "no contract with id `00000000` on this node (see `meshnode share list`)"
        );
    }

    #[tokio::test]
    async fn answers_are_verified_before_they_are_recorded() {
        let mesh = Mesh::new(Approval::Manual);
        let (id, _) = mesh.negotiate(&analytics(), 1).await;
        // A rejection signed by someone other than the provider.
        let forged = Signed::sign(
            &mallory(),
            &Rejection {
                agreement_id: id,
                provider: mallory().public_key(),
                reason: "no".into(),
                at_ms: NOW,
            },
        );
        let err = apply_reply(mesh.consumer(), &id, ContractReply::Rejected(forged), NOW)
            .await
            .unwrap_err();
        assert!(matches!(err, NodeError::Refused(_)), "{err}");
        // An agreement for other terms.
        let other = Mesh::new(Approval::Auto);
        let (other_id, reply) = other.negotiate(&analytics(), 9).await;
        assert_ne!(other_id, id);
        let err = apply_reply(mesh.consumer(), &id, reply, NOW)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("instead of"), "{err}");
        assert_eq!(
            mesh.states(&id),
            (ContractState::Pending, ContractState::Pending)
        );
    }

    #[tokio::test]
    async fn forgetting_only_drops_unanswered_requests() {
        let mesh = Mesh::new(Approval::Auto);
        let terms = mesh.terms(&analytics(), 1).unwrap();
        let (id, _) = store_request(mesh.consumer(), terms, NOW).await.unwrap();
        forget_request(mesh.consumer(), &id).await.unwrap();
        assert!(mesh.consumer.agreement(&id).unwrap().is_none());
        let (id, _) = mesh.negotiate(&analytics(), 2).await;
        forget_request(mesh.consumer(), &id).await.unwrap();
        assert!(mesh.consumer.agreement(&id).unwrap().is_some());
    }

    /// Sends a fresh request from `consumer` to the provider; returns the reply.
    async fn send_request(
        mesh: &Mesh,
        consumer: &Identity,
        request: &ShareRequest,
        nonce: [u8; 16],
    ) -> ContractReply {
        let terms = build_terms(
            &mesh.descriptor,
            consumer.public_key(),
            "someone",
            request,
            NOW,
            nonce,
        )
        .unwrap();
        let envelope = Signed::sign(consumer, &ContractRequest { terms });
        let bytes = ContractMessage::Request(envelope).to_bytes();
        answer(mesh.provider(), peer(consumer), &bytes, NOW).await
    }

    fn nonce(i: u32) -> [u8; 16] {
        let mut n = [0u8; 16];
        n[..4].copy_from_slice(&i.to_be_bytes());
        n
    }

    #[tokio::test]
    async fn a_request_flood_is_bounded_by_the_budget() {
        let mesh = Mesh::new(Approval::Manual);
        // The rate limit first: the burst is admitted, the rest refused without a trace.
        let mut busy = 0;
        for i in 0..100 {
            match send_request(&mesh, &mesh.churn, &analytics(), nonce(i)).await {
                ContractReply::Pending(_) => {}
                ContractReply::Busy(BudgetRefusal::RateLimited { .. }) => busy += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(busy, 100 - 20);
        let pending =
            mesh.provider
                .count_agreements_in(Role::Provider, ContractState::Pending, usize::MAX);
        assert_eq!(pending, 20);
        assert_eq!(mesh.provider.agreement_records().unwrap().len(), 20);
        assert_eq!(audit_kinds(&mesh.provider).len(), 20);

        // With no rate limit to speak of, the open-request bound holds.
        let mut mesh = Mesh::new(Approval::Manual);
        mesh.provider_budget = std::sync::Mutex::new(RequestBudget::new(BudgetConfig {
            burst: 10_000,
            max_open_total: 40,
            ..Default::default()
        }));
        let mut last = None;
        for i in 0..100 {
            last = Some(send_request(&mesh, &mesh.churn, &analytics(), nonce(i)).await);
        }
        assert_eq!(
            last,
            Some(ContractReply::Busy(BudgetRefusal::TooManyOpen {
                open: 32,
                max: 32
            }))
        );
        assert_eq!(
            mesh.provider.count_agreements_of(
                &mesh.churn.public_key(),
                Role::Provider,
                ContractState::Pending,
                usize::MAX
            ),
            32
        );
        // Another consumer is still heard, up to the total bound.
        let other = Identity::from_secret_bytes([42; 32]);
        let mut answered = 0;
        for i in 0..20 {
            match send_request(&mesh, &other, &analytics(), nonce(i)).await {
                ContractReply::Pending(_) => answered += 1,
                ContractReply::Busy(BudgetRefusal::ProviderFull { open: 40, max: 40 }) => {}
                reply => panic!("{reply:?}"),
            }
        }
        assert_eq!(answered, 8);
        assert_eq!(
            mesh.provider
                .count_agreements_in(Role::Provider, ContractState::Pending, usize::MAX),
            40
        );
    }

    #[tokio::test]
    async fn rejected_requests_past_the_retention_go_and_are_evaluated_anew_if_sent_again() {
        let mut mesh = Mesh::new(Approval::Auto);
        mesh.provider =
            mesh.provider
                .with_closed_retention(mesh_protocol::retention::ClosedRetention {
                    per_consumer: 2,
                    total: 100,
                });
        let marketing = ShareRequest {
            purpose: "marketing".into(),
            ..analytics()
        };
        let requests: Vec<Vec<u8>> = (0..5)
            .map(|i| {
                let terms = build_terms(
                    &mesh.descriptor,
                    mesh.churn.public_key(),
                    "churn",
                    &marketing,
                    NOW,
                    nonce(i),
                )
                .unwrap();
                ContractMessage::Request(Signed::sign(&mesh.churn, &ContractRequest { terms }))
                    .to_bytes()
            })
            .collect();
        let sender = peer(&mesh.churn);
        for (i, bytes) in requests.iter().enumerate() {
            let reply = answer(mesh.provider(), sender, bytes, NOW + i as u64).await;
            assert!(matches!(reply, ContractReply::Rejected(_)), "{reply:?}");
        }
        assert_eq!(mesh.provider.agreement_records().unwrap().len(), 2);
        let rejections = |store: &Store| {
            audit_kinds(store)
                .into_iter()
                .filter(|k| *k == AuditKind::Rejection)
                .count()
        };
        assert_eq!(rejections(&mesh.provider), 5);
        // A request still held is answered from its record: nothing new is decided.
        let kept = answer(mesh.provider(), sender, &requests[4], NOW + 10).await;
        assert!(matches!(kept, ContractReply::Rejected(_)), "{kept:?}");
        assert_eq!(rejections(&mesh.provider), 5);
        // One whose record is gone is a new request of the same consumer: evaluated by the
        // policy again (and rejected again), audited, and it takes the place of the oldest.
        let again = answer(mesh.provider(), sender, &requests[0], NOW + 11).await;
        assert!(matches!(again, ContractReply::Rejected(_)), "{again:?}");
        assert_eq!(rejections(&mesh.provider), 6);
        let records = mesh.provider.agreement_records().unwrap();
        assert_eq!(records.len(), 2);
        let ids: Vec<_> = records.iter().map(|(id, _)| *id).collect();
        let first = ContractMessage::from_bytes(&requests[0]).unwrap();
        let ContractMessage::Request(first) = first else {
            panic!("a request")
        };
        assert!(ids.contains(&first.verify().unwrap().terms.id()));
    }

    #[tokio::test]
    async fn undecided_requests_expire_with_a_signed_rejection() {
        let mesh = Mesh::new(Approval::Manual);
        let (id, _) = mesh.negotiate(&analytics(), 1).await;
        let ttl = mesh.provider_budget.lock().unwrap().config().pending_ttl_ms;
        assert_eq!(expire_pending(mesh.provider(), NOW + ttl - 1).unwrap(), 0);
        assert_eq!(expire_pending(mesh.provider(), NOW + ttl).unwrap(), 1);
        let record = mesh.provider.agreement(&id).unwrap().unwrap();
        assert_eq!(record.state, ContractState::Rejected);
        assert_eq!(
            mesh.provider
                .count_agreements_in(Role::Provider, ContractState::Pending, usize::MAX),
            0
        );
        // The consumer's next poll learns it, signature checked.
        let poll = ContractMessage::StatusBatch(vec![id]).to_bytes();
        let ContractReply::Statuses(entries) =
            answer(mesh.provider(), peer(&mesh.churn), &poll, NOW + ttl).await
        else {
            panic!("not a batch answer")
        };
        let reply = entries.into_iter().next().unwrap().into_reply();
        let record = apply_reply(mesh.consumer(), &id, reply, NOW + ttl)
            .await
            .unwrap();
        assert_eq!(record.state, ContractState::Rejected);
        let reason = record.rejection.unwrap().decode_trusted().unwrap().reason;
        assert!(reason.starts_with("no decision within 7 days"), "{reason}");
    }

    #[tokio::test]
    async fn status_batches_answer_in_order_for_parties_only() {
        let mesh = Mesh::new(Approval::Manual);
        let (a, _) = mesh.negotiate(&analytics(), 1).await;
        let (b, _) = mesh.negotiate(&analytics(), 2).await;
        accept(mesh.provider(), &b.short(), NOW).await.unwrap();
        let unknown = AgreementId([9; 32]);
        let poll = ContractMessage::StatusBatch(vec![a, unknown, b]).to_bytes();
        let reply = answer(mesh.provider(), peer(&mesh.churn), &poll, NOW).await;
        let ContractReply::Statuses(entries) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0], StatusEntry::Pending(a));
        assert_eq!(entries[1], StatusEntry::Unknown(unknown));
        assert!(matches!(&entries[2], StatusEntry::Agreed(x) if x.id() == b));
        // A stranger learns nothing.
        let reply = answer(mesh.provider(), peer(&mallory()), &poll, NOW).await;
        assert_eq!(
            reply,
            ContractReply::Statuses(vec![
                StatusEntry::Unknown(a),
                StatusEntry::Unknown(unknown),
                StatusEntry::Unknown(b)
            ])
        );
        // Oversized batches are refused whole.
        let poll = ContractMessage::StatusBatch(vec![a; MAX_STATUS_BATCH + 1]).to_bytes();
        let reply = answer(mesh.provider(), peer(&mesh.churn), &poll, NOW).await;
        assert!(matches!(reply, ContractReply::Error(_)), "{reply:?}");
    }

    #[tokio::test]
    async fn decision_notices_apply_only_to_our_undecided_requests_to_the_sender() {
        let mesh = Mesh::new(Approval::Manual);
        let (a, _) = mesh.negotiate(&analytics(), 1).await;
        let (b, _) = mesh.negotiate(&analytics(), 2).await;
        let (_, agreed) = accept(mesh.provider(), &a.short(), NOW).await.unwrap();
        let (_, rejected) = reject(mesh.provider(), &b.short(), "not this quarter", NOW)
            .await
            .unwrap();
        let agreement = Decision::Agreed(agreed.agreement.clone().unwrap());
        let rejection = Decision::Rejected(rejected.rejection.clone().unwrap());
        let ignored = |result: Result<(AgreementId, AgreementRecord), NoticeRefused>| match result {
            Err(NoticeRefused::Ignored(_, reason)) => reason,
            other => panic!("not ignored: {other:?}"),
        };

        // From someone else than the provider: ignored, nothing changes.
        let notice = apply_notice(mesh.consumer(), peer(&mallory()), agreement.clone(), NOW);
        assert_eq!(ignored(notice.await), IgnoredNotice::NotFromProvider);
        // Sent to the provider itself (it did not request the contract): ignored.
        let notice = apply_notice(mesh.provider(), peer(&mesh.churn), agreement.clone(), NOW);
        assert_eq!(ignored(notice.await), IgnoredNotice::NotOurRequest);
        assert_eq!(
            mesh.states(&a),
            (ContractState::Agreed, ContractState::Pending)
        );
        // A forged agreement from the provider: verified like a status reply, refused.
        let forged = Agreement::from_parts_unchecked(
            agreed.request.clone(),
            mesh.sales.public_key(),
            mallory().sign(
                mesh_protocol::contract::AGREEMENT_CONTEXT,
                agreed.request.body(),
            ),
        );
        let notice = apply_notice(
            mesh.consumer(),
            peer(&mesh.sales),
            Decision::Agreed(forged),
            NOW,
        );
        assert!(
            matches!(notice.await, Err(NoticeRefused::Invalid(_))),
            "a forged agreement is applied"
        );
        assert_eq!(mesh.states(&a).1, ContractState::Pending);

        // The real decisions from the provider: applied, signatures checked, audited.
        let (id, record) = apply_notice(mesh.consumer(), peer(&mesh.sales), agreement.clone(), NOW)
            .await
            .unwrap();
        assert_eq!((id, record.state), (a, ContractState::Agreed));
        assert_eq!(record.agreement, agreed.agreement);
        let (id, record) = apply_notice(mesh.consumer(), peer(&mesh.sales), rejection, NOW)
            .await
            .unwrap();
        assert_eq!((id, record.state), (b, ContractState::Rejected));
        assert_eq!(
            record.rejection.unwrap().decode_trusted().unwrap().reason,
            "not this quarter"
        );
        // Again (a repeat or a replay): ignored.
        let notice = apply_notice(mesh.consumer(), peer(&mesh.sales), agreement, NOW);
        assert_eq!(
            ignored(notice.await),
            IgnoredNotice::AlreadySettled(ContractState::Agreed)
        );
        // About a contract the consumer never held: ignored, nothing stored.
        let stranger = Identity::from_secret_bytes([44; 32]);
        let terms = build_terms(
            &mesh.descriptor,
            stranger.public_key(),
            "stranger",
            &analytics(),
            NOW,
            [9; 16],
        )
        .unwrap();
        let request = Signed::sign(&stranger, &ContractRequest { terms });
        let unknown = Agreement::countersign(&mesh.sales, request).unwrap();
        let notice = apply_notice(
            mesh.consumer(),
            peer(&mesh.sales),
            Decision::Agreed(unknown.clone()),
            NOW,
        );
        assert_eq!(ignored(notice.await), IgnoredNotice::Unknown);
        assert!(mesh.consumer.agreement(&unknown.id()).unwrap().is_none());
        // Through the message path, an ignored notice is answered `Unknown`.
        let bytes = ContractMessage::Decided(Decision::Agreed(unknown.clone())).to_bytes();
        let reply = answer(mesh.consumer(), peer(&mesh.sales), &bytes, NOW).await;
        assert_eq!(reply, ContractReply::Unknown(unknown.id()));
    }

    #[test]
    fn a_peer_id_gives_back_its_domain_key() {
        let key = mesh_protocol::Identity::from_secret_bytes([5; 32]).public_key();
        assert_eq!(key_of(&peer_id_of(&key).unwrap()), Some(key));
        assert_eq!(key_of(&PeerId::random()), None);
    }

    #[tokio::test]
    async fn a_consumer_can_withdraw_a_pending_request() {
        let mesh = Mesh::new(Approval::Manual);
        let (id, _) = mesh.negotiate(&analytics(), 1).await;
        let (_, record, envelope) = revoke(mesh.consumer(), &id.short(), None, NOW)
            .await
            .unwrap();
        assert_eq!(record.state, ContractState::Revoked);
        let bytes = ContractMessage::Revoke(envelope).to_bytes();
        let reply = answer(mesh.provider(), peer(&mesh.churn), &bytes, NOW).await;
        assert!(matches!(reply, ContractReply::Revoked(_)), "{reply:?}");
        assert_eq!(
            mesh.states(&id),
            (ContractState::Revoked, ContractState::Revoked)
        );
        assert_eq!(
            mesh.provider.count_agreements_of(
                &mesh.churn.public_key(),
                Role::Provider,
                ContractState::Pending,
                usize::MAX
            ),
            0
        );
    }

    #[tokio::test]
    async fn columns_are_pinned_unless_star_is_asked_for() {
        let mesh = Mesh::new(Approval::Manual);
        // No --columns: the shareable columns of the version seen, listed.
        let all = ShareRequest {
            columns: None,
            ..analytics()
        };
        let terms = mesh.terms(&all, 1).unwrap();
        assert_eq!(
            terms.columns,
            Columns::Listed(vec!["order_id".into(), "region".into(), "amount".into()])
        );
        // `*` or the flag: all current and future non-restricted columns.
        for request in [
            ShareRequest {
                columns: Some(vec!["*".into()]),
                ..analytics()
            },
            ShareRequest {
                columns: None,
                all_columns_including_future: true,
                ..analytics()
            },
        ] {
            let terms = mesh.terms(&request, 1).unwrap();
            assert_eq!(terms.columns, Columns::AllCurrentAndFuture);
        }
        let mixed = ShareRequest {
            columns: Some(vec!["*".into(), "region".into()]),
            ..analytics()
        };
        let err = mesh.terms(&mixed, 1).unwrap_err();
        assert!(err.to_string().contains("cannot be combined"), "{err}");
        // The provider agrees to `*` without the restricted column.
        let star = ShareRequest {
            columns: Some(vec!["*".into()]),
            ..analytics()
        };
        let (id, reply) = mesh.negotiate(&star, 3).await;
        assert_eq!(reply, ContractReply::Pending(id));
    }

    #[tokio::test]
    async fn the_index_follows_every_write() {
        let mesh = Mesh::new(Approval::Manual);
        let (a, _) = mesh.negotiate(&analytics(), 1).await;
        let (b, _) = mesh.negotiate(&analytics(), 2).await;
        let count = |role, state| mesh.provider.count_agreements_in(role, state, usize::MAX);
        assert_eq!(count(Role::Provider, ContractState::Pending), 2);
        // Readers that keep what they read of the index see every write as a new generation.
        let before = mesh.provider.agreement_generation();
        accept(mesh.provider(), &a.short(), NOW).await.unwrap();
        let accepted = mesh.provider.agreement_generation();
        assert!(accepted > before);
        reject(mesh.provider(), &b.short(), "no", NOW)
            .await
            .unwrap();
        assert!(mesh.provider.agreement_generation() > accepted);
        let settled = mesh.provider.agreement_generation();
        let _ = mesh
            .provider
            .agreement_ids_in(Role::Provider, ContractState::Agreed, 10);
        assert_eq!(
            mesh.provider.agreement_generation(),
            settled,
            "reads are no writes"
        );
        assert_eq!(count(Role::Provider, ContractState::Pending), 0);
        assert_eq!(count(Role::Provider, ContractState::Agreed), 1);
        assert_eq!(count(Role::Provider, ContractState::Rejected), 1);
        assert_eq!(
            mesh.provider
                .agreement_ids_in(Role::Provider, ContractState::Agreed, 10)
                .unwrap(),
            [a]
        );
        let terms = mesh
            .provider
            .agreement(&a)
            .unwrap()
            .unwrap()
            .terms()
            .unwrap();
        assert_eq!(
            mesh.provider
                .agreement_with_nonce(&terms.consumer, &terms.nonce)
                .unwrap(),
            Some(a)
        );
        mesh.provider.remove_agreement(&a).unwrap();
        assert_eq!(count(Role::Provider, ContractState::Agreed), 0);
        assert_eq!(
            mesh.provider
                .agreement_with_nonce(&terms.consumer, &terms.nonce)
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn gossiped_revocations_of_unknown_agreements_are_ignored() {
        let mesh = Mesh::new(Approval::Auto);
        let stranger = Identity::from_secret_bytes([77; 32]);
        // Well signed, about an agreement nobody here holds: not stored, not forwarded.
        for n in 0..100u8 {
            let made_up = Signed::sign(
                &stranger,
                &Revocation {
                    agreement_id: AgreementId([n; 32]),
                    by: stranger.public_key(),
                    reason: "noise".into(),
                    at_ms: NOW,
                },
            );
            assert_eq!(
                revocation_from_gossip(&mesh.provider, &made_up, NOW),
                Ok(false)
            );
        }
        assert!(mesh.provider.revocations().is_empty());
        // One of ours, by a stranger: rejected. By the other party: applied once.
        let (id, _) = mesh.negotiate(&analytics(), 1).await;
        // A signature that does not verify: refused as a forgery when it is about one of
        // ours; about an agreement nobody here holds, dropped before any check.
        let revocation = |agreement_id| Revocation {
            agreement_id,
            by: mesh.churn.public_key(),
            reason: "forged".into(),
            at_ms: NOW,
        };
        let forge = |agreement_id| {
            Signed::sign(&stranger, &revocation(agreement_id))
                .with_claimed_signer(mesh.churn.public_key())
        };
        assert_eq!(
            revocation_from_gossip(&mesh.provider, &forge(id), NOW),
            Err(mesh_protocol::RejectReason::BadSignature)
        );
        assert_eq!(
            revocation_from_gossip(&mesh.provider, &forge(AgreementId([200; 32])), NOW),
            Ok(false)
        );
        let forged = Signed::sign(
            &stranger,
            &Revocation {
                agreement_id: id,
                by: stranger.public_key(),
                reason: "mine".into(),
                at_ms: NOW,
            },
        );
        assert_eq!(
            revocation_from_gossip(&mesh.provider, &forged, NOW),
            Err(mesh_protocol::RejectReason::NotOwner)
        );
        let real = Signed::sign(
            &mesh.churn,
            &Revocation {
                agreement_id: id,
                by: mesh.churn.public_key(),
                reason: "done".into(),
                at_ms: NOW,
            },
        );
        assert_eq!(revocation_from_gossip(&mesh.provider, &real, NOW), Ok(true));
        assert_eq!(
            revocation_from_gossip(&mesh.provider, &real, NOW),
            Ok(false)
        );
        assert_eq!(mesh.provider.revocations().len(), 1);
    }

    /// Measures the cost of answering a request with many stored records (run with
    /// `cargo test -p mesh-node --lib request_cost -- --ignored --nocapture`).
    #[tokio::test]
    #[ignore = "a measurement, not a check"]
    async fn request_cost_does_not_grow_with_the_record_count() {
        // Agreed records (auto approval): what a busy provider accumulates.
        let mut mesh = Mesh::new(Approval::Auto);
        mesh.provider_budget = std::sync::Mutex::new(RequestBudget::new(BudgetConfig {
            burst: 1_000_000,
            max_live_per_consumer: u32::MAX,
            ..Default::default()
        }));
        let mut at = 0u32;
        for total in [1_000u32, 10_000] {
            while at < total {
                let consumer = Identity::from_secret_bytes([(at % 200) as u8 + 50; 32]);
                send_request(&mesh, &consumer, &analytics(), nonce(at)).await;
                at += 1;
            }
            let started = std::time::Instant::now();
            for i in 0..200 {
                send_request(
                    &mesh,
                    &mesh.churn,
                    &analytics(),
                    nonce(1_000_000 + total + i),
                )
                .await;
            }
            println!(
                "{total} records: {:.2} ms per request",
                started.elapsed().as_secs_f64() * 1000.0 / 200.0
            );
        }
    }

    #[tokio::test]
    async fn a_full_queue_does_not_block_automatic_approval() {
        let mut mesh = Mesh::new(Approval::Auto);
        mesh.provider_budget = std::sync::Mutex::new(RequestBudget::new(BudgetConfig {
            max_open_total: 1,
            ..Default::default()
        }));
        // Someone else's request fills the queue.
        let stranger = Identity::from_secret_bytes([43; 32]);
        let terms = build_terms(
            &mesh.descriptor,
            stranger.public_key(),
            "stranger",
            &analytics(),
            NOW,
            [1; 16],
        )
        .unwrap();
        let record = AgreementRecord {
            role: Role::Provider,
            request: Signed::sign(
                &stranger,
                &ContractRequest {
                    terms: terms.clone(),
                },
            ),
            agreement: None,
            rejection: None,
            revocation: None,
            state: ContractState::Pending,
            updated_ms: NOW,
        };
        mesh.provider.put_agreement(&terms.id(), &record).unwrap();
        let (_, reply) = mesh.negotiate(&analytics(), 1).await;
        assert!(matches!(reply, ContractReply::Agreed(_)), "{reply:?}");
    }

    #[tokio::test]
    async fn automatic_approval_is_bounded_by_the_live_agreements_per_consumer() {
        let mut mesh = Mesh::new(Approval::Auto);
        mesh.provider_budget = std::sync::Mutex::new(RequestBudget::new(BudgetConfig {
            burst: 10_000,
            max_live_per_consumer: 3,
            ..Default::default()
        }));
        let live = |mesh: &Mesh, consumer: &Identity| {
            mesh.provider.count_agreements_of(
                &consumer.public_key(),
                Role::Provider,
                ContractState::Agreed,
                usize::MAX,
            )
        };
        let mut agreed = Vec::new();
        for i in 0..3 {
            match send_request(&mesh, &mesh.churn, &analytics(), nonce(i)).await {
                ContractReply::Agreed(a) => agreed.push(a.id()),
                other => panic!("{other:?}"),
            }
        }
        let reply = send_request(&mesh, &mesh.churn, &analytics(), nonce(3)).await;
        let ContractReply::Busy(refusal) = reply else {
            panic!("{reply:?}");
        };
        assert_eq!(refusal, BudgetRefusal::TooManyLive { live: 3, max: 3 });
        assert!(
            refusal.to_string().contains("let one expire or revoke one"),
            "{refusal}"
        );
        // The earlier agreements stand; the refused request left no trace.
        assert_eq!(live(&mesh, &mesh.churn), 3);
        for id in &agreed {
            let record = mesh.provider.agreement(id).unwrap().unwrap();
            assert_eq!(record.state, ContractState::Agreed);
        }
        assert_eq!(mesh.provider.agreement_records().unwrap().len(), 3);
        assert_eq!(audit_kinds(&mesh.provider).len(), 3 * 2);
        // Another consumer is not affected.
        let other = Identity::from_secret_bytes([42; 32]);
        let reply = send_request(&mesh, &other, &analytics(), nonce(0)).await;
        assert!(matches!(reply, ContractReply::Agreed(_)), "{reply:?}");
        // A revoked agreement no longer counts: the consumer gets a new one.
        revoke(mesh.provider(), &agreed[0].to_hex(), None, NOW)
            .await
            .unwrap();
        assert_eq!(live(&mesh, &mesh.churn), 2);
        let reply = send_request(&mesh, &mesh.churn, &analytics(), nonce(4)).await;
        assert!(matches!(reply, ContractReply::Agreed(_)), "{reply:?}");
        assert_eq!(live(&mesh, &mesh.churn), 3);
    }
}
