//! Contract negotiation over `/meshnode/contract/1` and revocations from gossip: the actor
//! side, which only wires messages, the store and the pure rules together.
//!
//! Contracts follow one layout, which other features with commands, peer messages and rules
//! (governance) follow too:
//!
//! - HTTP routes: `crate::api::contracts` (thin: parse, call the handle, JSON);
//! - typed requests to the actor: the contract methods of [`crate::NodeHandle`] in
//!   [`handle`], one [`ContractCommand`] each;
//! - actor handlers: this module (`impl Node`): messages in flight, poll schedules, sending;
//! - decisions on top of the store: [`crate::negotiation`] (what a party answers and records);
//! - pure rules: `mesh_protocol::contract` (terms, signatures, state machine, policy),
//!   `mesh_protocol::budget` (request budgets) and `mesh_protocol::contract_sync` (what to
//!   follow up when, which pushed decisions to apply).
//!
//! What moves:
//!
//! - `share request` stores the signed request as `requested`, sends it to the provider and
//!   answers the user once the provider answered (agreed, pending or rejected). A provider
//!   that cannot be dialled leaves nothing behind; a request whose answer was lost stays
//!   `requested` and is sent again (requests are idempotent: same terms, same id).
//! - When its operator accepts or rejects a pending request, the provider pushes the signed
//!   decision to the consumer (`ContractMessage::Decided`) if it is connected to it; the
//!   consumer applies it only to an undecided request of its own to that provider, verified
//!   like a status reply, and counts what it ignores.
//! - Polling is the fallback (a lost notice, a consumer offline at the time): every
//!   `contracts.status_poll_secs` (2 s by default) the consumer sends one `StatusBatch` per
//!   provider carrying the ids of its due pending records (at most [`MAX_STATUS_BATCH`], one
//!   batch in flight per provider, with backoff when the provider does not answer). Batching
//!   keeps the provider from dialling consumers and works the same for a consumer that was
//!   offline when the decision was made.
//! - A provider admits a request only within the consumer's budget
//!   ([`mesh_protocol::budget`]); over it, the consumer gets `Busy` and nothing is stored.
//!   Undecided requests expire after the budget's time to live (a signed rejection).
//! - Revocations go directly to the other party and on gossip. Agreed contracts are also
//!   re-checked with a connected counterparty every 30 s, so a party that was offline when
//!   the other revoked catches up. A revocation of an agreement this node is not a party to
//!   is ignored (neither stored nor forwarded): only the parties act on it, and they get it
//!   directly or by that re-check.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::request_response::{self, OutboundFailure, OutboundRequestId};
use libp2p::{Multiaddr, PeerId};
use mesh_protocol::budget::{BudgetConfig, BudgetRefusal, RateTable, RequestBudget};
use mesh_protocol::contract::{Decision, MAX_STATUS_BATCH, Revocation};
use mesh_protocol::contract_sync::{self, FirstAnswer, FollowUp, PollIntervals, Side};
use mesh_protocol::wire::GossipMessage;
use mesh_protocol::{
    AgreementId, ContractMessage, ContractReply, ContractState, ProductDescriptor, ProductId,
    PublicKey, RejectReason, Signed,
};
use tokio::sync::oneshot;

use crate::agreements::{AgreementRecord, ListFilter, Role};
use crate::error::NodeError;
use crate::negotiation::{self, NoticeRefused, Party, counterparty, peer_id_of};
use crate::node::{Node, now_ms};
use crate::odcs::{self, DataContract};
use crate::store::Store;
use crate::views::{AgreementView, MAX_SHARE_PAGE_BYTES, SharePage, ShareQuery, ShareRequest};

mod handle;

pub(crate) use handle::ContractCommand;

/// How often the index of live contracts is read for due polls.
const SCAN_INTERVAL: Duration = Duration::from_millis(500);
/// How often undecided requests are checked for expiry (also once at start).
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Most live contracts of one kind looked at per scan.
const SCAN_LIMIT: usize = 100_000;

/// What an outbound contract message is waiting for.
#[derive(Debug)]
enum Outbound {
    /// A user's `share request`, answered once the provider answers.
    Request {
        /// The contract.
        id: AgreementId,
        /// Provider domain, for messages.
        provider: String,
        /// The user's reply.
        reply: oneshot::Sender<Result<AgreementView, NodeError>>,
    },
    /// A background status poll (or re-sent request).
    Poll {
        /// The contract.
        id: AgreementId,
    },
    /// A background status poll of several contracts with one counterparty.
    PollBatch {
        /// The counterparty asked.
        key: PublicKey,
        /// The contracts, in the order asked.
        ids: Vec<AgreementId>,
    },
    /// A revocation sent directly to the other party.
    Revoke {
        /// The contract.
        id: AgreementId,
    },
    /// A decision pushed to the consumer (its answer is only logged: its poll is the
    /// fallback).
    Notice {
        /// The contract.
        id: AgreementId,
    },
}

/// When to poll one contract next.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    /// Earliest next poll.
    next: Instant,
    /// Delay after the next failure (doubles up to the intervals' `max_backoff`).
    backoff: Duration,
    /// Until when the contract is valid (Unix ms): from then on its record is read again at
    /// every scan, to record its expiry. 0: read it at the next scan.
    until_ms: u64,
    /// The counterparty, and whether a poll may dial it: a poll that may not waits, without
    /// its record being read, until the counterparty is connected.
    peer: Option<PeerId>,
    dial: bool,
}

impl Schedule {
    /// Whether a scan can pass this contract over without reading its record: nothing is
    /// due, whatever the record says (the live index only holds contracts whose state
    /// changes by a write, which starts a new scan of a new index, or by time).
    fn idle(&self, now: Instant, wall_ms: u64, connected: impl Fn(&PeerId) -> bool) -> bool {
        wall_ms < self.until_ms
            && (now < self.next
                || (!self.dial && self.peer.as_ref().is_some_and(|p| !connected(p))))
    }
}

/// The actor's negotiation state: messages in flight, poll schedules and request budgets.
/// Everything durable is in the store; this is rebuilt from it after a restart.
#[derive(Debug)]
pub(crate) struct Negotiations {
    /// Outbound messages by libp2p request id.
    outbound: HashMap<OutboundRequestId, Outbound>,
    /// Contracts with a message in flight (at most one each).
    in_flight: HashSet<AgreementId>,
    /// Counterparties with a status batch in flight (at most one each).
    batch_in_flight: HashSet<PublicKey>,
    /// Poll schedule of contracts that need polling.
    schedule: HashMap<AgreementId, Schedule>,
    /// Last scan of the store for due polls.
    last_scan: Option<Instant>,
    /// The live contracts that scan found, and the store's agreement generation read
    /// before it: while no agreement is written, the next scans reuse them.
    scanned: Option<(u64, Arc<Vec<AgreementId>>)>,
    /// The earliest poll in `schedule` when the last scan ended. Polls only move later
    /// between scans, so the housekeeping is not needed for polls before this.
    next_poll: Option<Instant>,
    /// Last expiry sweep of undecided requests (and check of the audit's length); `None`
    /// until the first, at start.
    last_sweep: Option<Instant>,
    /// Set while an archive the node started on its own runs.
    archiving: Arc<std::sync::atomic::AtomicBool>,
    /// Per-consumer budgets of requests received (a mutex only so that `Party` stays a
    /// shared borrow; the actor is its only user).
    budget: std::sync::Mutex<RequestBudget>,
    /// Per-peer budget of contract messages of any kind, taken before one is decoded.
    messages: RateTable<PeerId>,
    /// Tolerated clock difference with other parties, ms.
    skew_ms: u64,
    /// How often contracts are followed up (`contracts.status_poll_secs` for undecided ones).
    intervals: PollIntervals,
}

impl Negotiations {
    /// Empty state with the node's limits.
    pub(crate) fn new(budget: BudgetConfig, skew_ms: u64, intervals: PollIntervals) -> Self {
        Self {
            outbound: HashMap::new(),
            in_flight: HashSet::new(),
            batch_in_flight: HashSet::new(),
            schedule: HashMap::new(),
            last_scan: None,
            scanned: None,
            next_poll: None,
            last_sweep: None,
            archiving: Default::default(),
            budget: std::sync::Mutex::new(RequestBudget::new(budget)),
            messages: budget.message_table(),
            skew_ms,
            intervals,
        }
    }

    /// When the contract follow-ups next need the housekeeping, given the store's agreement
    /// generation: at once while an agreement written since the last scan (or no scan yet)
    /// is to be read, else at the earliest scheduled poll; `None` with nothing scheduled.
    /// Constant time: the actor asks after every event.
    pub(crate) fn next_due(&self, generation: u64, now: Instant) -> Option<Instant> {
        match &self.scanned {
            Some((seen, _)) if *seen == generation => self.next_poll,
            _ => Some(now),
        }
    }
}

impl Default for Negotiations {
    fn default() -> Self {
        Self::new(
            BudgetConfig::default(),
            crate::config::DEFAULT_CLOCK_SKEW_SECS * 1000,
            PollIntervals::default(),
        )
    }
}

impl Node {
    fn party(&self) -> Party<'_> {
        Party {
            store: &self.store,
            identity: &self.identity,
            budget: &self.negotiations.budget,
            skew_ms: self.negotiations.skew_ms,
            policies: self.governance.state.policies(),
        }
    }

    /// The view of a stored record, with granted columns from the catalog when known.
    fn agreement_view(
        &self,
        id: &AgreementId,
        record: &AgreementRecord,
    ) -> Result<AgreementView, NodeError> {
        view_of(&self.store, &mut HashMap::new(), id, record, now_ms())
    }

    /// Sends a contract message to the holder of `key`, dialling it with the addresses of
    /// its signed node record when not connected.
    fn send_contract(
        &mut self,
        key: &PublicKey,
        message: &ContractMessage,
    ) -> Option<OutboundRequestId> {
        let peer = peer_id_of(key)?;
        let addrs: Vec<Multiaddr> = self
            .store
            .node_record(key)
            .ok()
            .flatten()
            .and_then(|(_, envelope)| envelope.decode_trusted().ok())
            .map(|record| record.addrs.iter().filter_map(|a| a.parse().ok()).collect())
            .unwrap_or_default();
        self.mark_used(peer);
        Some(
            self.swarm
                .behaviour_mut()
                .contract
                .send_request_with_addresses(&peer, message.to_bytes(), addrs),
        )
    }

    /// Handles contract protocol events.
    pub(crate) async fn on_contract_event(
        &mut self,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
    ) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let reply = match self.negotiations.messages.take(&peer, now_ms()) {
                        // Over the peer's message budget: not even decoded.
                        Err(retry_after_ms) => {
                            ContractReply::Busy(BudgetRefusal::RateLimited { retry_after_ms })
                        }
                        Ok(()) => self.answer_contract_message(peer, &request).await,
                    };
                    if let ContractReply::Busy(refusal) = &reply {
                        self.metrics.contract_refused(refusal);
                    }
                    if self
                        .swarm
                        .behaviour_mut()
                        .contract
                        .send_response(channel, reply.to_bytes())
                        .is_err()
                    {
                        tracing::debug!(%peer, "contract answer not delivered: the stream closed");
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    let reply = ContractReply::from_bytes(&response)
                        .unwrap_or_else(|e| ContractReply::Error(format!("malformed answer: {e}")));
                    self.on_contract_reply(request_id, reply).await;
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => self.on_contract_failure(peer, request_id, error).await,
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, "inbound contract message failed: {error}");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Decodes a peer's contract message and answers it.
    async fn answer_contract_message(&mut self, peer: PeerId, request: &[u8]) -> ContractReply {
        match ContractMessage::from_bytes(request) {
            Ok(ContractMessage::Decided(decision)) => self.on_decision_notice(peer, decision).await,
            Ok(message) => negotiation::answer_message(self.party(), peer, message, now_ms()).await,
            Err(e) => ContractReply::Error(format!("malformed contract message: {e}")),
        }
    }

    pub(crate) async fn on_contract_reply(
        &mut self,
        request_id: OutboundRequestId,
        reply: ContractReply,
    ) {
        let Some(outbound) = self.negotiations.outbound.remove(&request_id) else {
            return;
        };
        match outbound {
            Outbound::Request {
                id,
                provider,
                reply: user,
            } => {
                self.negotiations.in_flight.remove(&id);
                let result = self.finish_request(&id, &provider, reply).await;
                let _ = user.send(result);
            }
            Outbound::Poll { id } => {
                self.negotiations.in_flight.remove(&id);
                match negotiation::apply_reply(self.party(), &id, reply, now_ms()).await {
                    Ok(_) => self.poll_succeeded(&id),
                    Err(e) => {
                        tracing::warn!(id = %id.short(), "contract poll: {e}");
                        self.poll_failed(&id);
                    }
                }
            }
            Outbound::PollBatch { key, ids } => {
                self.negotiations.batch_in_flight.remove(&key);
                for id in &ids {
                    self.negotiations.in_flight.remove(id);
                }
                let answers = match contract_sync::pair_statuses(&ids, reply) {
                    Ok(answers) => answers,
                    Err(e) => {
                        tracing::warn!("contract status batch not used: {e}");
                        for id in &ids {
                            self.poll_failed(id);
                        }
                        return;
                    }
                };
                // The ones left out are asked again at their next poll.
                for (id, reply) in answers {
                    match negotiation::apply_reply(self.party(), &id, reply, now_ms()).await {
                        Ok(_) => self.poll_succeeded(&id),
                        Err(e) => {
                            tracing::warn!(id = %id.short(), "contract poll: {e}");
                            self.poll_failed(&id);
                        }
                    }
                }
            }
            Outbound::Revoke { id } => match reply {
                ContractReply::Revoked(_) => {
                    tracing::debug!(id = %id.short(), "revocation acknowledged")
                }
                other => tracing::info!(id = %id.short(), ?other, "revocation answered"),
            },
            Outbound::Notice { id } => {
                tracing::debug!(id = %id.short(), ?reply, "decision notice answered");
            }
        }
    }

    /// Records the provider's first answer to a user's request.
    async fn finish_request(
        &mut self,
        id: &AgreementId,
        provider: &str,
        reply: ContractReply,
    ) -> Result<AgreementView, NodeError> {
        let reply = match contract_sync::first_answer(reply) {
            FirstAnswer::Record(reply) => reply,
            FirstAnswer::Busy(refusal) => {
                negotiation::forget_request(self.party(), id).await?;
                let message = match refusal {
                    BudgetRefusal::TooManyOpen { open, max } => format!(
                        "too many open requests to {provider}: {open} pending (at most {max}); wait for answers or withdraw some with `meshnode share revoke ID` (nothing was stored)"
                    ),
                    BudgetRefusal::TooManyLive { live, max } => format!(
                        "too many agreements in force with {provider}: {live} (at most {max}); let one expire or revoke one no longer needed with `meshnode share revoke ID` (nothing was stored)"
                    ),
                    other => {
                        format!("{provider} refused the request: {other} (nothing was stored)")
                    }
                };
                return Err(NodeError::Refused(message));
            }
            FirstAnswer::Refused(message) => {
                negotiation::forget_request(self.party(), id).await?;
                return Err(NodeError::Refused(format!(
                    "{provider} refused the request: {message} (nothing was stored)"
                )));
            }
        };
        match negotiation::apply_reply(self.party(), id, reply, now_ms()).await {
            Ok(record) => {
                self.poll_succeeded(id);
                self.agreement_view(id, &record)
            }
            Err(e) => {
                negotiation::forget_request(self.party(), id).await?;
                Err(e)
            }
        }
    }

    async fn on_contract_failure(
        &mut self,
        peer: PeerId,
        request_id: OutboundRequestId,
        error: OutboundFailure,
    ) {
        let Some(outbound) = self.negotiations.outbound.remove(&request_id) else {
            return;
        };
        match outbound {
            Outbound::Request {
                id,
                provider,
                reply,
            } => {
                self.negotiations.in_flight.remove(&id);
                let result = match error {
                    OutboundFailure::DialFailure | OutboundFailure::UnsupportedProtocols => {
                        match negotiation::forget_request(self.party(), &id).await {
                            Ok(()) => NodeError::Unavailable(format!(
                                "provider {provider} is offline: this node cannot reach it ({error}). Nothing was stored; run the same `meshnode share request` again when {provider} is online"
                            )),
                            Err(e) => e,
                        }
                    }
                    _ => {
                        self.poll_failed(&id);
                        NodeError::Unavailable(format!(
                            "no answer from provider {provider} ({error}): the request {short} is kept as `requested` and sent again automatically until {provider} answers; follow it with `meshnode share show {short}`",
                            short = id.short()
                        ))
                    }
                };
                let _ = reply.send(Err(result));
            }
            Outbound::Poll { id } => {
                tracing::debug!(id = %id.short(), %peer, "contract poll failed: {error}");
                self.negotiations.in_flight.remove(&id);
                self.poll_failed(&id);
            }
            Outbound::PollBatch { key, ids } => {
                tracing::debug!(%peer, ids = ids.len(), "contract status batch failed: {error}");
                self.negotiations.batch_in_flight.remove(&key);
                for id in &ids {
                    self.negotiations.in_flight.remove(id);
                    self.poll_failed(id);
                }
            }
            Outbound::Revoke { id } => {
                tracing::info!(id = %id.short(), %peer, "revocation not delivered directly ({error}); gossip and the next status check deliver it");
            }
            Outbound::Notice { id } => {
                tracing::debug!(id = %id.short(), %peer, "decision notice not delivered ({error}); the consumer's next poll learns it");
            }
        }
    }

    fn poll_succeeded(&mut self, id: &AgreementId) {
        let first = self.negotiations.intervals.undecided;
        if let Some(s) = self.negotiations.schedule.get_mut(id) {
            s.backoff = first;
        }
    }

    fn poll_failed(&mut self, id: &AgreementId) {
        let intervals = self.negotiations.intervals;
        let s = self.negotiations.schedule.entry(*id).or_insert(Schedule {
            next: Instant::now(),
            backoff: intervals.undecided,
            until_ms: 0,
            peer: None,
            dial: true,
        });
        let (wait, backoff) = contract_sync::after_failure(s.backoff, &intervals);
        s.next = Instant::now() + wait;
        s.backoff = backoff;
    }

    /// Pushes the provider's decision on `record` (just accepted or rejected, flushed) to the
    /// consumer, when connected to it: the consumer applies it at once instead of at its next
    /// poll. Not dialled and not retried: a consumer with an undecided request keeps polling,
    /// which is the fallback for a notice that is lost.
    fn notify_decision(&mut self, id: &AgreementId, record: &AgreementRecord) {
        let decision = match (&record.agreement, &record.rejection) {
            (Some(agreement), _) if record.state == ContractState::Agreed => {
                Decision::Agreed(agreement.clone())
            }
            (_, Some(rejection)) if record.state == ContractState::Rejected => {
                Decision::Rejected(rejection.clone())
            }
            _ => return,
        };
        let Ok(terms) = record.terms() else { return };
        let key = counterparty(record.role, &terms);
        if !peer_id_of(&key).is_some_and(|peer| self.swarm.is_connected(&peer)) {
            tracing::debug!(id = %id.short(), "consumer not connected: it learns the decision by polling");
            return;
        }
        if let Some(request_id) = self.send_contract(&key, &ContractMessage::Decided(decision)) {
            self.metrics.contract_notices_sent.inc();
            self.negotiations
                .outbound
                .insert(request_id, Outbound::Notice { id: *id });
        }
    }

    /// A decision pushed by a provider: applied to our own undecided request to it, like the
    /// same decision in a status reply; anything else ignored. Either way counted by outcome.
    async fn on_decision_notice(&mut self, peer: PeerId, decision: Decision) -> ContractReply {
        match negotiation::apply_notice(self.party(), peer, decision, now_ms()).await {
            Ok((id, record)) => {
                self.metrics.contract_notice("applied");
                self.poll_succeeded(&id);
                tracing::info!(id = %id.short(), state = %record.state, "provider's decision received");
                negotiation::reply_for(&id, &record)
            }
            Err(NoticeRefused::Ignored(id, reason)) => {
                self.metrics.contract_notice(reason.as_str());
                tracing::debug!(%peer, id = %id.short(), "decision notice ignored: {reason}");
                ContractReply::Unknown(id)
            }
            Err(NoticeRefused::Invalid(e)) => {
                self.metrics.contract_notice("invalid");
                tracing::warn!(%peer, "decision notice refused: {e}");
                ContractReply::Error(e.to_string())
            }
        }
    }

    /// Periodic work, called from the actor's housekeeping tick: expires undecided requests
    /// (at start, then every [`SWEEP_INTERVAL`]) and sends due polls for requested, pending
    /// and agreed contracts, found through the store's index of live contracts. The
    /// rejections of expired requests are durable before the actor answers anything else:
    /// a status poll may report them at once.
    pub(crate) async fn contract_housekeeping(&mut self) {
        let now = Instant::now();
        if self
            .negotiations
            .last_sweep
            .is_none_or(|t| now.duration_since(t) >= SWEEP_INTERVAL)
        {
            self.negotiations.last_sweep = Some(now);
            match negotiation::expire_pending(self.party(), now_ms()) {
                Ok(0) => {}
                Ok(_) => {
                    if let Err(e) = self.store.flush().await {
                        tracing::error!("flushing expired requests failed: {e}");
                    }
                }
                Err(e) => tracing::error!("cannot expire pending requests: {e}"),
            }
            self.archive_audit_if_due();
        }
        if self
            .negotiations
            .last_scan
            .is_some_and(|t| now.duration_since(t) < SCAN_INTERVAL)
        {
            return;
        }
        self.negotiations.last_scan = Some(now);
        let Some(ids) = self.live_contract_ids() else {
            return;
        };
        let wall = now_ms();
        let mut live = HashSet::new();
        // Status polls due, per counterparty: sent as one batch each.
        let mut batches: BTreeMap<PublicKey, Vec<AgreementId>> = BTreeMap::new();
        for id in ids.iter().copied() {
            // Most live contracts have nothing due at most scans: their records stay unread.
            if let Some(s) = self.negotiations.schedule.get(&id)
                && s.idle(now, wall, |p| self.swarm.is_connected(p))
            {
                live.insert(id);
                continue;
            }
            let Ok(Some(record)) = self.store.agreement(&id) else {
                continue;
            };
            let Ok(terms) = record.terms() else { continue };
            let valid = wall < terms.valid_until_ms;
            let state = record.state_at(wall);
            if record.state == ContractState::Agreed && state == ContractState::Expired {
                // Keep the index to live contracts; the state is derived, so no flush.
                let mut expired = record.clone();
                expired.state = ContractState::Expired;
                if let Err(e) = self.store.put_agreement(&id, &expired) {
                    tracing::error!("cannot record an expiry: {e}");
                }
                continue;
            }
            let side = match record.role {
                Role::Provider => Side::Provider,
                Role::Consumer => Side::Consumer,
            };
            let plan = contract_sync::follow_up(side, state, valid, &self.negotiations.intervals);
            let (batched, first, interval, dial) = match plan {
                Some(FollowUp::Resend { first, every }) => (false, first, every, true),
                Some(FollowUp::Status { first, every, dial }) => (true, first, every, dial),
                None => continue,
            };
            live.insert(id);
            if self.negotiations.in_flight.contains(&id) {
                continue;
            }
            let key = counterparty(record.role, &terms);
            let Some(peer) = peer_id_of(&key) else {
                continue;
            };
            let schedule = self.negotiations.schedule.entry(id).or_insert(Schedule {
                next: now + first,
                backoff: interval,
                until_ms: 0,
                peer: None,
                dial: true,
            });
            schedule.until_ms = terms.valid_until_ms;
            schedule.peer = Some(peer);
            schedule.dial = dial;
            if now < schedule.next || (!dial && !self.swarm.is_connected(&peer)) {
                continue;
            }
            if batched {
                let batch = batches.entry(key).or_default();
                if batch.len() < MAX_STATUS_BATCH
                    && !self.negotiations.batch_in_flight.contains(&key)
                {
                    batch.push(id);
                    schedule.next = now + interval;
                }
                continue;
            }
            schedule.next = now + interval;
            let message = ContractMessage::Request(record.request.clone());
            if let Some(request_id) = self.send_contract(&key, &message) {
                self.metrics.contract_polls.inc();
                self.negotiations
                    .outbound
                    .insert(request_id, Outbound::Poll { id });
                self.negotiations.in_flight.insert(id);
            }
        }
        for (key, ids) in batches {
            if ids.is_empty() {
                continue;
            }
            let message = ContractMessage::StatusBatch(ids.clone());
            if let Some(request_id) = self.send_contract(&key, &message) {
                self.metrics.contract_polls.inc();
                self.negotiations.in_flight.extend(ids.iter().copied());
                self.negotiations.batch_in_flight.insert(key);
                self.negotiations
                    .outbound
                    .insert(request_id, Outbound::PollBatch { key, ids });
            }
        }
        self.negotiations.schedule.retain(|id, _| live.contains(id));
        self.negotiations.next_poll = self.negotiations.schedule.values().map(|s| s.next).min();
    }

    /// The contracts that may need a poll (requested, pending or agreed on the consumer's
    /// side, agreed on the provider's), from the store's index; read again only after an
    /// agreement was written. `None` when the index cannot be read.
    fn live_contract_ids(&mut self) -> Option<Arc<Vec<AgreementId>>> {
        let generation = self.store.agreement_generation();
        if let Some((seen, ids)) = &self.negotiations.scanned
            && *seen == generation
        {
            return Some(ids.clone());
        }
        let mut ids = Vec::new();
        for (role, state) in [
            (Role::Consumer, ContractState::Requested),
            (Role::Consumer, ContractState::Pending),
            (Role::Consumer, ContractState::Agreed),
            (Role::Provider, ContractState::Agreed),
        ] {
            match self.store.agreement_ids_in(role, state, SCAN_LIMIT) {
                Ok(found) => ids.extend(found),
                Err(e) => {
                    tracing::error!("cannot read the contract index: {e}");
                    return None;
                }
            }
        }
        let ids = Arc::new(ids);
        self.negotiations.scanned = Some((generation, ids.clone()));
        Some(ids)
    }

    /// A revocation heard on gossip. Checked against the agreement's parties when this node
    /// holds the agreement (and then recorded on it and audited). A revocation of an
    /// agreement this node does not hold is ignored: not stored and not forwarded (only the
    /// parties act on it, and they receive it directly and by their status checks), so
    /// nobody can make every node keep revocations of made-up agreements.
    pub(crate) fn accept_revocation(
        &mut self,
        envelope: &Signed<Revocation>,
    ) -> Result<bool, RejectReason> {
        let result = negotiation::revocation_from_gossip(&self.store, envelope, now_ms());
        match result {
            Ok(true) => {
                // Nobody waits for an acknowledgement of gossip; flush soon, off the actor.
                let store = self.store.clone();
                tokio::spawn(async move {
                    if let Err(e) = store.flush().await {
                        tracing::error!("flushing a revocation failed: {e}");
                    }
                });
            }
            Err(reason) => self.metrics.reject(reason),
            Ok(false) => {}
        }
        result
    }

    /// Handles a contract command.
    pub(crate) async fn on_contract_command(&mut self, command: ContractCommand) {
        match command {
            ContractCommand::Request { request, reply } => {
                match self.start_request(request).await {
                    Ok((id, provider, key, message)) => match self.send_contract(&key, &message) {
                        Some(request_id) => {
                            self.negotiations.in_flight.insert(id);
                            self.negotiations.outbound.insert(
                                request_id,
                                Outbound::Request {
                                    id,
                                    provider,
                                    reply,
                                },
                            );
                        }
                        None => {
                            let _ = negotiation::forget_request(self.party(), &id).await;
                            let _ = reply.send(Err(NodeError::BadRequest(format!(
                                "the provider key of `{provider}` is not a valid ed25519 key"
                            ))));
                        }
                    },
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            ContractCommand::List { query, reply } => {
                // Off the actor: the page is chosen among every record the query reaches.
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = reply.send(share_page(&store, &query, now_ms()));
                });
            }
            ContractCommand::Pending { reply } => {
                // Off the actor too: up to the request budget's records, of up to 80 KiB.
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = reply.send(pending_views(&store, now_ms()));
                });
            }
            ContractCommand::Show { id, reply } => {
                let result = negotiation::find(&self.store, &id)
                    .and_then(|(id, record)| self.agreement_view(&id, &record));
                let _ = reply.send(result);
            }
            ContractCommand::Odcs { id, reply } => {
                let _ = reply.send(self.odcs(&id));
            }
            ContractCommand::Accept { id, reply } => {
                let result = match negotiation::accept(self.party(), &id, now_ms()).await {
                    Ok((id, record)) => {
                        self.notify_decision(&id, &record);
                        self.agreement_view(&id, &record)
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            ContractCommand::Reject { id, reason, reply } => {
                let result = match negotiation::reject(self.party(), &id, &reason, now_ms()).await {
                    Ok((id, record)) => {
                        self.notify_decision(&id, &record);
                        self.agreement_view(&id, &record)
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            ContractCommand::Revoke { id, reason, reply } => {
                let result = self.revoke(&id, reason.as_deref()).await;
                let _ = reply.send(result);
            }
            ContractCommand::Audit { query, reply } => {
                // Off the actor: the whole chain is read to check it.
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || {
                    let view = crate::integrity::audit_view(&store, &query);
                    let _ = reply.send(view.map_err(NodeError::from));
                });
            }
            ContractCommand::ArchiveAudit { keep, reply } => {
                // Off the actor: the file may hold millions of entries.
                let store = self.store.clone();
                let dir = self.data_dir.audit_archive();
                tokio::task::spawn_blocking(move || {
                    let _ = reply.send(store.audit_archive(keep, &dir).map_err(NodeError::from));
                });
            }
        }
    }

    /// Archives the start of the audit chain, off the actor, when the store holds more
    /// entries than `audit_keep_entries` allows or more than
    /// [`mesh_protocol::audit::AUTO_ARCHIVE_MAX_BYTES`] of them (see
    /// `Store::audit_archive_due`). The check runs off the actor too: the first one after a
    /// start reads the size of every entry held.
    fn archive_audit_if_due(&self) {
        use std::sync::atomic::Ordering;
        let auto = self.config.auto_archive();
        if auto.keep == 0 || self.negotiations.archiving.swap(true, Ordering::AcqRel) {
            return;
        }
        let (store, dir) = (self.store.clone(), self.data_dir.audit_archive());
        let archiving = self.negotiations.archiving.clone();
        tokio::task::spawn_blocking(move || {
            match store.audit_archive_due(auto, mesh_protocol::audit::AUTO_ARCHIVE_MAX_BYTES) {
                Ok(Some(keep)) => match store.audit_archive(keep, &dir) {
                    Ok(Some(archived)) => tracing::info!(
                        path = %archived.path.display(), first = archived.first, last = archived.last,
                        kept = archived.kept,
                        "archived the start of the audit chain (audit_keep_entries, or 256 MiB held)"
                    ),
                    Ok(None) => {}
                    Err(e) => tracing::error!("cannot archive the audit chain: {e}"),
                },
                Ok(None) => {}
                Err(e) => tracing::error!("cannot count the audit entries: {e}"),
            }
            archiving.store(false, Ordering::Release);
        });
    }

    /// Builds, signs and stores a request; returns what to send to whom.
    async fn start_request(
        &mut self,
        request: ShareRequest,
    ) -> Result<(AgreementId, String, PublicKey, ContractMessage), NodeError> {
        let descriptor = self.resolve(request.product.trim())?;
        let now = now_ms();
        let terms = negotiation::build_terms(
            &descriptor,
            self.identity.public_key(),
            &self.config.domain,
            &request,
            now,
            rand::random(),
        )?;
        let violations =
            negotiation::mesh_violations(self.governance.state.policies(), &descriptor, &terms);
        if !violations.is_empty() {
            return Err(NodeError::Refused(format!(
                "cannot request `{}`: {}",
                descriptor.display_name(),
                negotiation::describe_violations(self.governance.state.policies(), &violations)
            )));
        }
        let key = terms.provider;
        let provider = terms.provider_domain.clone();
        let (id, envelope) = negotiation::store_request(self.party(), terms, now).await?;
        tracing::info!(id = %id.short(), product = %descriptor.display_name(), "contract requested");
        Ok((id, provider, key, ContractMessage::Request(envelope)))
    }

    async fn revoke(&mut self, id: &str, reason: Option<&str>) -> Result<AgreementView, NodeError> {
        let (id, record, envelope) =
            negotiation::revoke(self.party(), id, reason, now_ms()).await?;
        self.gossip(GossipMessage::Revocation(envelope.clone()));
        if let Ok(terms) = record.terms() {
            let key = counterparty(record.role, &terms);
            if let Some(request_id) = self.send_contract(&key, &ContractMessage::Revoke(envelope)) {
                self.negotiations
                    .outbound
                    .insert(request_id, Outbound::Revoke { id });
            }
        }
        self.agreement_view(&id, &record)
    }

    /// Requests waiting for this node's operator, newest first, through the index: the
    /// queue is bounded by the request budget.
    fn odcs(&self, id: &str) -> Result<DataContract, NodeError> {
        let (id, record) = negotiation::find(&self.store, id)?;
        let view = self.agreement_view(&id, &record)?;
        let terms = record
            .terms()
            .map_err(|e| NodeError::Internal(format!("stored contract does not decode: {e}")))?;
        let descriptor = self
            .store
            .descriptor(&terms.product)?
            .and_then(|(_, envelope)| envelope.decode_trusted().ok())
            .ok_or_else(|| {
                NodeError::NotFound(format!(
                    "product {} is not in this node's catalog, so its schema is unknown: wait for the catalog to sync and try again",
                    view.product
                ))
            })?;
        Ok(odcs::data_contract(&view, &descriptor))
    }
}

/// The view of a stored record, with granted columns from the catalog when known;
/// `descriptors` keeps the product descriptors read so far, so that a page reads each once.
fn view_of(
    store: &Store,
    descriptors: &mut HashMap<ProductId, Option<ProductDescriptor>>,
    id: &AgreementId,
    record: &AgreementRecord,
    now: u64,
) -> Result<AgreementView, NodeError> {
    let terms = record.terms().map_err(|e| {
        NodeError::Internal(format!(
            "stored contract {} does not decode: {e}",
            id.short()
        ))
    })?;
    if !descriptors.contains_key(&terms.product) {
        let read = store
            .descriptor(&terms.product)?
            .and_then(|(_, envelope)| envelope.decode_trusted().ok());
        descriptors.insert(terms.product.clone(), read);
    }
    let descriptor = descriptors.get(&terms.product).and_then(Option::as_ref);
    Ok(AgreementView::new(id, record, &terms, descriptor, now))
}

/// `share pending`: the requests waiting for this node's operator, newest first, found
/// through the index (bounded by the request budget). A blocking call, run off the actor.
fn pending_views(store: &Store, now: u64) -> Result<Vec<AgreementView>, NodeError> {
    let mut views = Vec::new();
    let mut descriptors = HashMap::new();
    for id in store.agreement_ids_in(Role::Provider, ContractState::Pending, SCAN_LIMIT)? {
        let Some(record) = store.agreement(&id)? else {
            continue;
        };
        if record.role == Role::Provider && record.state_at(now) == ContractState::Pending {
            views.push(view_of(store, &mut descriptors, &id, &record, now)?);
        }
    }
    views.sort_by(|a, b| {
        b.created_at_ms
            .cmp(&a.created_at_ms)
            .then_with(|| a.id.cmp(&b.id))
    });
    Ok(views)
}

/// `share list`: the page `query` asks for, newest first. The store reads the records the
/// query reaches one at a time and keeps the ids of the best candidates only
/// ([`Store::agreement_page`]), so memory stays within the page ([`crate::views::MAX_SHARE_PAGE`]
/// contracts, [`MAX_SHARE_PAGE_BYTES`] of records) whatever the store holds. A blocking
/// call, run off the actor.
fn share_page(store: &Store, query: &ShareQuery, now: u64) -> Result<SharePage, NodeError> {
    let limit = query.page_limit().map_err(NodeError::BadRequest)?;
    let filter = ListFilter {
        role: query.role,
        state: query.state,
    };
    let started = Instant::now();
    let page = store.agreement_page(filter, query.before, limit, MAX_SHARE_PAGE_BYTES, now)?;
    let mut descriptors = HashMap::new();
    let contracts = page
        .records
        .iter()
        .map(|(id, record)| view_of(store, &mut descriptors, id, record, now))
        .collect::<Result<Vec<_>, _>>()?;
    tracing::debug!(
        read = page.read,
        shown = contracts.len(),
        more = page.more,
        took_ms = started.elapsed().as_millis() as u64,
        "listed contracts"
    );
    Ok(SharePage {
        contracts,
        more: page.more,
        next_before: page.next_before,
    })
}

#[cfg(test)]
mod tests {
    use mesh_protocol::contract::{Agreement, Columns, ContractRequest, ContractTerms, DAY_MS};
    use mesh_protocol::retention::ClosedRetention;
    use mesh_protocol::{Identity, ProductId};

    use super::*;
    use crate::agreements::ListCursor;
    use crate::views::{DEFAULT_SHARE_PAGE, MAX_SHARE_PAGE};

    #[test]
    fn a_scan_reads_a_contract_only_when_something_may_be_due() {
        let now = Instant::now();
        let peer = PeerId::random();
        let scheduled = Schedule {
            next: now + Duration::from_secs(60),
            backoff: Duration::from_secs(60),
            until_ms: 2_000,
            peer: Some(peer),
            dial: false,
        };
        let connected = |_: &PeerId| true;
        let away = |_: &PeerId| false;
        // Not due, valid: passed over.
        assert!(scheduled.idle(now, 1_000, connected));
        // Due: read.
        let due = now + Duration::from_secs(61);
        assert!(!scheduled.idle(due, 1_000, connected));
        // Due, but a poll may not dial and the counterparty is away: passed over until it
        // connects.
        assert!(scheduled.idle(due, 1_000, away));
        let dialling = Schedule {
            dial: true,
            ..scheduled
        };
        assert!(!dialling.idle(due, 1_000, away));
        // Expired meanwhile: read, to record the expiry.
        assert!(!scheduled.idle(now, 2_000, connected));
        // A schedule made by a failure before any scan: read.
        let blank = Schedule {
            until_ms: 0,
            peer: None,
            dial: true,
            ..scheduled
        };
        assert!(!blank.idle(now, 1_000, connected));
    }

    #[test]
    fn contract_polls_wake_the_housekeeping_when_due_or_after_a_write() {
        let now = Instant::now();
        let mut negotiations = Negotiations::default();
        assert_eq!(negotiations.next_due(0, now), Some(now), "never scanned");
        negotiations.scanned = Some((3, Arc::new(Vec::new())));
        assert_eq!(
            negotiations.next_due(3, now),
            None,
            "nothing live, nothing written"
        );
        assert_eq!(
            negotiations.next_due(4, now),
            Some(now),
            "an agreement written since the scan"
        );
        let poll = now + Duration::from_secs(30);
        negotiations.next_poll = Some(poll);
        assert_eq!(negotiations.next_due(3, now), Some(poll));
        assert_eq!(negotiations.next_due(5, now), Some(now));
    }

    /// Records written, of `MEMBERS` consumers, each with a purpose of `PURPOSE` bytes.
    const RECORDS: u64 = 2_000;
    const MEMBERS: u64 = 20;
    const PURPOSE: usize = 8 * 1024;
    /// When the listing is asked for, ms since the epoch.
    const NOW: u64 = 10 * DAY_MS;

    fn provider() -> Identity {
        Identity::from_secret_bytes([1; 32])
    }

    /// A record of request `n`: created at `NOW - DAY - n / 3` seconds (three at a time, so
    /// that the id orders contracts created at once), of one of `MEMBERS` consumers; a
    /// quarter each pending, agreed, agreed past its end (expired) and rejected on the
    /// provider's side, and every 100th one this node's own request.
    fn record(n: u64) -> AgreementRecord {
        let consumer = Identity::from_secret_bytes([10 + (n % MEMBERS) as u8; 32]);
        let created = NOW - DAY_MS + (n / 3) * 1000;
        let state = match n % 4 {
            0 => ContractState::Pending,
            1 | 2 => ContractState::Agreed,
            _ => ContractState::Rejected,
        };
        let valid_until = if n % 4 == 2 { NOW - 1 } else { NOW + DAY_MS };
        let mut nonce = [0; 16];
        nonce[..8].copy_from_slice(&n.to_be_bytes());
        let terms = ContractTerms {
            product: ProductId {
                owner: provider().public_key(),
                name: "orders".into(),
            },
            provider_domain: "sales".into(),
            consumer_domain: format!("member{}", n % MEMBERS),
            provider: provider().public_key(),
            consumer: consumer.public_key(),
            min_version: 1,
            max_version: None,
            purpose: format!("{n:08} {}", "p".repeat(PURPOSE)),
            columns: Columns::Listed(vec!["order_id".into()]),
            filter: None,
            valid_from_ms: created,
            valid_until_ms: valid_until,
            nonce,
        };
        let request = Signed::sign(&consumer, &ContractRequest { terms });
        let agreement = (state == ContractState::Agreed)
            .then(|| Agreement::countersign(&provider(), request.clone()).unwrap());
        AgreementRecord {
            role: if n % 100 == 7 {
                Role::Consumer
            } else {
                Role::Provider
            },
            request,
            agreement,
            rejection: None,
            revocation: None,
            state,
            updated_ms: created,
        }
    }

    /// A store holding the `RECORDS` records; returns it with the ids in the order a
    /// listing shows them (newest first, then by id), each with its role and state now.
    fn filled() -> (
        tempfile::TempDir,
        Store,
        Vec<(AgreementId, Role, ContractState)>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path())
            .unwrap()
            .with_closed_retention(ClosedRetention {
                per_consumer: 10_000,
                total: 100_000,
            });
        let mut listed = Vec::new();
        for n in 0..RECORDS {
            let record = record(n);
            let terms = record.terms().unwrap();
            let id = terms.id();
            store.put_agreement(&id, &record).unwrap();
            listed.push((terms.valid_from_ms, id, record.role, record.state_at(NOW)));
        }
        listed.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.0.cmp(&b.1.0)));
        let listed = listed
            .into_iter()
            .map(|(_, id, role, state)| (id, role, state))
            .collect();
        (dir, store, listed)
    }

    fn ids(page: &SharePage) -> Vec<String> {
        page.contracts.iter().map(|v| v.id.clone()).collect()
    }

    fn hex(ids: &[(AgreementId, Role, ContractState)]) -> Vec<String> {
        ids.iter().map(|(id, _, _)| id.to_hex()).collect()
    }

    fn query(limit: usize, before: Option<ListCursor>) -> ShareQuery {
        ShareQuery {
            limit: Some(limit),
            before,
            ..Default::default()
        }
    }

    #[test]
    fn share_list_of_thousands_of_large_contracts_holds_a_page_and_pages_to_the_oldest() {
        let (_dir, store, listed) = filled();
        let stored: usize = store
            .agreements()
            .iter()
            .map(|item| item.unwrap().1.len())
            .sum();

        // The newest 100, in order; every record read once to choose them, one at a time,
        // and only the page's records held.
        let page = store
            .agreement_page(ListFilter::default(), None, 100, MAX_SHARE_PAGE_BYTES, NOW)
            .unwrap();
        assert_eq!(page.read, RECORDS);
        assert_eq!(page.records.len(), 100);
        assert_eq!(page.more, RECORDS - 100);
        let first = share_page(&store, &query(100, None), NOW).unwrap();
        assert_eq!(ids(&first), hex(&listed[..100]));
        assert_eq!(first.more, RECORDS - 100);
        let last = &first.contracts[99];
        assert_eq!(
            first.next_before.map(|c| c.to_string()),
            Some(format!("{}-{}", last.created_at_ms, last.id))
        );

        // Without a limit: the default page, cut at the page's bytes, which the whole
        // store's records are many times over; the answer stays that small.
        let default = share_page(&store, &ShareQuery::default(), NOW).unwrap();
        let shown = default.contracts.len();
        assert!(
            (100..DEFAULT_SHARE_PAGE).contains(&shown),
            "{shown} contracts on the default page"
        );
        assert_eq!(ids(&default), hex(&listed[..shown]));
        assert_eq!(default.more, RECORDS - shown as u64);
        let answer = serde_json::to_vec(&default.contracts).unwrap().len();
        assert!(stored > 3 * MAX_SHARE_PAGE_BYTES, "{stored} bytes stored");
        assert!(
            answer < MAX_SHARE_PAGE_BYTES + (1 << 20),
            "an answer of {answer} bytes"
        );

        // `before` walks to the oldest, each contract once and in order.
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = share_page(&store, &query(DEFAULT_SHARE_PAGE, before), NOW).unwrap();
            assert!(!page.contracts.is_empty());
            seen.extend(ids(&page));
            assert_eq!(page.more, RECORDS - seen.len() as u64);
            match page.next_before {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, hex(&listed));

        // A time alone: the contracts created before it.
        let cut = listed[500].0;
        let created = store.agreement(&cut).unwrap().unwrap().terms().unwrap();
        let at = ListCursor {
            created_ms: created.valid_from_ms,
            id: None,
        };
        let older = share_page(&store, &query(10, Some(at)), NOW).unwrap();
        let expected: Vec<String> = listed
            .iter()
            .filter(|(id, _, _)| {
                store
                    .agreement(id)
                    .unwrap()
                    .unwrap()
                    .terms()
                    .unwrap()
                    .valid_from_ms
                    < created.valid_from_ms
            })
            .take(10)
            .map(|(id, _, _)| id.to_hex())
            .collect();
        assert_eq!(ids(&older), expected);

        // Filters go through the index: this node's own requests without reading the
        // others', and the state now (agreed past its end is expired).
        let own = store
            .agreement_page(
                ListFilter {
                    role: Some(Role::Consumer),
                    state: None,
                },
                None,
                DEFAULT_SHARE_PAGE,
                MAX_SHARE_PAGE_BYTES,
                NOW,
            )
            .unwrap();
        let mine: Vec<_> = listed
            .iter()
            .filter(|(_, role, _)| *role == Role::Consumer)
            .cloned()
            .collect();
        assert_eq!(own.read, mine.len() as u64);
        assert_eq!(
            own.records
                .iter()
                .map(|(id, _)| id.to_hex())
                .collect::<Vec<_>>(),
            hex(&mine)
        );
        for state in [ContractState::Agreed, ContractState::Expired] {
            let page = share_page(
                &store,
                &ShareQuery {
                    limit: Some(5),
                    role: Some(Role::Provider),
                    state: Some(state),
                    ..Default::default()
                },
                NOW,
            )
            .unwrap();
            let expected: Vec<_> = listed
                .iter()
                .filter(|(_, role, now)| *role == Role::Provider && *now == state)
                .cloned()
                .collect();
            assert_eq!(ids(&page), hex(&expected[..5]), "{state}");
            assert!(page.contracts.iter().all(|v| v.state == state));
            assert_eq!(page.more, expected.len() as u64 - 5);
        }
    }

    /// Peak memory (VmHWM) and time of `share list` over the store of
    /// `share_list_of_thousands_...`, with purposes of 64 KB, against collecting every record
    /// and building every view as `share list` did before (a measurement:
    /// `cargo test -p mesh-node --lib share_list_cost -- --ignored --nocapture`). Each phase
    /// runs on a warm store and starts from a reset peak, so sled's cache is not counted.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn share_list_cost_against_reading_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path())
            .unwrap()
            .with_closed_retention(ClosedRetention {
                per_consumer: 10_000,
                total: 100_000,
            });
        let large = |n: u64| {
            let mut record = record(n);
            let mut terms = record.terms().unwrap();
            terms.purpose = format!("{n:08} {}", "p".repeat(64_000));
            let consumer = Identity::from_secret_bytes([10 + (n % MEMBERS) as u8; 32]);
            record.request = Signed::sign(&consumer, &ContractRequest { terms });
            if record.agreement.is_some() {
                record.agreement =
                    Some(Agreement::countersign(&provider(), record.request.clone()).unwrap());
            }
            record
        };
        for n in 0..RECORDS {
            let record = large(n);
            store
                .put_agreement(&record.terms().unwrap().id(), &record)
                .unwrap();
        }
        let stored: usize = store
            .agreements()
            .iter()
            .map(|item| item.unwrap().1.len())
            .sum();
        // Warm sled's cache, then measure each way from a reset peak.
        share_page(&store, &ShareQuery::default(), NOW).unwrap();
        let measure = |name: &str, run: &dyn Fn() -> usize| {
            std::fs::write("/proc/self/clear_refs", "5").unwrap();
            let base = rss_kib("VmRSS:");
            let started = Instant::now();
            let answer = run();
            let took = started.elapsed();
            let peak = rss_kib("VmHWM:");
            println!(
                "{name}: {took:.2?}, peak {} MiB above the {} MiB before, answer {} MiB",
                (peak - base) / 1024,
                base / 1024,
                answer >> 20
            );
        };
        println!("{RECORDS} records, {} MiB stored", stored >> 20);
        measure("share list (default page)", &|| {
            let page = share_page(&store, &ShareQuery::default(), NOW).unwrap();
            serde_json::to_vec(&page.contracts).unwrap().len()
        });
        measure("every record, every view (before)", &|| {
            let mut views: Vec<AgreementView> = store
                .agreement_records()
                .unwrap()
                .iter()
                .map(|(id, record)| view_of(&store, &mut HashMap::new(), id, record, NOW).unwrap())
                .collect();
            views.sort_by(|a, b| {
                b.created_at_ms
                    .cmp(&a.created_at_ms)
                    .then_with(|| a.id.cmp(&b.id))
            });
            serde_json::to_vec(&views).unwrap().len()
        });
    }

    /// A line of `/proc/self/status`, in KiB.
    fn rss_kib(field: &str) -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn a_list_position_reads_back_as_written_and_nonsense_is_refused() {
        let id = AgreementId([0xab; 32]);
        for cursor in [
            ListCursor {
                created_ms: 1_712_345_678_901,
                id: Some(id),
            },
            ListCursor {
                created_ms: 5,
                id: None,
            },
        ] {
            assert_eq!(cursor.to_string().parse::<ListCursor>().unwrap(), cursor);
        }
        for nonsense in [
            "",
            "-",
            "12-",
            "x",
            "-5",
            "1-abc",
            &format!("1-{}", "g".repeat(64)),
            "99999999999999999999999",
        ] {
            assert!(nonsense.parse::<ListCursor>().is_err(), "{nonsense}");
        }
        // A limit past the bound is refused before the actor is asked.
        assert!(query(MAX_SHARE_PAGE + 1, None).page_limit().is_err());
        assert!(query(0, None).page_limit().is_err());
        assert_eq!(
            ShareQuery {
                limit: Some(3),
                before: Some(ListCursor {
                    created_ms: 5,
                    id: None
                }),
                role: Some(Role::Provider),
                state: Some(ContractState::Agreed),
            }
            .to_query_string(),
            "?limit=3&before=5&role=provider&state=agreed"
        );
    }
}
