//! Prometheus metrics served at `/metrics` on the control API.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label for rejected messages.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    /// Reject reason (`bad_signature`, `stale`, ...).
    pub(crate) reason: String,
}

/// Every metric the node exports. Owned by the actor; rendering happens on request.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Registry that renders the text format.
    registry: Registry,
    /// Connected peers.
    pub(crate) peers: Gauge,
    /// Catalog entries.
    pub(crate) catalog_size: Gauge,
    /// Gossip messages received.
    pub(crate) gossip_in: Counter,
    /// Gossip messages published by this node.
    pub(crate) gossip_out: Counter,
    /// Gossip bytes received.
    pub(crate) gossip_bytes_in: Counter,
    /// Gossip bytes published.
    pub(crate) gossip_bytes_out: Counter,
    /// Messages rejected (gossip and sync), by reason.
    pub(crate) rejected: Family<ReasonLabel, Counter>,
    /// Anti-entropy rounds completed.
    pub(crate) sync_rounds: Counter,
    /// Catalog entries learnt through sync rather than gossip.
    pub(crate) sync_entries: Counter,
    /// Control-plane connections established (either direction).
    pub(crate) connections_opened: Counter,
    /// Unused connections this node closed (see `Node::trim_connections`).
    pub(crate) connections_trimmed: Counter,
    /// Contract requests refused over a consumer's budget, by reason: shows a flood.
    pub(crate) contract_refused: Family<ReasonLabel, Counter>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("meshnode");
        let metrics = Self {
            peers: Gauge::default(),
            catalog_size: Gauge::default(),
            gossip_in: Counter::default(),
            gossip_out: Counter::default(),
            gossip_bytes_in: Counter::default(),
            gossip_bytes_out: Counter::default(),
            rejected: Family::default(),
            sync_rounds: Counter::default(),
            sync_entries: Counter::default(),
            connections_opened: Counter::default(),
            connections_trimmed: Counter::default(),
            contract_refused: Family::default(),
            registry: Registry::default(),
        };
        registry.register("peers", "Connected peers", metrics.peers.clone());
        registry.register(
            "catalog_size",
            "Products in the local catalog replica",
            metrics.catalog_size.clone(),
        );
        registry.register(
            "gossip_messages_in",
            "Catalog gossip messages received",
            metrics.gossip_in.clone(),
        );
        registry.register(
            "gossip_messages_out",
            "Catalog gossip messages published",
            metrics.gossip_out.clone(),
        );
        registry.register(
            "gossip_bytes_in",
            "Catalog gossip bytes received",
            metrics.gossip_bytes_in.clone(),
        );
        registry.register(
            "gossip_bytes_out",
            "Catalog gossip bytes published",
            metrics.gossip_bytes_out.clone(),
        );
        registry.register(
            "messages_rejected",
            "Gossip and sync messages rejected, by reason",
            metrics.rejected.clone(),
        );
        registry.register(
            "sync_rounds",
            "Anti-entropy rounds completed",
            metrics.sync_rounds.clone(),
        );
        registry.register(
            "sync_entries",
            "Catalog entries learnt through anti-entropy",
            metrics.sync_entries.clone(),
        );
        registry.register(
            "connections_opened",
            "Control-plane connections established, inbound and outbound",
            metrics.connections_opened.clone(),
        );
        registry.register(
            "connections_trimmed",
            "Connections closed because neither gossip nor requests used them",
            metrics.connections_trimmed.clone(),
        );
        registry.register(
            "contract_requests_refused",
            "Contract requests refused over the consumer's budget, by reason",
            metrics.contract_refused.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Counts one contract request refused over budget.
    pub(crate) fn contract_refused(&self, refusal: &mesh_protocol::budget::BudgetRefusal) {
        use mesh_protocol::budget::BudgetRefusal as B;
        let reason = match refusal {
            B::TooManyOpen { .. } => "too_many_open",
            B::RateLimited { .. } => "rate_limited",
            B::ProviderFull { .. } => "provider_full",
        };
        self.contract_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts one rejection.
    pub(crate) fn reject(&self, reason: mesh_protocol::RejectReason) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.as_str().to_owned(),
            })
            .inc();
    }

    /// Rejections by reason, for `status`.
    pub(crate) fn rejected_counts(&self) -> std::collections::BTreeMap<String, u64> {
        mesh_protocol::RejectReason::ALL
            .iter()
            .map(|r| {
                let n = self
                    .rejected
                    .get_or_create(&ReasonLabel {
                        reason: r.as_str().to_owned(),
                    })
                    .get();
                (r.as_str().to_owned(), n)
            })
            .collect()
    }

    /// Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_protocol::budget::BudgetRefusal;

    #[test]
    fn contract_refusals_are_counted_by_reason() {
        let metrics = Metrics::new();
        let open = BudgetRefusal::TooManyOpen { open: 32, max: 32 };
        metrics.contract_refused(&open);
        metrics.contract_refused(&open);
        metrics.contract_refused(&BudgetRefusal::RateLimited {
            retry_after_ms: 100,
        });
        let text = metrics.render();
        assert!(
            text.contains("meshnode_contract_requests_refused_total{reason=\"too_many_open\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("meshnode_contract_requests_refused_total{reason=\"rate_limited\"} 1"),
            "{text}"
        );
    }
}
