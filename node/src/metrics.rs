//! Prometheus metrics served at `/metrics` on the control API.
//!
//! The actor's families live in [`Metrics`]; the data plane's transfer families in
//! [`TransferMetrics`]; the API's request families in [`ApiMetrics`]; process families are
//! read at each scrape ([`process`]). Every label takes values from a fixed set (reasons,
//! roles, states, route templates, status codes), so no peer or client can grow the number
//! of series. [`exposition`] answers in OpenMetrics or the classic Prometheus text format.

pub(crate) mod exposition;
pub(crate) mod process;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::agreements::Role;
use crate::store::Store;

/// Contracts counted per role and state at most; a count at this value means "at least".
const MAX_CONTRACTS_COUNTED: usize = 100_000;

/// Contract records written into each role and state since start, as the store writes
/// them: the decisions (requested, pending, agreed, rejected, revoked, expired). Kept by the
/// [`Store`] (every writer of a record goes through it) and read at each scrape.
#[derive(Debug, Default)]
pub(crate) struct ContractDecisions {
    /// Counts by role (provider, consumer) and state, in [`ContractState::ALL`] order.
    ///
    /// [`ContractState::ALL`]: mesh_protocol::contract::ContractState::ALL
    counts: [[AtomicU64; 6]; 2],
}

impl ContractDecisions {
    /// Counts one record that entered `state`.
    pub(crate) fn record(&self, role: Role, state: mesh_protocol::contract::ContractState) {
        let Some(index) = mesh_protocol::contract::ContractState::ALL
            .iter()
            .position(|s| *s == state)
        else {
            return;
        };
        let role = match role {
            Role::Provider => 0,
            Role::Consumer => 1,
        };
        self.counts[role][index].fetch_add(1, Ordering::Relaxed);
    }

    /// The count for `role` and `state`.
    pub(crate) fn get(&self, role: Role, state: mesh_protocol::contract::ContractState) -> u64 {
        let role = match role {
            Role::Provider => 0,
            Role::Consumer => 1,
        };
        mesh_protocol::contract::ContractState::ALL
            .iter()
            .position(|s| *s == state)
            .map_or(0, |i| self.counts[role][i].load(Ordering::Relaxed))
    }
}

impl Collector for ContractDecisions {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "contract_decisions",
            "Contract records that entered a state since start, by role and state",
            None,
            MetricType::Counter,
        )?;
        for (role, role_name) in [(Role::Provider, "provider"), (Role::Consumer, "consumer")] {
            for state in mesh_protocol::contract::ContractState::ALL {
                let labels = ContractLabels {
                    role: role_name.to_owned(),
                    state: state.as_str().to_owned(),
                };
                ConstCounter::new(self.get(role, state)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// Labels of the contract gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ContractLabels {
    /// `provider` or `consumer`.
    pub(crate) role: String,
    /// Stored state (`requested`, `pending`, `agreed`, `rejected`, `revoked`, `expired`).
    pub(crate) state: String,
}

/// Label of the decision notice counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct NoticeLabel {
    /// `applied`, `invalid` or why the notice was ignored.
    pub(crate) outcome: String,
}

/// Label of the gossip validation counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    /// `accepted`, `ignored` or `rejected` (gossipsub's validation verdicts).
    pub(crate) outcome: String,
}

/// The label of role-only families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RoleLabel {
    /// `provider` (serving) or `consumer` (fetching).
    pub(crate) role: String,
}

/// Labels of the transfer counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TransferLabels {
    /// `provider` (serving) or `consumer` (fetching).
    pub(crate) role: String,
    /// `completed`, `refused`, or what failed (`failed` for a provider; a fetch error kind
    /// such as `interrupted` or `verification` for a consumer).
    pub(crate) outcome: String,
}

/// Labels of the transfer refusal counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefusalLabels {
    /// `provider`: refusals sent; `consumer`: refusals received.
    pub(crate) role: String,
    /// The refusal code (`no_agreement`, `busy`, ...).
    pub(crate) reason: String,
}

/// Labels of the API request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ApiLabels {
    /// HTTP method (`other` for methods outside the standard set).
    pub(crate) method: String,
    /// The route template (`/v1/contracts/{id}`), or `unmatched`: never the raw path.
    pub(crate) route: String,
    /// Response status code.
    pub(crate) status: String,
}

/// The label of the API duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabel {
    /// The route template, or `unmatched`.
    pub(crate) route: String,
}

/// A histogram family with fixed buckets.
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Transfers: 10 ms to about 11 minutes, by factors of 4.
fn transfer_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 4.0, 9))
}

/// API requests: 1 ms to about 16 s, by factors of 4.
fn api_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 8))
}

/// Data-plane transfer metrics, shared by the provider and consumer sides (cheap to clone:
/// every metric is reference-counted).
#[derive(Clone, Debug)]
pub(crate) struct TransferMetrics {
    /// Bytes written on data-plane streams while serving (frames, finished or not).
    bytes_sent: Counter,
    /// Bytes of the Arrow IPC streams of completed fetches (a resumed fetch counts its
    /// whole stream).
    bytes_received: Counter,
    /// Ended transfers by role and outcome.
    transfers: Family<TransferLabels, Counter>,
    /// Duration of completed transfers by role.
    duration: HistogramFamily<RoleLabel>,
    /// Refusals sent (provider) and received (consumer), by code.
    refusals: Family<RefusalLabels, Counter>,
}

impl Default for TransferMetrics {
    fn default() -> Self {
        Self {
            bytes_sent: Counter::default(),
            bytes_received: Counter::default(),
            transfers: Family::default(),
            duration: Family::new_with_constructor(transfer_buckets),
            refusals: Family::default(),
        }
    }
}

impl TransferMetrics {
    /// Counts `bytes` written to a consumer.
    pub(crate) fn sent(&self, bytes: u64) {
        self.bytes_sent.inc_by(bytes);
    }

    /// Counts one ended transfer; `seconds` is recorded for completed ones.
    pub(crate) fn ended(&self, role: &str, outcome: &str, seconds: f64) {
        self.transfers
            .get_or_create(&TransferLabels {
                role: role.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        if outcome == "completed" {
            self.duration
                .get_or_create(&RoleLabel {
                    role: role.to_owned(),
                })
                .observe(seconds);
        }
    }

    /// Counts one refusal sent (`provider`) or received (`consumer`).
    pub(crate) fn refused(&self, role: &str, refusal: mesh_protocol::FetchRefusal) {
        self.refusals
            .get_or_create(&RefusalLabels {
                role: role.to_owned(),
                reason: refusal.as_str().to_owned(),
            })
            .inc();
    }

    /// Counts the end of one fetch of this node (the consumer side).
    pub(crate) fn fetched(
        &self,
        result: &Result<crate::dataplane::FetchOutcome, crate::dataplane::FetchError>,
        seconds: f64,
    ) {
        use crate::dataplane::FetchError;
        match result {
            Ok(outcome) => {
                self.bytes_received.inc_by(outcome.bytes);
                self.ended("consumer", "completed", seconds);
            }
            Err(FetchError::Refused(r)) => {
                self.refused("consumer", r.code);
                self.ended("consumer", "refused", seconds);
            }
            Err(e) => self.ended("consumer", e.code(), seconds),
        }
    }

    /// Appends the transfer families to `out` (OpenMetrics text, no `# EOF`).
    pub(crate) fn encode(&self, out: &mut String) {
        let mut registry = Registry::with_prefix("meshnode");
        registry.register_with_unit(
            "transfer_sent",
            "Bytes written on data-plane streams while serving products",
            Unit::Bytes,
            self.bytes_sent.clone(),
        );
        registry.register_with_unit(
            "transfer_received",
            "Arrow IPC stream bytes of completed fetches",
            Unit::Bytes,
            self.bytes_received.clone(),
        );
        registry.register(
            "transfers",
            "Transfers ended, by role and outcome",
            self.transfers.clone(),
        );
        registry.register_with_unit(
            "transfer_duration",
            "Duration of completed transfers, by role",
            Unit::Seconds,
            self.duration.clone(),
        );
        registry.register(
            "transfer_refusals",
            "Fetch refusals sent (provider) or received (consumer), by reason",
            self.refusals.clone(),
        );
        let _ = prometheus_client::encoding::text::encode_registry(out, &registry);
    }
}

/// Control-API request metrics, kept by the [`track_api`] middleware.
#[derive(Clone, Debug)]
pub(crate) struct ApiMetrics {
    /// Requests by method, route template and status.
    requests: Family<ApiLabels, Counter>,
    /// Request duration by route template.
    duration: HistogramFamily<RouteLabel>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(api_buckets),
        }
    }
}

impl ApiMetrics {
    /// Appends the API families to `out` (OpenMetrics text, no `# EOF`).
    pub(crate) fn encode(&self, out: &mut String) {
        let mut registry = Registry::with_prefix("meshnode_api");
        registry.register(
            "requests",
            "Control API requests, by method, route and status",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Control API request duration, by route",
            Unit::Seconds,
            self.duration.clone(),
        );
        let _ = prometheus_client::encoding::text::encode_registry(out, &registry);
    }
}

/// Axum middleware counting each request under its route template (from [`MatchedPath`]),
/// method and status. Installed outside authentication, so refused tokens show too.
pub(crate) async fn track_api(
    State(metrics): State<ApiMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    metrics
        .duration
        .get_or_create(&RouteLabel {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&ApiLabels {
            method: method.to_owned(),
            route,
            status: response.status().as_str().to_owned(),
        })
        .inc();
    response
}

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
    /// Open control-plane connections, set when the metrics are read.
    pub(crate) connections: Gauge,
    /// Catalog entries.
    pub(crate) catalog_size: Gauge,
    /// Bytes of catalog entries, all owners together.
    pub(crate) catalog_bytes: Gauge,
    /// Descriptors removed from a full catalog to make room for a key under its share.
    pub(crate) catalog_evicted: Counter,
    /// Audit entries the store holds (those archived to files not counted).
    pub(crate) audit_entries: Gauge,
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
    /// Second connections to a connected peer this node closed (see
    /// `mesh_protocol::peers::duplicates`).
    pub(crate) connections_duplicate: Counter,
    /// Contract requests refused over a consumer's budget, by reason: shows a flood.
    pub(crate) contract_refused: Family<ReasonLabel, Counter>,
    /// Contract follow-ups sent (status batches and resent requests): with pushed decision
    /// notices, shows how much still goes by polling.
    pub(crate) contract_polls: Counter,
    /// Decision notices this node pushed to consumers.
    pub(crate) contract_notices_sent: Counter,
    /// Decision notices received, by outcome (`applied`, `invalid` or why it was ignored).
    contract_notices: Family<NoticeLabel, Counter>,
    /// Stored contracts by role and state, counted at each scrape.
    contracts: Family<ContractLabels, Gauge>,
    /// Gossip messages by validation verdict.
    gossip_validation: Family<OutcomeLabel, Counter>,
    /// Time from a gossip message's arrival at the node to its verdict (decode, checks,
    /// signature, storage): gossipsub forwards a message only after it, so every hop of
    /// the catalog's spread pays it once.
    pub(crate) gossip_validation_seconds: Histogram,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("meshnode");
        let metrics = Self {
            peers: Gauge::default(),
            connections: Gauge::default(),
            catalog_size: Gauge::default(),
            catalog_bytes: Gauge::default(),
            catalog_evicted: Counter::default(),
            audit_entries: Gauge::default(),
            gossip_in: Counter::default(),
            gossip_out: Counter::default(),
            gossip_bytes_in: Counter::default(),
            gossip_bytes_out: Counter::default(),
            rejected: Family::default(),
            sync_rounds: Counter::default(),
            sync_entries: Counter::default(),
            connections_opened: Counter::default(),
            connections_trimmed: Counter::default(),
            connections_duplicate: Counter::default(),
            contract_refused: Family::default(),
            contract_polls: Counter::default(),
            contract_notices_sent: Counter::default(),
            contract_notices: Family::default(),
            contracts: Family::default(),
            gossip_validation: Family::default(),
            gossip_validation_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 12)),
            registry: Registry::default(),
        };
        registry.register("peers", "Connected peers", metrics.peers.clone());
        registry.register(
            "connections",
            "Open control-plane connections",
            metrics.connections.clone(),
        );
        registry.register(
            "catalog_size",
            "Products in the local catalog replica",
            metrics.catalog_size.clone(),
        );
        registry.register(
            "catalog_bytes",
            "Bytes of descriptors in the local catalog replica (bounded by max_catalog_mib)",
            metrics.catalog_bytes.clone(),
        );
        registry.register(
            "catalog_evicted",
            "Descriptors removed from a full catalog to make room for a key under its fair share",
            metrics.catalog_evicted.clone(),
        );
        registry.register(
            "audit_entries",
            "Audit entries held in the store; past twice audit_keep_entries the oldest are archived",
            metrics.audit_entries.clone(),
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
            "gossip_validation_seconds",
            "Time from a catalog gossip message's arrival to its verdict",
            metrics.gossip_validation_seconds.clone(),
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
            "connections_duplicate_closed",
            "Second connections to an already connected peer closed, such as both ends' of a simultaneous dial",
            metrics.connections_duplicate.clone(),
        );
        registry.register(
            "contract_requests_refused",
            "Contract requests refused over the consumer's budget, by reason",
            metrics.contract_refused.clone(),
        );
        registry.register(
            "contract_polls",
            "Contract follow-ups sent: status batches and resent requests",
            metrics.contract_polls.clone(),
        );
        registry.register(
            "contract_notices_sent",
            "Decision notices pushed to consumers",
            metrics.contract_notices_sent.clone(),
        );
        registry.register(
            "contract_notices_received",
            "Decision notices received, by outcome (applied, invalid, or why ignored)",
            metrics.contract_notices.clone(),
        );
        registry.register(
            "contracts",
            "Stored contracts, by role and state",
            metrics.contracts.clone(),
        );
        registry.register(
            "gossip_validation",
            "Catalog gossip messages by validation verdict (accepted, ignored, rejected)",
            metrics.gossip_validation.clone(),
        );
        // Every verdict from the start, so a rate exists before the first message.
        for outcome in ["accepted", "ignored", "rejected"] {
            let _ = metrics.gossip_validation.get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            });
        }
        Self {
            registry,
            ..metrics
        }
    }

    /// Counts one decision notice received, by `outcome`: `applied`, `invalid` or an
    /// [`mesh_protocol::contract_sync::IgnoredNotice`] label (a fixed set).
    pub(crate) fn contract_notice(&self, outcome: &'static str) {
        self.contract_notices
            .get_or_create(&NoticeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts one contract request refused over budget.
    pub(crate) fn contract_refused(&self, refusal: &mesh_protocol::budget::BudgetRefusal) {
        use mesh_protocol::budget::BudgetRefusal as B;
        let reason = match refusal {
            B::TooManyOpen { .. } => "too_many_open",
            B::TooManyLive { .. } => "too_many_live",
            B::RateLimited { .. } => "rate_limited",
            B::ProviderFull { .. } => "provider_full",
        };
        self.contract_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Exports `decisions` (kept by the store) as `meshnode_contract_decisions_total`.
    pub(crate) fn register_contract_decisions(&mut self, decisions: Arc<ContractDecisions>) {
        self.registry.register_collector(Box::new(decisions));
    }

    /// Counts one gossip message's validation verdict.
    pub(crate) fn gossip_validated(&self, verdict: &libp2p::gossipsub::MessageAcceptance) {
        use libp2p::gossipsub::MessageAcceptance as A;
        let outcome = match verdict {
            A::Accept => "accepted",
            A::Ignore => "ignored",
            A::Reject => "rejected",
        };
        self.gossip_validation
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Sets the contract gauge from the store's index (at most [`MAX_CONTRACTS_COUNTED`]
    /// per role and state, so a scrape costs a bounded number of index reads).
    pub(crate) fn count_contracts(&self, store: &Store) {
        for (role, role_name) in [(Role::Provider, "provider"), (Role::Consumer, "consumer")] {
            for state in mesh_protocol::contract::ContractState::ALL {
                let n = store.count_agreements_in(role, state, MAX_CONTRACTS_COUNTED);
                self.contracts
                    .get_or_create(&ContractLabels {
                        role: role_name.to_owned(),
                        state: state.as_str().to_owned(),
                    })
                    .set(n as i64);
            }
        }
    }

    /// Counts one rejection.
    pub(crate) fn reject(&self, reason: mesh_protocol::RejectReason) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.as_str().to_owned(),
            })
            .inc();
    }

    /// The counter of one rejection reason, for what counts outside the actor (gossipsub's
    /// inbound transform).
    pub(crate) fn reject_counter(&self, reason: mesh_protocol::RejectReason) -> Counter {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.as_str().to_owned(),
            })
            .clone()
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
    fn contract_decisions_are_exported_by_role_and_state() {
        use mesh_protocol::contract::ContractState as S;
        let mut metrics = Metrics::new();
        let decisions = Arc::new(ContractDecisions::default());
        metrics.register_contract_decisions(decisions.clone());
        decisions.record(Role::Provider, S::Agreed);
        decisions.record(Role::Provider, S::Agreed);
        decisions.record(Role::Consumer, S::Revoked);
        let text = metrics.render();
        for line in [
            "# TYPE meshnode_contract_decisions counter",
            "meshnode_contract_decisions_total{role=\"provider\",state=\"agreed\"} 2",
            "meshnode_contract_decisions_total{role=\"consumer\",state=\"revoked\"} 1",
            "meshnode_contract_decisions_total{role=\"consumer\",state=\"agreed\"} 0",
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
        // Every role and state, so rates exist before the first decision.
        assert_eq!(
            text.matches("meshnode_contract_decisions_total{").count(),
            12
        );
        let classic = exposition::Format::Prometheus.render(text).unwrap();
        assert!(classic.contains("# TYPE meshnode_contract_decisions_total counter"));
    }

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
