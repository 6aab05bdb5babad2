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
        Some((d, f)) => (d, Some(f)),
        None => (domain_part, None),
    };
    let matches: Vec<ProductDescriptor> = entries
        .into_iter()
        .filter(|d| d.domain == domain && d.name == name)
        .filter(|d| {
            fingerprint.is_none_or(|f| d.owner.fingerprint().starts_with(f) && !f.is_empty())
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
