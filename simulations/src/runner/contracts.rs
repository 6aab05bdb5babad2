//! `contract_request` and `fetch` events: negotiations, fetches over the data plane, reading
//! the fetched files back, and their parts of the report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use mesh_node::NodeError;
use mesh_node::NodeHandle;
use mesh_node::dataplane::{Compression, DataPlane, FetchOptions, FetchOutcome};
use mesh_node::store::Store;
use mesh_node::views::ShareRequest;
use mesh_protocol::contract::{AgreementId, ContractState};
use mesh_protocol::{Filter, ProductId};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Published, Runner, rounded};
use crate::dataset;
use crate::report::{
    ContractReport, ContractsReport, LinkThroughput, TransferReport, TransfersReport,
};
use crate::stats::{Percentiles, round1};
use crate::topology::{Decision, split_product};

/// Longest wait for a contract to conclude (a `manual` decision reaching the consumer), and
/// for a fetch's contract to conclude before it starts.
const CONTRACT_WAIT: Duration = Duration::from_secs(60);

/// Reason given by a simulated operator's `reject`.
const REJECT_REASON: &str = "declined by the provider's operator";

/// A `contract_request` or a `fetch` of the timeline, in flight or done.
#[derive(Debug)]
pub(super) struct InFlight<T> {
    /// Timeline time.
    pub(super) at_ms: u64,
    /// Consumer slot.
    pub(super) consumer: usize,
    /// Provider slot.
    pub(super) provider: usize,
    /// `domain/product`.
    pub(super) product: String,
    /// The negotiation or the fetch.
    pub(super) task: JoinHandle<T>,
}

/// A `contract_request` in flight or done.
pub(super) type Negotiation = InFlight<ContractOutcome>;

/// What a negotiation ended with.
#[derive(Debug, Default)]
pub(super) struct ContractOutcome {
    /// Agreement id, hex.
    pub(super) id: Option<String>,
    /// The provider's first answer.
    pub(super) answer: Option<ContractState>,
    /// The consumer's state at the end.
    pub(super) state: Option<ContractState>,
    /// Request to answer.
    pub(super) negotiation: Option<Duration>,
    /// Request to agreed at the consumer.
    pub(super) agreed: Option<Duration>,
    /// Both parties hold the same agreement and its signatures verify.
    pub(super) verified: bool,
    /// Columns granted (consumer's view).
    pub(super) granted: Option<Vec<String>>,
    /// Canonical filter.
    pub(super) filter: Option<String>,
    /// Failure.
    pub(super) error: Option<String>,
}

/// A `fetch` in flight or done.
pub(super) type Transfer = InFlight<TransferOutcome>;

/// What a fetch ended with.
#[derive(Debug)]
pub(super) struct TransferOutcome {
    /// Time spent waiting for the contract.
    pub(super) waited: Duration,
    /// The product, the fetch's outcome and what the file holds.
    pub(super) result: Result<(ProductId, FetchOutcome, FileCheck), String>,
}

/// What a fetched file holds, read back.
#[derive(Debug)]
pub(super) struct FileCheck {
    /// Rows.
    rows: u64,
    /// Column names.
    columns: Vec<String>,
}

impl Runner<'_> {
    /// Starts a negotiation from `consumer` for `request.product`.
    pub(super) fn request_contract(
        &mut self,
        at_ms: u64,
        consumer: &str,
        request: ShareRequest,
        decision: Decision,
        decide_after: Duration,
    ) -> anyhow::Result<()> {
        let c = self.slot_of(consumer)?;
        let (provider_domain, _) = split_product(&request.product).context("validated")?;
        let p = self.slot_of(provider_domain)?;
        let Some(node) = &self.slots[c].running else {
            anyhow::bail!(
                "contract_request {consumer} -> {}: the consumer is down",
                request.product
            );
        };
        let consumer_side = (node.handle.clone(), node.store.clone());
        let provider_side = self.slots[p]
            .running
            .as_ref()
            .map(|n| (n.handle.clone(), n.store.clone()));
        let (done, concluded) = watch::channel(false);
        self.concluded
            .insert((c, request.product.clone()), concluded);
        let product = request.product.clone();
        let task = tokio::spawn(async move {
            let outcome = negotiate(
                consumer_side,
                provider_side,
                request,
                decision,
                decide_after,
            )
            .await;
            let _ = done.send(true);
            outcome
        });
        self.negotiations.push(Negotiation {
            at_ms,
            consumer: c,
            provider: p,
            product,
            task,
        });
        Ok(())
    }

    /// Starts a fetch of `product` by `consumer` over its data plane.
    pub(super) fn fetch(
        &mut self,
        at_ms: u64,
        consumer: &str,
        product: String,
    ) -> anyhow::Result<()> {
        let c = self.slot_of(consumer)?;
        let (provider_domain, _) = split_product(&product).context("validated")?;
        let p = self.slot_of(provider_domain)?;
        let plane = self.slots[c]
            .running
            .as_ref()
            .and_then(|n| n.data_plane.clone())
            .with_context(|| format!("fetch {consumer} <- {product}: the consumer is down"))?;
        let wait = self.concluded.get(&(c, product.clone())).cloned();
        self.file_counter += 1;
        let dir = self.scratch.path().join("fetched").join(consumer);
        std::fs::create_dir_all(&dir)?;
        let out = dir.join(format!(
            "{}-{}.arrow",
            self.file_counter,
            product.replace('/', "-")
        ));
        let spec = product.clone();
        let task = tokio::spawn(fetch_once(plane, spec, out, wait));
        self.transfers.push(Transfer {
            at_ms,
            consumer: c,
            provider: p,
            product,
            task,
        });
        Ok(())
    }

    fn cloud_name(&self, slot: usize) -> String {
        self.topology.clouds[self.slots[slot].cloud].name.clone()
    }

    pub(super) fn contracts_report(
        &self,
        contracts: &[(u64, usize, usize, String, ContractOutcome)],
    ) -> ContractsReport {
        let mut report = ContractsReport {
            requested: contracts.len(),
            ..ContractsReport::default()
        };
        let ms = |d: Duration| round1(d.as_secs_f64() * 1000.0);
        let mut negotiation = Vec::new();
        let mut agreed = Vec::new();
        for (at_ms, consumer, provider, product, o) in contracts {
            match o.state {
                Some(ContractState::Agreed) if o.verified => report.agreed += 1,
                Some(ContractState::Rejected) => report.rejected += 1,
                _ => report.failed += 1,
            }
            negotiation.extend(o.negotiation.map(ms));
            agreed.extend(o.agreed.map(ms));
            report.requests.push(ContractReport {
                at_ms: *at_ms,
                consumer: self.slots[*consumer].spec.domain.clone(),
                product: product.clone(),
                consumer_cloud: self.cloud_name(*consumer),
                provider_cloud: self.cloud_name(*provider),
                id: o.id.clone(),
                answer: o.answer.map(|s| s.as_str().to_owned()),
                state: o
                    .state
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_else(|| "failed".to_owned()),
                negotiation_ms: o.negotiation.map(ms),
                agreed_ms: o.agreed.map(ms),
                signatures_verified: o.verified,
                granted_columns: o.granted.clone(),
                filter: o.filter.clone(),
                error: o.error.clone(),
            });
        }
        report.negotiation_ms = Percentiles::of(&negotiation).map(rounded);
        report.agreed_ms = Percentiles::of(&agreed).map(rounded);
        report
    }

    pub(super) fn transfers_report(
        &self,
        transfers: &[(u64, usize, usize, String, TransferOutcome)],
        contracts: &[(u64, usize, usize, String, ContractOutcome)],
        published: &[Published],
    ) -> TransfersReport {
        let mut report = TransfersReport::default();
        let mut links: BTreeMap<(String, String), LinkThroughput> = BTreeMap::new();
        let matrix = self.topology.link_matrix();
        for (at_ms, consumer, provider, product, o) in transfers {
            let (from, to) = (self.slots[*provider].cloud, self.slots[*consumer].cloud);
            let mut entry = TransferReport {
                at_ms: *at_ms,
                consumer: self.slots[*consumer].spec.domain.clone(),
                product: product.clone(),
                version: None,
                from_cloud: self.cloud_name(*provider),
                to_cloud: self.cloud_name(*consumer),
                link_latency_ms: round1(matrix[from][to].latency.as_secs_f64() * 1000.0),
                rows: 0,
                expected_rows: None,
                columns: Vec::new(),
                bytes: 0,
                file_bytes: 0,
                seconds: 0.0,
                mib_s: 0.0,
                waited_ms: round1(o.waited.as_secs_f64() * 1000.0),
                verified: false,
                error: None,
            };
            match &o.result {
                Ok((id, outcome, check)) => {
                    report.completed += 1;
                    let key = id.storage_key();
                    // The agreement fetched under says which rows and columns to expect.
                    let terms = contracts
                        .iter()
                        .map(|c| &c.4)
                        .find(|c| c.id.as_deref() == Some(outcome.agreement.as_str()));
                    let data = published
                        .iter()
                        .find(|p| p.key == key && p.version == outcome.version)
                        .map(|p| p.data);
                    entry.expected_rows = match (data, terms) {
                        (Some((rows, seed)), Some(terms)) => {
                            let filter = terms.filter.as_deref().map(Filter::parse);
                            match filter.transpose() {
                                Ok(f) => dataset::count_matching(rows, seed, f.as_ref()).ok(),
                                Err(_) => None,
                            }
                        }
                        _ => None,
                    };
                    let expected_columns = terms.and_then(|t| t.granted.clone());
                    entry.version = Some(outcome.version);
                    entry.rows = outcome.rows;
                    entry.columns = check.columns.clone();
                    entry.bytes = outcome.bytes;
                    entry.file_bytes = outcome.file_bytes;
                    entry.seconds = (outcome.seconds * 1000.0).round() / 1000.0;
                    entry.mib_s = (outcome.mib_s * 100.0).round() / 100.0;
                    entry.verified = check.rows == outcome.rows
                        && entry.expected_rows == Some(outcome.rows)
                        && expected_columns.as_ref() == Some(&check.columns);
                    let link = links
                        .entry((entry.from_cloud.clone(), entry.to_cloud.clone()))
                        .or_insert_with(|| LinkThroughput {
                            from_cloud: entry.from_cloud.clone(),
                            to_cloud: entry.to_cloud.clone(),
                            fetches: 0,
                            rows: 0,
                            bytes: 0,
                            seconds: 0.0,
                            mib_s: 0.0,
                        });
                    link.fetches += 1;
                    link.rows += outcome.rows;
                    link.bytes += outcome.bytes;
                    link.seconds += outcome.seconds;
                }
                Err(e) => {
                    report.failed += 1;
                    entry.error = Some(e.clone());
                }
            }
            report.fetches.push(entry);
        }
        report.links = links
            .into_values()
            .map(|mut l| {
                if l.seconds > 0.0 {
                    l.mib_s =
                        ((l.bytes as f64 / (1 << 20) as f64 / l.seconds) * 100.0).round() / 100.0;
                }
                l.seconds = (l.seconds * 1000.0).round() / 1000.0;
                l
            })
            .collect();
        for s in &self.slots {
            if let Some(emu) = s.data_emu {
                report.wire_bytes += self.emulator.node_bytes(emu).0;
            }
        }
        report
    }
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One `contract_request`: the consumer's `share request` over `/meshnode/contract/1`, the
/// provider operator's decision when the request is pending, then the consumer's store is
/// watched until the contract is final, and both parties' copies are compared and verified.
async fn negotiate(
    consumer: (NodeHandle, Store),
    provider: Option<(NodeHandle, Store)>,
    request: ShareRequest,
    decision: Decision,
    decide_after: Duration,
) -> ContractOutcome {
    let mut out = ContractOutcome::default();
    let start = Instant::now();
    let view = match consumer.0.share_request(request).await {
        Ok(view) => view,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    out.negotiation = Some(start.elapsed());
    out.answer = Some(view.state);
    out.id = Some(view.id.clone());
    out.granted = view.granted_columns.clone();
    out.filter = view.filter.clone();
    let Ok(id) = view.id.parse::<AgreementId>() else {
        out.error = Some(format!("the node returned agreement id `{}`", view.id));
        return out;
    };
    match view.state {
        ContractState::Agreed => out.agreed = out.negotiation,
        ContractState::Pending => {
            tokio::time::sleep(decide_after).await;
            let decided = match (&provider, decision) {
                (None, _) => Err(NodeError::ActorClosed),
                (Some((p, _)), Decision::Accept) => p.share_accept(view.id.clone()).await,
                (Some((p, _)), Decision::Reject) => {
                    p.share_reject(view.id.clone(), REJECT_REASON.to_owned())
                        .await
                }
            };
            if let Err(e) = decided {
                out.error = Some(format!("the provider's operator could not decide: {e}"));
            }
        }
        _ => {}
    }
    // The consumer learns a decision by polling the provider; wait until it has.
    let deadline = start + CONTRACT_WAIT;
    loop {
        let record = consumer.1.agreement(&id).ok().flatten();
        out.state = record.map(|r| r.state_at(unix_ms()));
        match out.state {
            Some(ContractState::Agreed) => {
                out.agreed.get_or_insert_with(|| start.elapsed());
                break;
            }
            Some(s) if s.is_final() => break,
            _ if Instant::now() >= deadline => break,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    if out.state == Some(ContractState::Agreed) {
        let held = |store: &Store| {
            store
                .agreement(&id)
                .ok()
                .flatten()
                .and_then(|r| r.agreement)
        };
        let consumer_copy = held(&consumer.1);
        let provider_copy = provider.as_ref().and_then(|(_, store)| held(store));
        out.verified = match (consumer_copy, provider_copy) {
            (Some(a), Some(b)) => a == b && a.verify().is_ok_and(|terms| terms.id() == id),
            _ => false,
        };
        if !out.verified && out.error.is_none() {
            out.error = Some("the parties do not hold the same verified agreement".into());
        }
    }
    out
}

/// One `fetch`: waits for the consumer's negotiation of the product (if the timeline has
/// one), fetches the latest version over the data plane and reads the file back.
async fn fetch_once(
    plane: DataPlane,
    product: String,
    out: PathBuf,
    wait: Option<watch::Receiver<bool>>,
) -> TransferOutcome {
    let start = Instant::now();
    if let Some(mut concluded) = wait {
        let _ = tokio::time::timeout(CONTRACT_WAIT, concluded.wait_for(|done| *done)).await;
    }
    let waited = start.elapsed();
    let result = async {
        let descriptor = plane.resolve_product(&product).map_err(|e| e.to_string())?;
        let id = descriptor.id();
        let outcome = plane
            .fetch(FetchOptions {
                product: id.clone(),
                out: out.clone(),
                agreement: None,
                version: None,
                compression: Compression::None,
                provider_addr: None,
                force: false,
                format: Default::default(),
                progress: None,
                narrowing: None,
                connections: None,
            })
            .await
            .map_err(|e| format!("{e} ({})", e.code()))?;
        let check = tokio::task::spawn_blocking(move || read_back(&out))
            .await
            .map_err(|e| e.to_string())??;
        Ok((id, outcome, check))
    }
    .await;
    TransferOutcome { waited, result }
}

/// Rows and columns of a fetched Arrow IPC file.
fn read_back(path: &std::path::Path) -> Result<FileCheck, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader = arrow::ipc::reader::FileReader::try_new(file, None).map_err(|e| e.to_string())?;
    let columns = reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut rows = 0;
    for batch in reader {
        rows += batch.map_err(|e| e.to_string())?.num_rows() as u64;
    }
    Ok(FileCheck { rows, columns })
}
