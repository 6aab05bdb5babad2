//! `join`, `amend` and `remove` events: admissions and motions, and how long each change took
//! to reach the live members.

use std::time::Duration;

use anyhow::Context;
use mesh_node::NodeHandle;
use mesh_node::views::{ProposeRequest, RemoveRequest};
use rand::seq::IndexedRandom;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Runner, rounded};
use crate::cluster::Change;
use crate::report::GovernanceReport;
use crate::stats::{Percentiles, round1};

/// Longest wait for a signer to hold a motion before it signs (gossip, or sync after a heal).
const MOTION_WAIT: Duration = Duration::from_secs(60);

/// A membership change or amendment whose proposal and signatures are done.
#[derive(Debug)]
pub(super) struct GovernanceDone {
    /// The step.
    pub(super) step: GovernanceStep,
    /// The change every member then applies, or why the proposal or a signature failed.
    pub(super) outcome: Result<Change, String>,
}

/// A membership change or amendment in flight or done.
#[derive(Debug)]
pub(super) struct GovernanceStep {
    /// Timeline time of the event.
    pub(super) at_ms: u64,
    /// What it does, for the report.
    pub(super) what: String,
    /// When the event ran.
    pub(super) started: Instant,
    /// Whether a partition was active then.
    pub(super) during_partition: bool,
    /// The slot it removes, which is not expected to apply it.
    pub(super) removes: Option<usize>,
    /// Proposes and signs; yields the change every member then applies.
    pub(super) task: JoinHandle<Result<Change, String>>,
}

impl Runner<'_> {
    /// `join`: adds `domain`'s node in `cloud`, bootstrapped to live members, one of which
    /// admits it.
    pub(super) async fn join(
        &mut self,
        at_ms: u64,
        domain: &str,
        cloud: &str,
    ) -> anyhow::Result<()> {
        let cloud = self.cloud_of(cloud)?;
        let live = self.member_slots();
        let picks: Vec<usize> = live
            .sample(
                &mut self.rng,
                self.topology.settings.bootstrap_degree.min(live.len()),
            )
            .copied()
            .collect();
        let admitter = *picks
            .first()
            .context("join: no live member to admit the domain")?;
        let started = Instant::now();
        let during_partition = self.emulator.any_partition();
        let slot = self.add_slot(domain, cloud, &picks).await?;
        let key = self.slots[slot].key;
        // A member admits it (what its answer to a join ticket does), and the
        // newcomer starts from the charter and the votes it was given.
        let handle = self.slots[admitter]
            .running
            .as_ref()
            .context("join: the admitting member is down")?
            .handle
            .clone();
        let admitted = handle
            .admit(mesh_protocol::governance::Member {
                key,
                domain: domain.to_owned(),
            })
            .await;
        let (outcome, votes) = match admitted {
            Ok((_, votes)) => (Ok(Change::Admitted(key)), votes),
            Err(e) => (
                Err(format!(
                    "admission by {}: {e}",
                    self.slots[admitter].spec.domain
                )),
                Vec::new(),
            ),
        };
        self.slots[slot].spec.votes = votes;
        self.governance.push(GovernanceStep {
            at_ms,
            what: format!("admit {domain} (by {})", self.slots[admitter].spec.domain),
            started,
            during_partition,
            removes: None,
            task: tokio::spawn(async move { outcome }),
        });
        self.start_slot(slot).await?;
        Ok(())
    }

    /// `amend`: `by` proposes the amendment and `signers` sign it once they hold it.
    pub(super) fn amend(
        &mut self,
        at_ms: u64,
        by: String,
        signers: Vec<String>,
        request: ProposeRequest,
    ) -> anyhow::Result<()> {
        let what = format!(
            "amend{} (by {})",
            if request.restrict_tags.is_empty() {
                String::new()
            } else {
                format!(" restricting {}", request.restrict_tags.join(", "))
            },
            std::iter::once(&by)
                .chain(&signers)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        let proposer = self.handle_of(&by)?;
        let others = signers
            .iter()
            .map(|d| self.handle_of(d).map(|h| (d.clone(), h)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let task = tokio::spawn(async move {
            let motion = proposer
                .propose(request)
                .await
                .map_err(|e| format!("proposal: {e}"))?;
            let version = match &motion.action {
                mesh_protocol::governance::Action::Amend { policies, .. } => policies.version,
                other => return Err(format!("proposed a {} motion", other.kind())),
            };
            sign_when_held(&motion.id, others).await?;
            Ok(Change::Policies(version))
        });
        self.governance.push(GovernanceStep {
            at_ms,
            what,
            started: Instant::now(),
            during_partition: self.emulator.any_partition(),
            removes: None,
            task,
        });
        Ok(())
    }

    /// `remove`: the first of `by` proposes removing `domain` and the others sign it once they
    /// hold it; the removed node keeps running.
    pub(super) fn remove(
        &mut self,
        at_ms: u64,
        domain: &str,
        by: &[String],
        reason: String,
    ) -> anyhow::Result<()> {
        let slot = self.slot_of(domain)?;
        let key = self.slots[slot].key;
        let mut handles = by
            .iter()
            .map(|d| self.handle_of(d).map(|h| (d.clone(), h)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (_, proposer) = handles.remove(0);
        let request = RemoveRequest {
            member: domain.to_owned(),
            reason,
        };
        let task = tokio::spawn(async move {
            let motion = proposer
                .remove_member(request)
                .await
                .map_err(|e| format!("proposal: {e}"))?;
            sign_when_held(&motion.id, handles).await?;
            Ok(Change::Removed(key))
        });
        self.slots[slot].removed = true;
        self.governance.push(GovernanceStep {
            at_ms,
            what: format!("remove {domain} (by {})", by.join(", ")),
            started: Instant::now(),
            during_partition: self.emulator.any_partition(),
            removes: Some(slot),
            task,
        });
        Ok(())
    }

    /// The control handle of `domain`'s running node.
    fn handle_of(&self, domain: &str) -> anyhow::Result<NodeHandle> {
        let slot = self.slot_of(domain)?;
        Ok(self.slots[slot]
            .running
            .as_ref()
            .with_context(|| format!("`{domain}` is down"))?
            .handle
            .clone())
    }

    /// How long each membership change and amendment took to reach the live members.
    pub(super) fn governance_report(&self, changes: &[GovernanceDone]) -> Vec<GovernanceReport> {
        let tracker = self.tracker.lock().expect("lock");
        let members = self.member_slots();
        changes
            .iter()
            .map(
                |GovernanceDone {
                     step:
                         GovernanceStep {
                             at_ms,
                             what,
                             started,
                             during_partition,
                             removes,
                             ..
                         },
                     outcome,
                 }| {
                    let mut report = GovernanceReport {
                        at_ms: *at_ms,
                        what: what.clone(),
                        during_partition: *during_partition,
                        carried: false,
                        error: None,
                        carried_after_ms: None,
                        expected: 0,
                        reached: 0,
                        spread_ms: None,
                        all_ms: None,
                    };
                    let change = match outcome {
                        Ok(c) => *c,
                        Err(e) => {
                            report.error = Some(e.clone());
                            return report;
                        }
                    };
                    // The newcomer of an admission learns it from its join answer, not a vote.
                    let newcomer =
                        |i: usize| matches!(change, Change::Admitted(k) if k == self.slots[i].key);
                    let applied: Vec<(usize, Instant)> = (0..self.slots.len())
                        .filter(|&i| Some(i) != *removes && !newcomer(i))
                        .filter_map(|i| tracker.changed_at(i, change).map(|t| (i, t)))
                        .collect();
                    let Some(first) = applied.iter().map(|(_, t)| *t).min() else {
                        return report;
                    };
                    report.carried = true;
                    report.carried_after_ms = Some(round1(
                        first.saturating_duration_since(*started).as_secs_f64() * 1000.0,
                    ));
                    let expected: Vec<usize> = members
                        .iter()
                        .copied()
                        .filter(|&i| !newcomer(i) && self.slots[i].started <= first)
                        .collect();
                    let samples: Vec<f64> = expected
                        .iter()
                        .filter_map(|i| applied.iter().find(|(j, _)| j == i))
                        .map(|(_, t)| t.saturating_duration_since(first).as_secs_f64() * 1000.0)
                        .collect();
                    report.expected = expected.len();
                    report.reached = samples.len();
                    report.spread_ms = Percentiles::of(&samples).map(rounded);
                    report.all_ms = (samples.len() == expected.len())
                        .then(|| round1(samples.iter().copied().fold(0.0, f64::max)));
                    report
                },
            )
            .collect()
    }
}

/// Each of `signers` signs motion `id` once it holds it (gossip, or sync after a heal), as
/// an operator signs what `governance status` shows.
async fn sign_when_held(id: &str, signers: Vec<(String, NodeHandle)>) -> Result<(), String> {
    for (domain, handle) in signers {
        let deadline = Instant::now() + MOTION_WAIT;
        loop {
            let held = handle
                .motions()
                .await
                .map_err(|e| format!("{domain}: {e}"))?
                .iter()
                .any(|m| m.id == id);
            if held {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{domain} never received motion {}",
                    &id[..16.min(id.len())]
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        handle
            .sign_motion(id.to_owned())
            .await
            .map_err(|e| format!("{domain} signing: {e}"))?;
    }
    Ok(())
}
