//! Publishing a product: the ingested file becomes a signed descriptor, a stored version
//! and a gossip message.

use std::collections::BTreeSet;
use std::time::Instant;

use mesh_protocol::catalog;
use mesh_protocol::descriptor::{
    self, ContentDigest, LineageRef, Policy, Sla, Status, Stewardship, parse_column_tags,
};
use mesh_protocol::wire::GossipMessage;
use mesh_protocol::{ProductDescriptor, ProductId, PublicKey};

use super::{IngestedProduct, Node, NodeEvent, now_ms};
use crate::config::PublishDefaults;
use crate::error::NodeError;
use crate::ingest::IngestOutcome;
use crate::views::{ProductView, PublishRequest};

impl Node {
    pub(super) async fn commit_publish(
        &mut self,
        product: IngestedProduct,
    ) -> Result<ProductView, NodeError> {
        let IngestedProduct {
            request,
            temp_file,
            outcome,
        } = product;
        let me = self.identity.public_key();
        let previous = self
            .store
            .descriptor(&ProductId {
                owner: me,
                name: request.name.clone(),
            })?
            .and_then(|(_, envelope)| envelope.decode_trusted().ok());
        if previous.is_none() && !self.owner_has_room(me) {
            return Err(NodeError::BadRequest(format!(
                "this node already publishes {} products, as many as peers keep for one key; \
                 publish a new version of an existing product instead",
                catalog::MAX_PRODUCTS_PER_OWNER
            )));
        }
        // Never reuse a version number: a store rolled back (and accepted) may remember less
        // than the catalog copy peers handed back or the files on disk.
        let version = crate::integrity::next_version([
            self.store.local_version(&request.name)?,
            previous.as_ref().map(|p| p.version),
            crate::integrity::highest_version_on_disk(&self.data_dir, &request.name)
                .map_err(|e| NodeError::Internal(e.to_string()))?,
        ])
        .ok_or_else(|| {
            NodeError::BadRequest(format!("product `{}` has no version left", request.name))
        })?;
        let restricted = self.store.restricted_columns(&request.name)?;
        let (descriptor, restricted) = next_descriptor(
            &request,
            &outcome,
            previous.as_ref(),
            restricted.as_ref(),
            Publisher {
                owner: me,
                domain: &self.config.domain,
                version,
                published_at_ms: now_ms(),
                data_addr: self.data_addr.map(|a| a.to_string()),
                defaults: &self.config.defaults,
            },
        )?;
        // The mesh's policies in force: a non-conforming product is refused with each rule
        // it breaks and what to change.
        let violations = self.governance.state.policies().check_product(&descriptor);
        if !violations.is_empty() {
            let list: Vec<String> = violations.iter().map(|v| format!("  - {v}")).collect();
            return Err(NodeError::Refused(format!(
                "cannot publish `{}`: it breaks the mesh's policies (version {}):\n{}",
                request.name,
                self.governance.state.policies().version,
                list.join("\n")
            )));
        }
        // The exact checks every peer runs (rules, limits, encoded size), before anything is
        // written: a descriptor peers would refuse is never signed into the store.
        let envelope = descriptor
            .sign_for_publication(&self.identity)
            .map_err(|e| {
                NodeError::BadRequest(format!(
                    "cannot publish `{}`: {e}; peers would refuse it, so nothing was stored",
                    request.name
                ))
            })?;
        let final_path = self.data_dir.product_file(&request.name, version);
        if let Some(parent) = final_path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| NodeError::Internal(e.to_string()))?;
        }
        std::fs::rename(&temp_file, &final_path).map_err(|e| {
            NodeError::Internal(format!("cannot move the product file into place: {e}"))
        })?;
        // The rename is durable before the store says the version exists.
        crate::keyfile::sync_parent(&final_path)
            .map_err(|e| NodeError::Internal(format!("cannot sync the product directory: {e}")))?;
        // Our own products always stay; others' make room for them while past their share.
        if self.make_room_for(&descriptor, &envelope, "local").is_err() {
            tracing::warn!(product = %descriptor.display_name(), "could not make room in the catalog (max_catalog_mib) for our own product; stored past the quota");
        }
        self.store.put_descriptor(&descriptor, &envelope)?;
        self.store.set_local_version(&request.name, version)?;
        self.store
            .set_restricted_columns(&request.name, &restricted)?;
        self.store.audit_append(
            mesh_protocol::audit::AuditKind::Publish,
            &serde_json::json!({
                "product": descriptor.display_name(),
                "version": version,
                "rows": descriptor.rows,
                "bytes": descriptor.bytes,
                "digest": descriptor.digest.to_hex(),
            }),
            now_ms(),
        )?;
        self.store.flush().await?;
        self.metrics
            .catalog_size
            .set(self.store.catalog_len() as i64);
        self.emit(NodeEvent::CatalogUpdated {
            id: descriptor.id(),
            version,
            via: "local",
            at: Instant::now(),
        });
        self.gossip(GossipMessage::Descriptor(envelope));
        Ok(ProductView::new(&descriptor, true, false))
    }
}

/// Parses `domain/product@version`.
fn parse_lineage(text: &str) -> Result<LineageRef, NodeError> {
    let bad = || {
        NodeError::BadRequest(format!(
            "lineage `{text}` is not of the form domain/product@version"
        ))
    };
    let (path, version) = text.rsplit_once('@').ok_or_else(bad)?;
    let (domain, product) = path.split_once('/').ok_or_else(bad)?;
    Ok(LineageRef {
        domain: domain.into(),
        product: product.into(),
        version: version.parse().map_err(|_| bad())?,
    })
}

/// Who publishes a new version, and when: everything [`next_descriptor`] needs beyond the
/// request, the ingest's outcome and the previous version.
#[derive(Debug)]
pub(super) struct Publisher<'a> {
    /// The owner's key.
    pub(super) owner: PublicKey,
    /// The owner's domain.
    pub(super) domain: &'a str,
    /// The new version's number.
    pub(super) version: u64,
    /// Now, in milliseconds since the Unix epoch.
    pub(super) published_at_ms: u64,
    /// The data plane's address, if it serves.
    pub(super) data_addr: Option<String>,
    /// The node's defaults for a product's first version.
    pub(super) defaults: &'a PublishDefaults,
}

/// Most columns a product remembers as restricted, in the schema or not.
pub(crate) const MAX_REMEMBERED_RESTRICTIONS: usize = 4_096;

/// The descriptor of a new version, and the columns restricted from now on. It keeps the
/// previous version's metadata, policy, lineage, stewardship and service levels unless the
/// request overrides them; a first version takes the node's defaults. A restriction stays
/// until the request lifts it (`unrestrict`): the columns restricted are those restricted
/// before (`restricted`, what the store remembers, or the previous version's when it
/// remembers nothing) and those the request names, and the descriptor lists those of them
/// its schema has, so a column that leaves the schema and comes back is restricted again.
/// Refuses a restricted column that is not in the schema, lifting a column that is not
/// restricted, an unknown approval mode, a malformed lineage reference or column
/// classification.
pub(super) fn next_descriptor(
    request: &PublishRequest,
    outcome: &IngestOutcome,
    previous: Option<&ProductDescriptor>,
    restricted: Option<&BTreeSet<String>>,
    publisher: Publisher<'_>,
) -> Result<(ProductDescriptor, BTreeSet<String>), NodeError> {
    let schema = descriptor::columns_from_arrow(&outcome.schema);
    let names = || {
        schema
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for col in &request.restricted {
        if !schema.iter().any(|c| &c.name == col) {
            return Err(NodeError::BadRequest(format!(
                "restricted column `{col}` is not in the schema of `{}`; its columns are: {}",
                request.from,
                names()
            )));
        }
    }
    let mut remembered: BTreeSet<String> = restricted.cloned().unwrap_or_default();
    if let Some(p) = previous {
        remembered.extend(p.policy.restricted_columns.iter().cloned());
    }
    for col in &request.unrestrict {
        if request.restricted.contains(col) {
            return Err(NodeError::BadRequest(format!(
                "column `{col}` is both restricted and lifted: name it in one of the two"
            )));
        }
        if !remembered.remove(col) {
            let now: Vec<&str> = remembered.iter().map(String::as_str).collect();
            return Err(NodeError::BadRequest(format!(
                "column `{col}` of `{}` is not restricted, so there is nothing to lift; \
                 restricted now: {}",
                request.name,
                if now.is_empty() {
                    "none".to_owned()
                } else {
                    now.join(", ")
                }
            )));
        }
    }
    remembered.extend(request.restricted.iter().cloned());
    if remembered.len() > MAX_REMEMBERED_RESTRICTIONS {
        return Err(NodeError::BadRequest(format!(
            "`{}` would keep {} restricted columns, past the {MAX_REMEMBERED_RESTRICTIONS} a \
             product may have: lift (--unrestrict) those that will not come back",
            request.name,
            remembered.len()
        )));
    }
    let restricted: Vec<String> = schema
        .iter()
        .filter(|c| remembered.contains(&c.name))
        .map(|c| c.name.clone())
        .collect();
    let approval = match (&request.approval, previous) {
        (Some(a), _) => a.parse().map_err(NodeError::BadRequest)?,
        (None, Some(p)) => p.policy.approval,
        (None, None) => Default::default(),
    };
    let lineage = if request.lineage.is_empty() {
        previous
            .as_ref()
            .map(|p| p.lineage.clone())
            .unwrap_or_default()
    } else {
        request
            .lineage
            .iter()
            .map(|l| parse_lineage(l))
            .collect::<Result<Vec<_>, _>>()?
    };
    let defaults = publisher.defaults;
    let inherit = |new: &Vec<String>, old: Option<&Vec<String>>| {
        if new.is_empty() {
            old.cloned().unwrap_or_default()
        } else {
            new.clone()
        }
    };
    // Inherited, a column's classification leaves with the column.
    let column_tags = if request.classify.is_empty() {
        previous
            .map(|p| {
                p.stewardship
                    .column_tags
                    .iter()
                    .filter(|t| schema.iter().any(|c| c.name == t.column))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    } else {
        parse_column_tags(&request.classify)
            .map_err(|e| NodeError::BadRequest(format!("cannot publish `{}`: {e}", request.name)))?
    };
    let descriptor = ProductDescriptor {
        owner: publisher.owner,
        domain: publisher.domain.to_owned(),
        name: request.name.clone(),
        version: publisher.version,
        title: request
            .title
            .clone()
            .or_else(|| previous.map(|p| p.title.clone()))
            .unwrap_or_else(|| request.name.clone()),
        description: request
            .description
            .clone()
            .or_else(|| previous.map(|p| p.description.clone()))
            .unwrap_or_default(),
        tags: inherit(&request.tags, previous.map(|p| &p.tags)),
        schema,
        rows: outcome.rows,
        bytes: outcome.bytes,
        digest: ContentDigest(outcome.digest),
        published_at_ms: publisher.published_at_ms,
        sla: {
            let mut sla = previous.map(|p| p.sla.clone()).unwrap_or_else(|| Sla {
                update_frequency: defaults.update_frequency.clone(),
                freshness_hours: defaults.freshness_hours,
                availability_bp: defaults.availability_bp,
            });
            if let Some(hours) = request.freshness_hours {
                sla.freshness_hours = hours;
            }
            sla
        },
        policy: Policy {
            approval,
            allowed_purposes: inherit(
                &request.purposes,
                previous.map(|p| &p.policy.allowed_purposes),
            ),
            max_contract_days: request
                .max_days
                .or_else(|| previous.map(|p| p.policy.max_contract_days))
                .unwrap_or(defaults.max_contract_days),
            restricted_columns: restricted,
        },
        lineage,
        data_addr: publisher.data_addr,
        status: Status::Active,
        stewardship: Stewardship {
            contact: request
                .contact
                .clone()
                .or_else(|| previous.map(|p| p.stewardship.contact.clone()))
                .unwrap_or_default(),
            column_tags,
        },
    };
    Ok((descriptor, remembered))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema};
    use mesh_protocol::descriptor::{Approval, ColumnTags};

    use super::*;

    fn outcome(columns: &[&str]) -> IngestOutcome {
        let fields: Vec<Field> = columns
            .iter()
            .map(|c| Field::new(*c, DataType::Int64, true))
            .collect();
        IngestOutcome {
            schema: Arc::new(Schema::new(fields)),
            rows: 10,
            batches: 1,
            bytes: 1_000,
            digest: [7; 32],
        }
    }

    fn publish(
        request: &PublishRequest,
        columns: &[&str],
        previous: Option<&ProductDescriptor>,
        version: u64,
    ) -> Result<ProductDescriptor, NodeError> {
        publish_remembering(request, columns, previous, None, version).map(|(d, _)| d)
    }

    fn publish_remembering(
        request: &PublishRequest,
        columns: &[&str],
        previous: Option<&ProductDescriptor>,
        restricted: Option<&BTreeSet<String>>,
        version: u64,
    ) -> Result<(ProductDescriptor, BTreeSet<String>), NodeError> {
        next_descriptor(
            request,
            &outcome(columns),
            previous,
            restricted,
            Publisher {
                owner: PublicKey([1; 32]),
                domain: "sales",
                version,
                published_at_ms: 1_000 * version,
                data_addr: Some("127.0.0.1:7000".into()),
                defaults: &PublishDefaults::default(),
            },
        )
    }

    fn first_version() -> ProductDescriptor {
        let request = PublishRequest {
            name: "orders".into(),
            from: "/in/orders.csv".into(),
            title: Some("Orders".into()),
            description: Some("Every order".into()),
            tags: vec!["sales".into()],
            approval: Some("manual".into()),
            purposes: vec!["analytics".into()],
            restricted: vec!["email".into(), "phone".into()],
            max_days: Some(30),
            lineage: vec!["crm/customers@3".into()],
            contact: Some("sales-data@example.com".into()),
            classify: vec!["email=pii".into()],
            freshness_hours: Some(6),
            ..PublishRequest::default()
        };
        publish(&request, &["id", "email", "phone"], None, 1).unwrap()
    }

    #[test]
    fn a_first_version_takes_the_request_and_the_nodes_defaults() {
        let v1 = first_version();
        assert_eq!(
            (v1.domain.as_str(), v1.name.as_str(), v1.version),
            ("sales", "orders", 1)
        );
        assert_eq!((v1.rows, v1.bytes, v1.digest.0), (10, 1_000, [7; 32]));
        assert_eq!(v1.policy.approval, Approval::Manual);
        assert_eq!(v1.policy.restricted_columns, ["email", "phone"]);
        assert_eq!(v1.sla.freshness_hours, 6);
        let defaults = PublishDefaults::default();
        assert_eq!(v1.sla.update_frequency, defaults.update_frequency);
        assert_eq!(v1.lineage[0].product, "customers");
        assert_eq!(v1.data_addr.as_deref(), Some("127.0.0.1:7000"));

        // Nothing asked for: the name is the title, approval is automatic.
        let bare = PublishRequest {
            name: "returns".into(),
            ..PublishRequest::default()
        };
        let d = publish(&bare, &["id"], None, 1).unwrap();
        assert_eq!(d.title, "returns");
        assert_eq!(d.policy.approval, Approval::Auto);
        assert_eq!(d.policy.max_contract_days, defaults.max_contract_days);
        assert_eq!(d.sla.freshness_hours, defaults.freshness_hours);
    }

    #[test]
    fn a_new_version_keeps_what_the_request_does_not_override() {
        let v1 = first_version();
        // Republished with nothing but the file: everything is kept, and a restricted column
        // the new schema dropped is dropped from the policy rather than refused.
        let again = PublishRequest {
            name: "orders".into(),
            ..PublishRequest::default()
        };
        let v2 = publish(&again, &["id", "email"], Some(&v1), 2).unwrap();
        assert_eq!(v2.version, 2);
        assert_eq!(
            (v2.title.as_str(), v2.description.as_str()),
            ("Orders", "Every order")
        );
        assert_eq!(v2.tags, v1.tags);
        assert_eq!(v2.policy.approval, Approval::Manual);
        assert_eq!(v2.policy.allowed_purposes, v1.policy.allowed_purposes);
        assert_eq!(v2.policy.max_contract_days, 30);
        assert_eq!(v2.policy.restricted_columns, ["email"]);
        assert_eq!(v2.lineage, v1.lineage);
        assert_eq!(v2.stewardship, v1.stewardship);
        assert_eq!(v2.sla, v1.sla);
        assert_eq!(v2.schema.len(), 2);

        // What the request names replaces the previous version's; restrictions add up.
        let changed = PublishRequest {
            name: "orders".into(),
            title: Some("All orders".into()),
            approval: Some("auto".into()),
            restricted: vec!["id".into()],
            classify: vec!["id=key".into()],
            freshness_hours: Some(1),
            ..PublishRequest::default()
        };
        let v3 = publish(&changed, &["id", "email"], Some(&v2), 3).unwrap();
        assert_eq!(v3.title, "All orders");
        assert_eq!(v3.policy.approval, Approval::Auto);
        assert_eq!(v3.policy.restricted_columns, ["id", "email"]);
        assert_eq!(
            v3.stewardship.column_tags,
            [ColumnTags {
                column: "id".into(),
                tags: vec!["key".into()]
            }]
        );
        assert_eq!(v3.sla.freshness_hours, 1);
        assert_eq!(v3.sla.update_frequency, v1.sla.update_frequency);
        assert_eq!(v3.description, "Every order");
    }

    fn names(set: &BTreeSet<String>) -> Vec<&str> {
        set.iter().map(String::as_str).collect()
    }

    #[test]
    fn a_restriction_outlives_its_column_and_stays_until_lifted() {
        let again = || PublishRequest {
            name: "orders".into(),
            ..PublishRequest::default()
        };
        let v1 = first_version();
        // v2 drops `email`: the descriptor cannot list it, the product still restricts it.
        let (v2, kept) =
            publish_remembering(&again(), &["id", "phone"], Some(&v1), None, 2).expect("v2");
        assert_eq!(v2.policy.restricted_columns, ["phone"]);
        assert_eq!(names(&kept), ["email", "phone"]);
        // v3 brings it back with nothing said: restricted again.
        let (v3, kept) = publish_remembering(
            &again(),
            &["id", "email", "phone"],
            Some(&v2),
            Some(&kept),
            3,
        )
        .expect("v3");
        assert_eq!(v3.policy.restricted_columns, ["email", "phone"]);
        assert_eq!(names(&kept), ["email", "phone"]);
        // Naming another column adds it; the others stay.
        let more = PublishRequest {
            restricted: vec!["id".into()],
            ..again()
        };
        let (v4, kept) =
            publish_remembering(&more, &["id", "email", "phone"], Some(&v3), Some(&kept), 4)
                .expect("v4");
        assert_eq!(v4.policy.restricted_columns, ["id", "email", "phone"]);
        // Lifting is said in so many words, also for a column the schema no longer has.
        let lift = PublishRequest {
            unrestrict: vec!["email".into(), "id".into()],
            ..again()
        };
        let (v5, kept) =
            publish_remembering(&lift, &["id", "phone"], Some(&v4), Some(&kept), 5).expect("v5");
        assert_eq!(v5.policy.restricted_columns, ["phone"]);
        assert_eq!(names(&kept), ["phone"]);
        // A classification leaves with its column instead of blocking the publish.
        let (v6, _) = publish_remembering(&again(), &["id"], Some(&v1), None, 6).expect("v6");
        assert!(v6.stewardship.column_tags.is_empty());
        assert!(v6.policy.restricted_columns.is_empty());

        // Lifting what is not restricted, or restricting and lifting one column, is refused.
        let refused = |request: PublishRequest| match publish_remembering(
            &request,
            &["id", "phone"],
            Some(&v5),
            Some(&kept),
            7,
        ) {
            Err(NodeError::BadRequest(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let message = refused(PublishRequest {
            unrestrict: vec!["email".into()],
            ..again()
        });
        assert!(
            message.contains("`email` of `orders` is not restricted")
                && message.contains("restricted now: phone"),
            "{message}"
        );
        let message = refused(PublishRequest {
            restricted: vec!["phone".into()],
            unrestrict: vec!["phone".into()],
            ..again()
        });
        assert!(message.contains("both restricted and lifted"), "{message}");
    }

    #[test]
    fn what_cannot_make_a_descriptor_is_refused_with_what_to_change() {
        let refused = |request: PublishRequest| match publish(&request, &["id", "email"], None, 1) {
            Err(NodeError::BadRequest(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let base = || PublishRequest {
            name: "orders".into(),
            from: "/in/orders.csv".into(),
            ..PublishRequest::default()
        };
        let message = refused(PublishRequest {
            restricted: vec!["ssn".into()],
            ..base()
        });
        assert!(
            message.contains("restricted column `ssn` is not in the schema of `/in/orders.csv`")
                && message.contains("its columns are: id, email"),
            "{message}"
        );
        let message = refused(PublishRequest {
            lineage: vec!["crm/customers".into()],
            ..base()
        });
        assert!(message.contains("domain/product@version"), "{message}");
        let message = refused(PublishRequest {
            approval: Some("sometimes".into()),
            ..base()
        });
        assert!(message.contains("sometimes"), "{message}");
        let message = refused(PublishRequest {
            classify: vec!["email".into()],
            ..base()
        });
        assert!(message.contains("column=tag"), "{message}");
    }
}
