//! Resolving what users type (`domain/product`, `domain@fingerprint/product`) to a product.

use mesh_protocol::ProductDescriptor;

use crate::error::NodeError;

/// Finds the one product `spec` names among `entries`. A bare domain name that two keys
/// claim is refused with the qualified names to choose from.
pub fn resolve(
    spec: &str,
    entries: impl IntoIterator<Item = ProductDescriptor>,
) -> Result<ProductDescriptor, NodeError> {
    let (domain_part, name) = spec.split_once('/').ok_or_else(|| {
        NodeError::BadRequest(format!(
            "product `{spec}` is not of the form domain/product (see `meshnode catalog`)"
        ))
    })?;
    let (domain, fingerprint) = match domain_part.split_once('@') {
        Some((d, f)) => (
            d,
            Some(
                mesh_protocol::identity::parse_fingerprint(f)
                    .map_err(|e| NodeError::BadRequest(format!("product `{spec}`: {e}")))?,
            ),
        ),
        None => (domain_part, None),
    };
    // A fingerprint prefix narrows the owners; two owners left is refused below, so a
    // short prefix never silently picks one key over another.
    let matches: Vec<ProductDescriptor> = entries
        .into_iter()
        .filter(|d| d.domain == domain && d.name == name)
        .filter(|d| {
            fingerprint
                .as_ref()
                .is_none_or(|f| d.owner.fingerprint_matches(f))
        })
        .collect();
    match matches.len() {
        0 => Err(NodeError::NotFound(format!(
            "unknown product `{spec}`: it is not in this node's catalog (run `meshnode catalog` to see what the mesh offers)"
        ))),
        1 => Ok(matches.into_iter().next().expect("one match")),
        _ => {
            let choices: Vec<String> = matches
                .iter()
                .map(|d| format!("{}@{}/{}", d.domain, d.owner.fingerprint(), d.name))
                .collect();
            Err(NodeError::BadRequest(format!(
                "`{spec}` is ambiguous: {} keys claim domain `{domain}`; name one of: {}",
                matches.len(),
                choices.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use mesh_protocol::descriptor::{ColumnSchema, ContentDigest};
    use mesh_protocol::{Identity, ProductDescriptor};

    use super::*;

    fn product(owner: &Identity, domain: &str, name: &str) -> ProductDescriptor {
        ProductDescriptor {
            owner: owner.public_key(),
            domain: domain.into(),
            name: name.into(),
            version: 1,
            title: String::new(),
            description: String::new(),
            tags: vec![],
            schema: vec![ColumnSchema {
                name: "a".into(),
                data_type: "Int64".into(),
                nullable: false,
            }],
            rows: 0,
            bytes: 0,
            digest: ContentDigest([0; 32]),
            published_at_ms: 0,
            sla: Default::default(),
            policy: Default::default(),
            lineage: vec![],
            data_addr: None,
            status: Default::default(),
            stewardship: Default::default(),
        }
    }

    #[test]
    fn unique_ambiguous_and_qualified() {
        let a = Identity::from_secret_bytes([1; 32]);
        let b = Identity::from_secret_bytes([2; 32]);
        let entries = vec![
            product(&a, "sales", "orders"),
            product(&b, "sales", "orders"),
            product(&a, "sales", "returns"),
        ];
        assert_eq!(
            resolve("sales/returns", entries.clone()).unwrap().owner,
            a.public_key()
        );
        let err = resolve("sales/orders", entries.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ambiguous"), "{err}");
        assert!(err.contains(&format!("sales@{}/orders", a.public_key().fingerprint())));
        assert!(err.contains(&format!("sales@{}/orders", b.public_key().fingerprint())));
        let fp = b.public_key().fingerprint();
        let qualified = format!("sales@{fp}/orders");
        assert_eq!(
            resolve(&qualified, entries.clone()).unwrap().owner,
            b.public_key()
        );
        // An 8-digit prefix (the old fingerprint length) still resolves when unambiguous.
        let short = format!("sales@{}/orders", &fp[..8]);
        assert_eq!(
            resolve(&short, entries.clone()).unwrap().owner,
            b.public_key()
        );
        for bad in [
            "sales@/orders",
            "sales@3f2a/orders",
            "sales@zzzzzzzz/orders",
        ] {
            assert!(
                matches!(resolve(bad, entries.clone()), Err(NodeError::BadRequest(_))),
                "{bad}"
            );
        }
        assert_eq!(fp.len(), 16);
        assert!(matches!(
            resolve("sales/nothing", entries.clone()),
            Err(NodeError::NotFound(_))
        ));
        assert!(matches!(
            resolve("no-slash", entries),
            Err(NodeError::BadRequest(_))
        ));
    }
}
