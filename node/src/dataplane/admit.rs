//! The I/O side of data-plane admission: quinn's `Incoming` in, the verdict of the sans-I/O
//! [`Admission`](mesh_protocol::admission::Admission) applied, guards that give handshakes
//! and slots back when they end, and the metrics of all that.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};

use mesh_protocol::PublicKey;
use mesh_protocol::admission::{
    Admission, AdmissionStats, Attempt, HandshakeEnd, SlotId, SlotRefusal, Ticket, Verdict,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::Shared;
use crate::node::now_ms;

/// Counters kept outside the admission state.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Connections closed because no stream was open for a while.
    pub(super) idle_closed: AtomicU64,
    /// Retries that quinn could not send (the attempt was dropped instead).
    pub(super) retry_failed: AtomicU64,
}

impl Shared {
    /// The admission state, even after a panic elsewhere (its counts stay consistent
    /// because every change is one short critical section).
    pub(super) fn admission(&self) -> MutexGuard<'_, Admission<PublicKey>> {
        self.admission
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// IPv4 peers reached over an IPv6 socket count as their IPv4 address.
fn source_ip(incoming: &quinn::Incoming) -> IpAddr {
    incoming.remote_address().ip().to_canonical()
}

/// Decides about one connection attempt and applies the verdict. Returns the attempt with
/// its handshake guard when the handshake may start.
pub(super) fn admit(
    shared: &Arc<Shared>,
    incoming: quinn::Incoming,
) -> Option<(quinn::Incoming, HandshakeGuard, u64)> {
    let attempt = Attempt {
        source: source_ip(&incoming),
        validated: incoming.remote_address_validated(),
        may_retry: incoming.may_retry(),
    };
    let now = now_ms();
    let (verdict, load_began) = {
        let mut admission = shared.admission();
        let before = admission.under_load(now);
        let verdict = admission.on_attempt(&attempt, now);
        (verdict, !before && admission.under_load(now))
    };
    if load_began {
        tracing::warn!(
            "data plane under load: {} handshakes in progress; new connections must validate their address (QUIC Retry)",
            shared.admission().handshakes()
        );
    }
    match verdict {
        Verdict::Accept {
            ticket,
            deadline_ms,
        } => {
            let guard = HandshakeGuard {
                shared: shared.clone(),
                ticket: Some(ticket),
            };
            return Some((incoming, guard, deadline_ms));
        }
        Verdict::Retry => {
            if let Err(e) = incoming.retry() {
                shared.counters.retry_failed.fetch_add(1, Ordering::Relaxed);
                e.into_incoming().ignore();
            }
        }
        Verdict::Refuse => incoming.refuse(),
        Verdict::Ignore => incoming.ignore(),
    }
    tracing::trace!(source = %attempt.source, validated = attempt.validated, "data-plane attempt: {}", verdict.as_str());
    None
}

/// A handshake in progress; gives its place back when dropped (as failed) unless it ended
/// otherwise.
#[derive(Debug)]
pub(super) struct HandshakeGuard {
    /// The state holding the count.
    shared: Arc<Shared>,
    /// The handshake, until it ends.
    ticket: Option<Ticket>,
}

impl HandshakeGuard {
    /// The handshake did not complete by its deadline.
    pub(super) fn timed_out(mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.shared
                .admission()
                .on_handshake_end(ticket, HandshakeEnd::TimedOut);
        }
    }

    /// The handshake completed with `key`: a slot, or why not.
    pub(super) fn establish(mut self, key: PublicKey) -> Result<SlotGuard, SlotRefusal> {
        let ticket = self.ticket.take().ok_or(SlotRefusal::UnknownTicket)?;
        let slot = self.shared.admission().on_established(ticket, key)?;
        Ok(SlotGuard {
            shared: self.shared.clone(),
            slot,
        })
    }
}

impl Drop for HandshakeGuard {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.shared
                .admission()
                .on_handshake_end(ticket, HandshakeEnd::Failed);
        }
    }
}

/// A connection slot, given back when dropped.
#[derive(Debug)]
pub(super) struct SlotGuard {
    /// The state holding the slot.
    shared: Arc<Shared>,
    /// The slot.
    slot: SlotId,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.shared.admission().on_closed(self.slot);
    }
}

/// Appends the data-plane metrics to `out` (OpenMetrics text, no `# EOF`).
pub(super) fn encode_metrics(shared: &Shared, out: &mut String) {
    let (stats, handshakes, connections): (AdmissionStats, u32, u32) = {
        let admission = shared.admission();
        (
            admission.stats(),
            admission.handshakes(),
            admission.connections(),
        )
    };
    let mut registry = Registry::with_prefix("meshnode_dataplane");
    let counters: [(&str, &str, u64); 10] = [
        (
            "handshakes_accepted",
            "Connection attempts admitted to a handshake",
            stats.accepted,
        ),
        (
            "handshakes_retried",
            "Connection attempts answered with a Retry (address validation)",
            stats.retried,
        ),
        (
            "handshakes_refused",
            "Connection attempts refused",
            stats.refused,
        ),
        (
            "handshakes_ignored",
            "Connection attempts dropped without an answer",
            stats.ignored,
        ),
        (
            "handshakes_timed_out",
            "Handshakes abandoned at the handshake timeout",
            stats.timed_out,
        ),
        (
            "handshakes_failed",
            "Handshakes that failed (bad certificate, closed, ...)",
            stats.failed,
        ),
        (
            "connections_established",
            "Connections that completed the handshake and took a slot",
            stats.established,
        ),
        (
            "connections_refused",
            "Connections that completed the handshake but got no slot",
            stats.slot_refused,
        ),
        (
            "connections_idle_closed",
            "Connections closed because no stream was open",
            shared.counters.idle_closed.load(Ordering::Relaxed),
        ),
        (
            "retries_failed",
            "Retries quinn could not send",
            shared.counters.retry_failed.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, value) in counters {
        registry.register(name, help, ConstCounter::new(value));
    }
    let gauges: [(&str, &str, u32); 3] = [
        (
            "handshakes_in_progress",
            "Handshakes in progress",
            handshakes,
        ),
        (
            "handshakes_peak",
            "Most handshakes in progress at once since start",
            stats.peak_handshakes,
        ),
        ("connections", "Connections holding a slot", connections),
    ];
    for (name, help, value) in gauges {
        registry.register(name, help, ConstGauge::new(i64::from(value)));
    }
    let _ = prometheus_client::encoding::text::encode_registry(out, &registry);
}
