//! Data-plane admission: what a provider does with a QUIC connection attempt before it
//! spends any state on it, and when an established connection may take a slot.
//!
//! The I/O shell (quinn's `Endpoint::accept()` in `mesh-node`) hands every attempt to
//! [`Admission::on_attempt`] with the source address, whether the address was validated by
//! a Retry token, and the current time. The answer is a [`Verdict`]:
//!
//! - [`Verdict::Accept`]: start the handshake, which must end by the returned deadline;
//! - [`Verdict::Retry`]: answer with a stateless Retry (QUIC address validation), so that
//!   only a sender that receives packets at its address comes back;
//! - [`Verdict::Refuse`]: answer with a stateless refusal;
//! - [`Verdict::Ignore`]: drop the packet without answering.
//!
//! A connection slot is taken only once the handshake completed and the peer's key is
//! known ([`Admission::on_established`]). Unvalidated handshakes are few by construction:
//! at most [`AdmissionLimits::max_unvalidated_per_ip`] per source, and none at all while the
//! provider is under load (more than [`AdmissionLimits::retry_threshold`] handshakes in
//! progress, or less than [`AdmissionLimits::load_hold_ms`] after that). A flood of
//! Initial packets from addresses that never answer a Retry therefore holds a bounded,
//! short-lived number of handshakes and no slot.
//!
//! Once connected, each fetch request takes a transfer slot ([`TransferSlots`]) for as long
//! as it is served: at most [`TransferLimits::max_per_key`] per consumer key and
//! [`TransferLimits::max_transfers`] over all keys, so that consumers which read slowly
//! cannot together hold more of the provider than that, however many keys they have.
//!
//! Pure state: no clock, no sockets. Time is passed in as Unix milliseconds.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

/// Limits of the admission policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Handshakes in progress (all sources) at which the provider counts as under load:
    /// from then on, attempts from unvalidated addresses get a Retry.
    pub retry_threshold: u32,
    /// How long the provider stays under load after the last attempt that found
    /// `retry_threshold` reached or came from an unvalidated address while under load, so
    /// that a flood cannot refill the handshake table each time a handshake times out: it
    /// keeps the provider in Retry mode for as long as it lasts.
    pub load_hold_ms: u64,
    /// Most handshakes in progress over all sources; beyond it every attempt is refused.
    pub max_handshakes: u32,
    /// Most handshakes in progress from one unvalidated source address; beyond it that
    /// source gets a Retry. Spoofed addresses make this count meaningless for a flood;
    /// it keeps one honest but busy client from taking the whole unvalidated share.
    pub max_unvalidated_per_ip: u32,
    /// Most handshakes in progress from one validated source address (one that proved it
    /// receives packets there); beyond it the attempt is ignored.
    pub max_validated_per_ip: u32,
    /// Most established connections over all peers: the slots.
    pub max_connections: u32,
    /// Most established connections from one source address.
    pub max_connections_per_ip: u32,
    /// Most established connections of one peer key.
    pub max_connections_per_key: u32,
    /// Longest a handshake may take, in milliseconds (shorter than the idle timeout).
    pub handshake_timeout_ms: u64,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            retry_threshold: 32,
            load_hold_ms: 10_000,
            max_handshakes: 128,
            max_unvalidated_per_ip: 8,
            max_validated_per_ip: 16,
            max_connections: 256,
            max_connections_per_ip: 64,
            max_connections_per_key: 16,
            handshake_timeout_ms: 5_000,
        }
    }
}

/// One connection attempt, as the shell sees it before any state is committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// Source IP address of the Initial packet.
    pub source: IpAddr,
    /// The packet carried a valid Retry token: the sender receives packets at `source`.
    pub validated: bool,
    /// A Retry may still be sent (false once the client already answered one).
    pub may_retry: bool,
}

/// What to do with an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Start the handshake; it holds `ticket` until it ends, and must end by
    /// `deadline_ms`.
    Accept {
        /// Identifies the handshake in [`Admission::on_established`] and
        /// [`Admission::on_handshake_end`].
        ticket: Ticket,
        /// When the shell must abandon the handshake (Unix ms).
        deadline_ms: u64,
    },
    /// Send a stateless Retry (address validation).
    Retry,
    /// Send a stateless refusal.
    Refuse,
    /// Drop silently.
    Ignore,
}

impl Verdict {
    /// Short label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Accept { .. } => "accept",
            Verdict::Retry => "retry",
            Verdict::Refuse => "refuse",
            Verdict::Ignore => "ignore",
        }
    }
}

/// A handshake admitted by [`Admission::on_attempt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

/// A connection holding a slot (see [`Admission::on_established`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId(u64);

/// How a handshake ended without a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeEnd {
    /// It failed (bad certificate, closed by the peer, ...).
    Failed,
    /// It did not complete by its deadline.
    TimedOut,
}

/// Why an established connection gets no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlotRefusal {
    /// Every slot is taken.
    #[error("the provider serves its maximum of {0} connections")]
    Full(u32),
    /// The source address holds its maximum of connections.
    #[error("the source address already holds {0} connections")]
    PerAddress(u32),
    /// The peer key holds its maximum of connections.
    #[error("this key already holds {0} connections")]
    PerKey(u32),
    /// The ticket is unknown (already ended).
    #[error("the handshake is no longer tracked")]
    UnknownTicket,
}

/// Handshakes in progress from one source address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SourceHandshakes {
    /// From attempts without address validation.
    unvalidated: u32,
    /// From attempts that carried a valid Retry token.
    validated: u32,
}

/// One handshake in progress.
#[derive(Clone, Copy, Debug)]
struct Handshake {
    /// Its source address, for the per-source count.
    source: IpAddr,
    /// Whether it counts as validated.
    validated: bool,
}

/// One established connection holding a slot.
#[derive(Clone, Debug)]
struct Slot<K> {
    /// Its source address, for the per-source count.
    source: IpAddr,
    /// Its peer key, for the per-key count.
    key: K,
}

/// Running totals, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    /// Attempts admitted to a handshake.
    pub accepted: u64,
    /// Attempts answered with a Retry.
    pub retried: u64,
    /// Attempts refused.
    pub refused: u64,
    /// Attempts ignored.
    pub ignored: u64,
    /// Handshakes abandoned at their deadline.
    pub timed_out: u64,
    /// Handshakes that failed otherwise.
    pub failed: u64,
    /// Established connections given a slot.
    pub established: u64,
    /// Established connections refused a slot.
    pub slot_refused: u64,
    /// Most handshakes in progress at once so far.
    pub peak_handshakes: u32,
}

/// The admission state of one provider. `K` is the peer key type.
#[derive(Clone, Debug)]
pub struct Admission<K> {
    /// The limits.
    limits: AdmissionLimits,
    /// Handshakes in progress, by ticket.
    handshakes: HashMap<Ticket, Handshake>,
    /// Handshakes in progress, by source address (entries removed at zero).
    by_source: HashMap<IpAddr, SourceHandshakes>,
    /// Established connections, by slot.
    slots: HashMap<SlotId, Slot<K>>,
    /// Established connections by source address (entries removed at zero).
    slots_by_source: HashMap<IpAddr, u32>,
    /// Established connections by key (entries removed at zero).
    slots_by_key: HashMap<K, u32>,
    /// Under load until this time (Unix ms).
    under_load_until_ms: u64,
    /// Next ticket or slot number.
    next_id: u64,
    /// Totals.
    stats: AdmissionStats,
}

impl<K: Clone + Eq + Hash> Admission<K> {
    /// An empty admission state.
    pub fn new(limits: AdmissionLimits) -> Self {
        Self {
            limits,
            handshakes: HashMap::new(),
            by_source: HashMap::new(),
            slots: HashMap::new(),
            slots_by_source: HashMap::new(),
            slots_by_key: HashMap::new(),
            under_load_until_ms: 0,
            next_id: 0,
            stats: AdmissionStats::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &AdmissionLimits {
        &self.limits
    }

    /// Handshakes in progress.
    pub fn handshakes(&self) -> u32 {
        self.handshakes.len() as u32
    }

    /// Connections holding a slot.
    pub fn connections(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Whether unvalidated attempts get a Retry at `now_ms`.
    pub fn under_load(&self, now_ms: u64) -> bool {
        self.handshakes() >= self.limits.retry_threshold || now_ms < self.under_load_until_ms
    }

    /// Totals so far.
    pub fn stats(&self) -> AdmissionStats {
        self.stats
    }

    /// Decides what to do with `attempt` at `now_ms`.
    pub fn on_attempt(&mut self, attempt: &Attempt, now_ms: u64) -> Verdict {
        let verdict = self.decide(attempt, now_ms);
        match verdict {
            Verdict::Accept { ticket, .. } => {
                self.handshakes.insert(
                    ticket,
                    Handshake {
                        source: attempt.source,
                        validated: attempt.validated,
                    },
                );
                let entry = self.by_source.entry(attempt.source).or_default();
                if attempt.validated {
                    entry.validated += 1;
                } else {
                    entry.unvalidated += 1;
                }
                self.stats.accepted += 1;
                self.stats.peak_handshakes = self.stats.peak_handshakes.max(self.handshakes());
            }
            Verdict::Retry => self.stats.retried += 1,
            Verdict::Refuse => self.stats.refused += 1,
            Verdict::Ignore => self.stats.ignored += 1,
        }
        verdict
    }

    fn decide(&mut self, attempt: &Attempt, now_ms: u64) -> Verdict {
        let limits = &self.limits;
        let in_progress = self.handshakes.len() as u32;
        if in_progress >= limits.retry_threshold {
            self.under_load_until_ms = now_ms.saturating_add(limits.load_hold_ms);
        }
        let under_load = self.under_load(now_ms);
        if under_load && !attempt.validated {
            self.under_load_until_ms = now_ms.saturating_add(limits.load_hold_ms);
        }
        let source = self
            .by_source
            .get(&attempt.source)
            .copied()
            .unwrap_or_default();
        let retry_or_ignore = if attempt.may_retry {
            Verdict::Retry
        } else {
            Verdict::Ignore
        };
        if !attempt.validated {
            // Nothing is known about the sender: it gets state only while the provider is
            // quiet and its address holds few handshakes; otherwise it must prove its
            // address first, which a Retry does at no cost to us.
            if under_load
                || in_progress >= limits.max_handshakes
                || source.unvalidated >= limits.max_unvalidated_per_ip
            {
                return retry_or_ignore;
            }
        } else {
            if source.validated >= limits.max_validated_per_ip {
                return Verdict::Ignore;
            }
            if in_progress >= limits.max_handshakes {
                return Verdict::Refuse;
            }
        }
        // A real address that could not get a slot anyway learns so at once.
        let slots_here = self
            .slots_by_source
            .get(&attempt.source)
            .copied()
            .unwrap_or(0);
        if self.slots.len() as u32 >= limits.max_connections
            || slots_here >= limits.max_connections_per_ip
        {
            return if attempt.validated {
                Verdict::Refuse
            } else {
                retry_or_ignore
            };
        }
        self.next_id += 1;
        Verdict::Accept {
            ticket: Ticket(self.next_id),
            deadline_ms: now_ms.saturating_add(limits.handshake_timeout_ms),
        }
    }

    /// Forgets a handshake; returns its source and whether it was known.
    fn end(&mut self, ticket: Ticket) -> Option<IpAddr> {
        let handshake = self.handshakes.remove(&ticket)?;
        if let Some(entry) = self.by_source.get_mut(&handshake.source) {
            if handshake.validated {
                entry.validated = entry.validated.saturating_sub(1);
            } else {
                entry.unvalidated = entry.unvalidated.saturating_sub(1);
            }
            if *entry == SourceHandshakes::default() {
                self.by_source.remove(&handshake.source);
            }
        }
        Some(handshake.source)
    }

    /// A handshake ended without a connection. Unknown tickets are ignored.
    pub fn on_handshake_end(&mut self, ticket: Ticket, how: HandshakeEnd) {
        if self.end(ticket).is_some() {
            match how {
                HandshakeEnd::Failed => self.stats.failed += 1,
                HandshakeEnd::TimedOut => self.stats.timed_out += 1,
            }
        }
    }

    /// The handshake of `ticket` completed with peer `key`: take a slot, or say why not.
    /// Either way the handshake no longer counts.
    pub fn on_established(&mut self, ticket: Ticket, key: K) -> Result<SlotId, SlotRefusal> {
        let source = self.end(ticket).ok_or(SlotRefusal::UnknownTicket)?;
        let limits = &self.limits;
        let here = self.slots_by_source.get(&source).copied().unwrap_or(0);
        let of_key = self.slots_by_key.get(&key).copied().unwrap_or(0);
        let refusal = if self.slots.len() as u32 >= limits.max_connections {
            Some(SlotRefusal::Full(limits.max_connections))
        } else if here >= limits.max_connections_per_ip {
            Some(SlotRefusal::PerAddress(limits.max_connections_per_ip))
        } else if of_key >= limits.max_connections_per_key {
            Some(SlotRefusal::PerKey(limits.max_connections_per_key))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            self.stats.slot_refused += 1;
            return Err(refusal);
        }
        self.next_id += 1;
        let slot = SlotId(self.next_id);
        *self.slots_by_source.entry(source).or_insert(0) += 1;
        *self.slots_by_key.entry(key.clone()).or_insert(0) += 1;
        self.slots.insert(slot, Slot { source, key });
        self.stats.established += 1;
        Ok(slot)
    }

    /// A connection holding `slot` closed. Unknown slots are ignored.
    pub fn on_closed(&mut self, slot: SlotId) {
        let Some(Slot { source, key }) = self.slots.remove(&slot) else {
            return;
        };
        if let Some(n) = self.slots_by_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.slots_by_source.remove(&source);
            }
        }
        if let Some(n) = self.slots_by_key.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.slots_by_key.remove(&key);
            }
        }
    }
}

/// Limits of the transfers a provider serves at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferLimits {
    /// Most transfers over all consumer keys.
    pub max_transfers: u32,
    /// Most transfers of one consumer key.
    pub max_per_key: u32,
}

/// Why a fetch request gets no transfer slot; either way the consumer may retry later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferRefusal {
    /// The consumer's key holds its maximum of transfers.
    #[error("this provider already serves {0} transfers to you; retry when one ends")]
    PerKey(u32),
    /// Every transfer slot is taken, by all consumers together.
    #[error(
        "this provider already serves its maximum of {0} transfers to all consumers together; retry later"
    )]
    Full(u32),
}

/// The transfers a provider serves right now, per consumer key and in all. A slot is taken
/// by [`TransferSlots::take`] and given back by [`TransferSlots::give_back`] once the
/// transfer ended, however it ended.
#[derive(Clone, Debug)]
pub struct TransferSlots<K> {
    /// The limits.
    limits: TransferLimits,
    /// Transfers of each key (entries removed at zero).
    by_key: HashMap<K, u32>,
    /// Transfers in all: the sum of `by_key`.
    total: u32,
}

impl<K: Clone + Eq + Hash> TransferSlots<K> {
    /// No transfer yet.
    pub fn new(limits: TransferLimits) -> Self {
        Self {
            limits,
            by_key: HashMap::new(),
            total: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> TransferLimits {
        self.limits
    }

    /// Transfers served in all.
    pub fn active(&self) -> u32 {
        self.total
    }

    /// Transfers served to `key`.
    pub fn active_of(&self, key: &K) -> u32 {
        self.by_key.get(key).copied().unwrap_or(0)
    }

    /// Takes a slot for a transfer to `key`, or says why not (and takes nothing). The key's
    /// own limit is named first: it is the one the consumer can do something about.
    pub fn take(&mut self, key: &K) -> Result<(), TransferRefusal> {
        if self.active_of(key) >= self.limits.max_per_key {
            return Err(TransferRefusal::PerKey(self.limits.max_per_key));
        }
        if self.total >= self.limits.max_transfers {
            return Err(TransferRefusal::Full(self.limits.max_transfers));
        }
        *self.by_key.entry(key.clone()).or_insert(0) += 1;
        self.total += 1;
        Ok(())
    }

    /// Gives back a slot of `key`. A key holding none is ignored.
    pub fn give_back(&mut self, key: &K) {
        let Some(n) = self.by_key.get_mut(key) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.by_key.remove(key);
        }
        self.total -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    fn small() -> AdmissionLimits {
        AdmissionLimits {
            retry_threshold: 4,
            load_hold_ms: 1_000,
            max_handshakes: 6,
            max_unvalidated_per_ip: 2,
            max_validated_per_ip: 2,
            max_connections: 3,
            max_connections_per_ip: 2,
            max_connections_per_key: 1,
            handshake_timeout_ms: 500,
        }
    }

    fn attempt(source: IpAddr, validated: bool) -> Attempt {
        Attempt {
            source,
            validated,
            may_retry: !validated,
        }
    }

    /// Validated attempts from `n` distinct sources, all accepted.
    fn fill(admission: &mut Admission<u8>, n: u8, now: u64) -> Vec<Ticket> {
        (0..n)
            .map(|i| {
                let source = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, i));
                match admission.on_attempt(&attempt(source, true), now) {
                    Verdict::Accept { ticket, .. } => ticket,
                    other => panic!("attempt {i}: {other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn attempts_get_the_verdict_of_the_table() {
        use Verdict as V;
        // (handshakes already in progress from other sources, from this source
        // (unvalidated, validated), connections from this source, attempt validated,
        // may retry, expected)
        type Row = (u8, (u8, u8), u8, bool, bool, &'static str);
        let table: &[Row] = &[
            (0, (0, 0), 0, false, true, "accept"),
            (0, (0, 0), 0, true, false, "accept"),
            // Per-source share of unvalidated handshakes.
            (0, (2, 0), 0, false, true, "retry"),
            (0, (2, 0), 0, true, false, "accept"),
            // A client that already answered a Retry without validating is dropped.
            (0, (2, 0), 0, false, false, "ignore"),
            // Under load: only validated addresses start handshakes.
            (4, (0, 0), 0, false, true, "retry"),
            (4, (0, 0), 0, true, false, "accept"),
            (3, (0, 1), 0, false, true, "retry"),
            // Per-source share of validated handshakes.
            (0, (0, 2), 0, true, false, "ignore"),
            // Hard limit.
            (6, (0, 0), 0, true, false, "refuse"),
            (6, (0, 0), 0, false, true, "retry"),
            // The source holds its connections: refused once validated.
            (0, (0, 0), 2, true, false, "refuse"),
            (0, (0, 0), 2, false, true, "retry"),
        ];
        for (i, &(others, (unval, val), conns, validated, may_retry, want)) in
            table.iter().enumerate()
        {
            let mut limits = small();
            limits.max_connections_per_key = 10;
            let mut adm = Admission::<u8>::new(limits);
            fill(&mut adm, others, 0);
            for k in 0..conns {
                let Verdict::Accept { ticket, .. } = adm.on_attempt(&attempt(A, true), 0) else {
                    panic!("row {i}: setup connection refused");
                };
                adm.on_established(ticket, k).unwrap();
            }
            for _ in 0..unval {
                assert!(matches!(
                    adm.on_attempt(&attempt(A, false), 0),
                    V::Accept { .. }
                ));
            }
            for _ in 0..val {
                assert!(matches!(
                    adm.on_attempt(&attempt(A, true), 0),
                    V::Accept { .. }
                ));
            }
            let got = adm.on_attempt(
                &Attempt {
                    source: A,
                    validated,
                    may_retry,
                },
                0,
            );
            assert_eq!(got.as_str(), want, "row {i}: {:?}", table[i]);
        }
    }

    #[test]
    fn an_accepted_handshake_has_a_deadline_and_counts_until_it_ends() {
        let mut adm = Admission::<u8>::new(small());
        let Verdict::Accept {
            ticket,
            deadline_ms,
        } = adm.on_attempt(&attempt(A, false), 1_000)
        else {
            panic!("not accepted");
        };
        assert_eq!(deadline_ms, 1_500);
        assert_eq!(adm.handshakes(), 1);
        adm.on_handshake_end(ticket, HandshakeEnd::TimedOut);
        adm.on_handshake_end(ticket, HandshakeEnd::TimedOut);
        assert_eq!(adm.handshakes(), 0);
        assert_eq!(adm.stats().timed_out, 1);
        assert!(adm.by_source.is_empty());
        assert_eq!(
            adm.on_established(ticket, 1),
            Err(SlotRefusal::UnknownTicket)
        );
    }

    #[test]
    fn load_holds_after_the_handshakes_drain_then_lifts() {
        let mut adm = Admission::<u8>::new(small());
        let tickets = fill(&mut adm, 4, 0);
        // The fifth attempt finds the threshold reached: Retry, and load is remembered.
        assert_eq!(adm.on_attempt(&attempt(B, false), 100), Verdict::Retry);
        for t in tickets {
            adm.on_handshake_end(t, HandshakeEnd::TimedOut);
        }
        assert_eq!(adm.handshakes(), 0);
        // Still under load: a flood cannot refill the table as handshakes time out, and
        // each of its attempts prolongs the load; validated clients still get in.
        assert!(matches!(
            adm.on_attempt(&attempt(B, true), 1_099),
            Verdict::Accept { .. }
        ));
        assert_eq!(adm.on_attempt(&attempt(B, false), 1_099), Verdict::Retry);
        assert_eq!(adm.on_attempt(&attempt(A, false), 2_098), Verdict::Retry);
        // Quiet again once a whole hold passed without unvalidated attempts.
        assert!(matches!(
            adm.on_attempt(&attempt(A, false), 3_098),
            Verdict::Accept { .. }
        ));
        assert_eq!(adm.stats().retried, 3);
        assert_eq!(adm.stats().peak_handshakes, 4);
    }

    #[test]
    fn a_flood_of_unvalidated_attempts_holds_a_bounded_number_of_handshakes() {
        let limits = AdmissionLimits::default();
        let mut adm = Admission::<u8>::new(limits.clone());
        let mut accepted = Vec::new();
        // 100 000 Initials over 10 s from 1 000 spoofed sources, none of which answers.
        for i in 0..100_000u32 {
            let now = u64::from(i) / 10;
            let source = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i % 1_000));
            if let Verdict::Accept {
                ticket,
                deadline_ms,
            } = adm.on_attempt(&attempt(source, false), now)
            {
                accepted.push((ticket, deadline_ms));
            }
            accepted.retain(|&(t, deadline)| {
                let expired = deadline <= now;
                if expired {
                    adm.on_handshake_end(t, HandshakeEnd::TimedOut);
                }
                !expired
            });
            assert!(adm.handshakes() <= limits.retry_threshold);
        }
        // Only the first threshold's worth got a handshake; every other one a Retry.
        assert_eq!(adm.stats().accepted, u64::from(limits.retry_threshold));
        assert_eq!(
            adm.stats().retried,
            100_000 - u64::from(limits.retry_threshold)
        );
        // An honest client that answers its Retry is still admitted, and gets a slot.
        let Verdict::Accept { ticket, .. } = adm.on_attempt(&attempt(A, true), 10_000) else {
            panic!("the validated client was not admitted");
        };
        assert!(adm.on_established(ticket, 7).is_ok());
    }

    #[test]
    fn slots_are_taken_at_establishment_and_bounded_per_source_key_and_total() {
        let mut adm = Admission::<u8>::new(small());
        let ticket =
            |adm: &mut Admission<u8>, source| match adm.on_attempt(&attempt(source, true), 0) {
                Verdict::Accept { ticket, .. } => ticket,
                other => panic!("{other:?}"),
            };
        let t1 = ticket(&mut adm, A);
        let t2 = ticket(&mut adm, A);
        assert_eq!(adm.connections(), 0, "no slot before the handshake ends");
        let s1 = adm.on_established(t1, 1).unwrap();
        // Same key again: per-key limit of 1.
        assert_eq!(adm.on_established(t2, 1), Err(SlotRefusal::PerKey(1)));
        let t3 = ticket(&mut adm, A);
        adm.on_established(t3, 2).unwrap();
        // Source A holds 2: a third from A is refused at the attempt already.
        assert_eq!(adm.on_attempt(&attempt(A, true), 0), Verdict::Refuse);
        let t4 = ticket(&mut adm, B);
        let t5 = ticket(&mut adm, B);
        adm.on_established(t4, 3).unwrap();
        assert_eq!(adm.on_established(t5, 4), Err(SlotRefusal::Full(3)));
        assert_eq!(adm.connections(), 3);
        adm.on_closed(s1);
        adm.on_closed(s1);
        assert_eq!(adm.connections(), 2);
        let t6 = ticket(&mut adm, A);
        assert!(adm.on_established(t6, 1).is_ok());
        assert_eq!(adm.stats().slot_refused, 2);
        assert_eq!(adm.stats().established, 4);
    }

    #[test]
    fn transfers_are_bounded_per_key_and_in_all_and_a_refusal_takes_nothing() {
        let mut slots = TransferSlots::<u8>::new(TransferLimits {
            max_transfers: 3,
            max_per_key: 2,
        });
        slots.take(&1).unwrap();
        slots.take(&1).unwrap();
        assert_eq!(slots.take(&1), Err(TransferRefusal::PerKey(2)));
        slots.take(&2).unwrap();
        assert_eq!(slots.active(), 3);
        // Full: another key is refused, and the key at its own limit hears of that limit.
        assert_eq!(slots.take(&3), Err(TransferRefusal::Full(3)));
        assert_eq!(slots.take(&1), Err(TransferRefusal::PerKey(2)));
        assert_eq!((slots.active(), slots.active_of(&3)), (3, 0));
        // A transfer that ends makes room for any key.
        slots.give_back(&1);
        assert_eq!(slots.active_of(&1), 1);
        slots.take(&3).unwrap();
        assert_eq!(slots.take(&2), Err(TransferRefusal::Full(3)));
        // Giving back what a key does not hold changes nothing.
        slots.give_back(&4);
        assert_eq!(slots.active(), 3);
        for key in [1, 2, 3] {
            slots.give_back(&key);
        }
        assert_eq!(slots.active(), 0);
        assert!(slots.by_key.is_empty());
        slots.give_back(&1);
        assert_eq!(slots.active(), 0);
    }

    #[test]
    fn many_keys_each_under_their_own_limit_still_take_at_most_the_total() {
        let mut slots = TransferSlots::<u16>::new(TransferLimits {
            max_transfers: 64,
            max_per_key: 4,
        });
        let mut served = 0;
        for key in 0..128u16 {
            for _ in 0..4 {
                if slots.take(&key).is_ok() {
                    served += 1;
                }
            }
        }
        assert_eq!((served, slots.active()), (64, 64));
    }
}
