//! The timeline: events run at their time, publishes, partitions, kills and forgeries.

use std::time::Duration;

use anyhow::Context;
use mesh_node::NodeError;
use mesh_node::views::{ProposeRequest, PublishRequest, ShareRequest};
use mesh_protocol::descriptor::{ColumnSchema, ContentDigest, Policy, Sla, Status};
use mesh_protocol::wire::GossipMessage;
use mesh_protocol::{ProductDescriptor, PublicKey, Signed};
use rand::seq::IndexedRandom;
use tokio::time::Instant;

use super::{FORGED_TITLE, FORGED_VERSION, Publish, Runner};
use crate::dataset;
use crate::topology::Action;

/// Timeline steps after expanding `publish_random`.
#[derive(Clone, Debug)]
enum Step {
    Action(Action),
    PublishAny { rows: usize, n: usize },
}

impl Runner<'_> {
    /// Runs the timeline's events at `t0 + at_ms`; an event that fails is listed as skipped.
    pub(super) async fn timeline(&mut self, t0: Instant) {
        let mut steps: Vec<(u64, Step)> = Vec::new();
        let mut n = 0;
        for e in &self.topology.events {
            match &e.action {
                Action::PublishRandom {
                    count,
                    every_ms,
                    rows,
                } => {
                    for i in 0..*count {
                        steps.push((
                            e.at_ms + i as u64 * every_ms,
                            Step::PublishAny { rows: *rows, n },
                        ));
                        n += 1;
                    }
                }
                other => steps.push((e.at_ms, Step::Action(other.clone()))),
            }
        }
        steps.sort_by_key(|(at, _)| *at);
        for (at_ms, step) in steps {
            tokio::time::sleep_until(t0 + Duration::from_millis(at_ms)).await;
            if let Err(e) = self.execute(at_ms, t0, step).await {
                self.skipped.push(format!("{at_ms} ms: {e:#}"));
            }
        }
    }

    async fn execute(&mut self, at_ms: u64, t0: Instant, step: Step) -> anyhow::Result<()> {
        let mark = |r: &mut Self, label: String| {
            r.marks.push((t0.elapsed().as_secs_f64() * 1000.0, label));
        };
        match step {
            Step::PublishAny { rows, n } => {
                let live = self.member_slots();
                let Some(&slot) = live.choose(&mut self.rng) else {
                    anyhow::bail!("publish_random: no live node");
                };
                let request = PublishRequest {
                    name: format!("bench-{n}"),
                    ..PublishRequest::default()
                };
                self.publish(slot, request, rows, at_ms)?;
            }
            Step::Action(action) => match action {
                Action::Publish {
                    domain,
                    product,
                    rows,
                    approval,
                    purposes,
                    restricted,
                } => {
                    let slot = self.slot_of(&domain)?;
                    let request = PublishRequest {
                        name: product,
                        approval: approval.map(|a| a.to_string()),
                        purposes,
                        restricted,
                        ..PublishRequest::default()
                    };
                    self.publish(slot, request, rows, at_ms)?;
                }
                Action::PublishRandom { .. } => unreachable!("expanded"),
                Action::ContractRequest {
                    consumer,
                    product,
                    purpose,
                    columns,
                    filter,
                    days,
                    decision,
                    decide_after_ms,
                } => {
                    let request = ShareRequest {
                        product: product.clone(),
                        purpose,
                        columns,
                        filter,
                        days,
                        valid_for_secs: None,
                        all_columns_including_future: false,
                    };
                    self.request_contract(
                        at_ms,
                        &consumer,
                        request,
                        decision,
                        Duration::from_millis(decide_after_ms),
                    )?;
                }
                Action::Fetch { consumer, product } => self.fetch(at_ms, &consumer, product)?,
                Action::Partition { a, b } => {
                    let (ia, ib) = (self.cloud_of(&a)?, self.cloud_of(&b)?);
                    self.emulator.set_partitioned(ia, ib, true);
                    mark(self, format!("partition {a}|{b}"));
                }
                Action::Heal { a, b } => {
                    let what = match (a, b) {
                        (Some(a), Some(b)) => {
                            let (ia, ib) = (self.cloud_of(&a)?, self.cloud_of(&b)?);
                            self.emulator.set_partitioned(ia, ib, false);
                            format!("{a}|{b}")
                        }
                        _ => {
                            let n = self.topology.clouds.len();
                            for x in 0..n {
                                for y in 0..n {
                                    self.emulator.set_partitioned(x, y, false);
                                }
                            }
                            "all".to_owned()
                        }
                    };
                    self.heals.push((at_ms, Instant::now(), what.clone()));
                    mark(self, format!("heal {what}"));
                }
                Action::Kill { domain } => {
                    let slot = self.slot_of(&domain)?;
                    let node = self.slots[slot]
                        .running
                        .take()
                        .with_context(|| format!("kill: `{domain}` is not running"))?;
                    node.kill().await;
                    mark(self, format!("kill {domain}"));
                }
                Action::Restart { domain } => {
                    let slot = self.slot_of(&domain)?;
                    anyhow::ensure!(
                        self.slots[slot].running.is_none(),
                        "restart: `{domain}` is running"
                    );
                    self.start_slot(slot).await?;
                    mark(self, format!("restart {domain}"));
                }
                Action::Join { domain, cloud } => {
                    self.join(at_ms, &domain, &cloud).await?;
                    mark(self, format!("join {domain}"));
                }
                Action::Amend {
                    by,
                    signers,
                    restrict_tags,
                    require,
                    max_contract_days,
                    purposes,
                    summary,
                } => {
                    let request = ProposeRequest {
                        restrict_tags,
                        require,
                        max_contract_days,
                        purposes,
                        summary,
                        ..ProposeRequest::default()
                    };
                    self.amend(at_ms, by, signers, request)?;
                    mark(self, "amend".to_owned());
                }
                Action::Remove { domain, by, reason } => {
                    self.remove(at_ms, &domain, &by, reason)?;
                    mark(self, format!("remove {domain}"));
                }
                Action::InjectForgery {
                    victim,
                    product,
                    via,
                } => {
                    let slot = self.slot_of(&victim)?;
                    let key = self.slots[slot].key;
                    let sent = self.inject_forgery(key, &victim, &product).await;
                    if let Err(e) = &sent {
                        tracing::warn!("forgery not sent: {e}");
                    }
                    self.forgeries
                        .push((at_ms, victim, key, product, sent.is_ok(), via));
                }
            },
        }
        Ok(())
    }

    fn publish(
        &mut self,
        slot: usize,
        mut request: PublishRequest,
        rows: usize,
        at_ms: u64,
    ) -> anyhow::Result<()> {
        let Some(node) = &self.slots[slot].running else {
            anyhow::bail!(
                "publish {}/{}: the node is down",
                self.slots[slot].spec.domain,
                request.name
            );
        };
        self.file_counter += 1;
        let path = self
            .scratch
            .path()
            .join(format!("publish-{}.arrow", self.file_counter));
        let data_seed = self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ self.file_counter;
        request.from = path.display().to_string();
        let handle = node.handle.clone();
        // The data is generated in the task, so a large data set does not hold up the
        // timeline.
        let task = tokio::spawn(async move {
            let written =
                tokio::task::spawn_blocking(move || dataset::write_arrow(&path, rows, data_seed))
                    .await;
            match written {
                Ok(Ok(())) => handle.publish(request).await,
                Ok(Err(e)) => Err(NodeError::Internal(format!("generating the data: {e:#}"))),
                Err(e) => Err(NodeError::Internal(format!("generating the data: {e}"))),
            }
        });
        self.publishes.push(Publish {
            slot,
            at_ms,
            data: (rows, data_seed),
            during_partition: self.emulator.any_partition(),
            task,
        });
        Ok(())
    }

    async fn inject_forgery(
        &self,
        victim: PublicKey,
        domain: &str,
        product: &str,
    ) -> anyhow::Result<()> {
        let attacker = self.attacker.as_ref().context("no attacker")?;
        let forged = ProductDescriptor {
            owner: victim,
            domain: domain.to_owned(),
            name: product.to_owned(),
            version: FORGED_VERSION,
            title: FORGED_TITLE.to_owned(),
            description: "claims another domain's key".to_owned(),
            tags: Vec::new(),
            schema: vec![ColumnSchema {
                name: "id".into(),
                data_type: "Int64".into(),
                nullable: false,
            }],
            rows: 1,
            bytes: 1,
            digest: ContentDigest([0; 32]),
            published_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            sla: Sla::default(),
            policy: Policy::default(),
            lineage: Vec::new(),
            data_addr: None,
            status: Status::Active,
            stewardship: Default::default(),
        };
        let envelope = Signed::sign(&attacker.identity, &forged);
        attacker
            .swarm
            .publish(GossipMessage::Descriptor(envelope).to_bytes())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}
