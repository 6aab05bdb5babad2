//! Settling and the report: awaiting the timeline's tasks, waiting for convergence, reading
//! every live node's catalog, metrics and status.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use mesh_protocol::{ProductId, PublicKey};
use tokio::time::Instant;

use super::contracts::{ContractOutcome, TransferOutcome};
use super::governance::GovernanceDone;
use super::probe::Probe;
use super::{FORGED_TITLE, FORGED_VERSION, Published, Runner, rounded};
use crate::cluster::Change;
use crate::report::{
    ContractsReport, ForgeryReport, HealReport, PublishReport, Report, Series, TransfersReport,
};
use crate::stats::{Percentiles, metric, round1};

impl Runner<'_> {
    /// Awaits the timeline's tasks, waits for convergence and builds the report.
    pub(super) async fn settle(
        &mut self,
        t0: Instant,
        setup_ms: u64,
        probe: Probe,
    ) -> anyhow::Result<Report> {
        // Publishes done.
        let mut published = Vec::new();
        for p in std::mem::take(&mut self.publishes) {
            match p.task.await {
                Ok(Ok(view)) => {
                    let key = ProductId {
                        owner: PublicKey::from_hex(&view.owner)?,
                        name: view.name.clone(),
                    }
                    .storage_key();
                    // The publisher's own catalog update is the origin.
                    let origin = self.wait_origin(p.slot, &key, view.version).await;
                    published.push(Published {
                        slot: p.slot,
                        at_ms: p.at_ms,
                        data: p.data,
                        during_partition: p.during_partition,
                        product: view.product.clone(),
                        key,
                        version: view.version,
                        origin,
                    });
                }
                Ok(Err(e)) => self
                    .skipped
                    .push(format!("{} ms: publish failed: {e}", p.at_ms)),
                Err(e) => self
                    .skipped
                    .push(format!("{} ms: publish task: {e}", p.at_ms)),
            }
        }
        let mut contracts = Vec::new();
        for n in std::mem::take(&mut self.negotiations) {
            let outcome = n.task.await.unwrap_or_else(|e| ContractOutcome {
                error: Some(format!("negotiation task: {e}")),
                ..ContractOutcome::default()
            });
            contracts.push((n.at_ms, n.consumer, n.provider, n.product, outcome));
        }
        let mut transfers = Vec::new();
        for t in std::mem::take(&mut self.transfers) {
            let outcome = t.task.await.unwrap_or_else(|e| TransferOutcome {
                waited: Duration::ZERO,
                result: Err(format!("fetch task: {e}")),
            });
            transfers.push((t.at_ms, t.consumer, t.provider, t.product, outcome));
        }
        let mut changes = Vec::new();
        for mut step in std::mem::take(&mut self.governance) {
            let outcome = (&mut step.task)
                .await
                .unwrap_or_else(|e| Err(format!("governance task: {e}")));
            changes.push(GovernanceDone { step, outcome });
        }
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        // A removed domain's products leave every member's catalog.
        for p in published.iter().filter(|p| !self.slots[p.slot].removed) {
            let v = expected.entry(p.key.clone()).or_default();
            *v = (*v).max(p.version);
        }
        let expected_ref = &expected;
        let wanted: Vec<Change> = changes
            .iter()
            .filter_map(|c| c.outcome.as_ref().ok().copied())
            .collect();
        let wanted_ref = &wanted;
        self.wait_until(
            Duration::from_millis(self.topology.settings.settle_ms),
            |r| Box::pin(async move { r.all_hold(expected_ref) && r.all_applied(wanted_ref) }),
        )
        .await;
        let run_ms = t0.elapsed().as_millis() as u64;
        let (runtime_lag, actor_lag) = probe.finish().await;
        let mut report = self
            .report(t0, setup_ms, run_ms, &published, &expected)
            .await?;
        report.runtime_lag_ms = Percentiles::of(&runtime_lag).map(rounded);
        report.actor_lag_ms = Percentiles::of(&actor_lag).map(rounded);
        report.contracts = self.contracts_report(&contracts);
        report.governance = self.governance_report(&changes);
        report.transfers = self.transfers_report(&transfers, &contracts, &published);
        Ok(report)
    }

    async fn wait_origin(&self, slot: usize, key: &str, version: u64) -> Instant {
        for _ in 0..200 {
            if let Some(t) = self
                .tracker
                .lock()
                .expect("lock")
                .first_at(slot, key, version)
            {
                return t;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Instant::now()
    }

    fn all_hold(&self, expected: &BTreeMap<String, u64>) -> bool {
        let t = self.tracker.lock().expect("lock");
        self.member_slots()
            .into_iter()
            .all(|i| expected.iter().all(|(k, v)| t.first_at(i, k, *v).is_some()))
    }

    /// Whether every live member applied every change (the removed key's own node aside).
    fn all_applied(&self, changes: &[Change]) -> bool {
        let t = self.tracker.lock().expect("lock");
        self.member_slots().into_iter().all(|i| {
            changes.iter().all(|c| {
                matches!(c, Change::Admitted(k) if *k == self.slots[i].key)
                    || t.changed_at(i, *c).is_some()
            })
        })
    }

    async fn report(
        &mut self,
        t0: Instant,
        setup_ms: u64,
        run_ms: u64,
        published: &[Published],
        expected: &BTreeMap<String, u64>,
    ) -> anyhow::Result<Report> {
        let live = self.member_slots();
        let mut refused_non_members = 0;
        let mut refused_at: HashMap<String, u64> = HashMap::new();
        for &i in &self.live_slots() {
            let node = self.slots[i].running.as_ref().expect("live");
            if let Ok(status) = node.handle.status().await {
                refused_non_members += status.refused_non_members;
                refused_at.insert(
                    self.slots[i].spec.domain.clone(),
                    status.refused_non_members,
                );
            }
        }
        // Catalogs, metrics.
        let mut catalogs: Vec<BTreeSet<(String, String, u64)>> = Vec::new();
        let mut forged_held: HashMap<(String, String), usize> = HashMap::new();
        let mut bytes = 0.0;
        let mut messages = 0.0;
        let mut peers = Vec::new();
        for &i in &live {
            let node = self.slots[i].running.as_ref().expect("live");
            if let Ok(status) = node.handle.status().await {
                peers.push(status.peers as f64);
            }
            let catalog = node.handle.catalog().await.unwrap_or_default();
            for p in &catalog {
                if p.version == FORGED_VERSION || p.title == FORGED_TITLE {
                    *forged_held
                        .entry((p.owner.clone(), p.name.clone()))
                        .or_default() += 1;
                }
            }
            catalogs.push(
                catalog
                    .into_iter()
                    .map(|p| (p.owner, p.name, p.version))
                    .collect(),
            );
            let text = node.handle.metrics().await.unwrap_or_default();
            for name in ["gossip_bytes_in", "gossip_bytes_out"] {
                bytes += metric(&text, &format!("meshnode_{name}_total")).unwrap_or(0.0);
            }
            for name in ["gossip_messages_in", "gossip_messages_out"] {
                messages += metric(&text, &format!("meshnode_{name}_total")).unwrap_or(0.0);
            }
        }
        let same = catalogs.windows(2).all(|w| w[0] == w[1]);
        let complete = catalogs.first().is_some_and(|c| {
            expected.iter().all(|(k, v)| {
                ProductId::from_storage_key(k).is_some_and(|id| {
                    let owner = id.owner.to_hex();
                    c.iter()
                        .any(|(o, n, version)| *o == owner && *n == id.name && version >= v)
                })
            })
        });
        let tracker = self.tracker.lock().expect("lock");
        // Per publish.
        let mut all_samples = Vec::new();
        let mut publishes = Vec::new();
        let mut series = Vec::new();
        for p in published {
            let eligible: Vec<usize> = live
                .iter()
                .copied()
                .filter(|&i| i != p.slot && self.slots[i].started <= p.origin)
                .collect();
            let mut samples = Vec::new();
            for &i in &eligible {
                if let Some(at) = tracker.first_at(i, &p.key, p.version) {
                    samples.push(at.saturating_duration_since(p.origin).as_secs_f64() * 1000.0);
                }
            }
            if !p.during_partition {
                all_samples.extend_from_slice(&samples);
            }
            publishes.push(PublishReport {
                at_ms: p.at_ms,
                product: p.product.clone(),
                version: p.version,
                during_partition: p.during_partition,
                expected: eligible.len(),
                reached: samples.len(),
                convergence_ms: Percentiles::of(&samples).map(rounded),
            });
            let mut times: Vec<f64> = live
                .iter()
                .filter_map(|&i| tracker.first_at(i, &p.key, p.version))
                .map(|t| t.saturating_duration_since(t0).as_secs_f64() * 1000.0)
                .collect();
            times.sort_by(f64::total_cmp);
            let n = live.len().max(1) as f64;
            let mut points = vec![(
                p.origin.saturating_duration_since(t0).as_secs_f64() * 1000.0,
                0.0,
            )];
            for (k, t) in times.iter().enumerate() {
                points.push((*t, k as f64 / n));
                points.push((*t, (k + 1) as f64 / n));
            }
            series.push(Series {
                label: format!("{}@{}", p.product, p.version),
                points,
            });
        }
        // Per heal.
        let mut heals = Vec::new();
        for (at_ms, instant, what) in &self.heals {
            let mut due: BTreeMap<&str, u64> = BTreeMap::new();
            for p in published.iter().filter(|p| p.origin < *instant) {
                let v = due.entry(p.key.as_str()).or_default();
                *v = (*v).max(p.version);
            }
            let mut worst = Some(0.0f64);
            for &i in live.iter().filter(|&&i| self.slots[i].started <= *instant) {
                for (k, v) in &due {
                    match (tracker.first_at(i, k, *v), worst) {
                        (Some(t), Some(w)) => {
                            let ms = t.saturating_duration_since(*instant).as_secs_f64() * 1000.0;
                            worst = Some(w.max(ms));
                        }
                        _ => worst = None,
                    }
                }
            }
            heals.push(HealReport {
                at_ms: *at_ms,
                what: what.clone(),
                products: due.len(),
                converge_ms: worst.map(round1),
            });
        }
        let rejected = tracker.rejected.clone();
        let updates_via = tracker
            .updates_via
            .iter()
            .map(|(k, n)| ((*k).to_owned(), *n))
            .collect();
        drop(tracker);
        let forgeries = self
            .forgeries
            .iter()
            .map(|(at_ms, victim, key, product, sent, via)| ForgeryReport {
                at_ms: *at_ms,
                claims: format!("{victim}/{product}"),
                sent: *sent,
                refused_by_via: refused_at.get(via).copied().unwrap_or(0),
                accepted_by: forged_held
                    .get(&(key.to_hex(), product.clone()))
                    .copied()
                    .unwrap_or(0),
            })
            .collect();
        let mut wire = 0u64;
        for s in &self.slots {
            let (a, b) = self.emulator.node_bytes(s.emu);
            wire += a + b;
        }
        let n = live.len().max(1) as f64;
        let mut rejected_all: BTreeMap<String, u64> = mesh_protocol::RejectReason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), 0))
            .collect();
        rejected_all.extend(rejected);
        Ok(Report {
            topology: self.topology.name.clone(),
            seed: self.seed,
            nodes: live.len(),
            nodes_started: self.slots.len(),
            clouds: self.topology.clouds.len(),
            convergence_ms: Percentiles::of(&all_samples).map(rounded),
            publishes,
            heal_convergence_ms: heals.iter().map(|h| h.converge_ms).collect(),
            heals,
            bytes_per_node: (bytes / n).round(),
            gossip_messages_per_node: round1(messages / n),
            wire_bytes_per_node: (wire as f64 / self.slots.len().max(1) as f64).round(),
            updates_via,
            peers_per_node: Percentiles::of(&peers),
            rejected: rejected_all,
            forgeries,
            runtime_lag_ms: None,
            actor_lag_ms: None,
            contracts: ContractsReport::default(),
            transfers: TransfersReport::default(),
            skipped: self.skipped.clone(),
            converged: same && complete && !live.is_empty(),
            catalog_size: catalogs.first().map(|c| c.len()).unwrap_or(0),
            emulator: self.emulator.totals(),
            setup_ms,
            run_ms,
            series,
            marks: self.marks.clone(),
            governance: Vec::new(),
            refused_non_members,
        })
    }
}
