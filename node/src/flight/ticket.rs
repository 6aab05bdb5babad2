//! The ticket of a plain Flight `DoGet`: which product, and optionally which version and
//! agreement, as a small JSON object.
//!
//! ```json
//! {"product": "sales/orders", "version": 3, "agreement": "3f2a"}
//! ```
//!
//! `product` is what `meshnode fetch` takes (`domain/product` or `domain@fingerprint/product`);
//! `version` defaults to the latest the agreement covers; `agreement` is an agreement id or
//! a prefix of one and defaults to the most recently concluded usable agreement. Flight SQL
//! tickets are protobuf messages and never start with `{`, which tells the two apart.

use serde::{Deserialize, Serialize};

/// Longest product ticket accepted, in bytes: checked before the JSON parser sees it.
pub(crate) const MAX_PRODUCT_TICKET: usize = 4 * 1024;

/// A `DoGet` ticket naming a product.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProductTicket {
    /// The product, as `meshnode fetch` takes it.
    pub(crate) product: String,
    /// The version to read; the latest the agreement covers when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) version: Option<u64>,
    /// Agreement id or id prefix (hex); the usable agreement for the product when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) agreement: Option<String>,
}

/// Why a ticket was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TicketError {
    /// Longer than [`MAX_PRODUCT_TICKET`].
    #[error(
        "the ticket has {0} bytes, more than the {MAX_PRODUCT_TICKET} a product ticket may have"
    )]
    TooLong(usize),
    /// Not the JSON object documented.
    #[error(
        "the ticket is not a product ticket ({0}); expected JSON such as {{\"product\":\"sales/orders\",\"version\":3,\"agreement\":\"3f2a\"}}"
    )]
    Malformed(#[source] serde_json::Error),
    /// The agreement prefix is not hexadecimal.
    #[error("the ticket's agreement `{0}` is not a hexadecimal agreement id or prefix")]
    BadAgreement(String),
}

/// Whether `bytes` look like a product ticket (JSON object) rather than a Flight SQL one.
pub(crate) fn is_product_ticket(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

impl ProductTicket {
    /// Parses a ticket, bounded in size before parsing.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, TicketError> {
        if bytes.len() > MAX_PRODUCT_TICKET {
            return Err(TicketError::TooLong(bytes.len()));
        }
        let ticket: ProductTicket =
            serde_json::from_slice(bytes).map_err(TicketError::Malformed)?;
        if let Some(a) = &ticket.agreement
            && (a.is_empty() || a.len() > 64 || !a.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(TicketError::BadAgreement(a.chars().take(80).collect()));
        }
        Ok(ticket)
    }

    /// The ticket's bytes.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_defaults() {
        let t = ProductTicket::parse(br#"{"product":"sales/orders"}"#).unwrap();
        assert_eq!(t.product, "sales/orders");
        assert_eq!((t.version, t.agreement.as_deref()), (None, None));
        let full = ProductTicket {
            product: "sales/orders".into(),
            version: Some(3),
            agreement: Some("3f2a".into()),
        };
        assert_eq!(ProductTicket::parse(&full.to_bytes()).unwrap(), full);
        assert!(is_product_ticket(b" {\"product\":1}"));
        assert!(!is_product_ticket(b"\x0a\x05hello"));
    }

    #[test]
    fn refusals() {
        let long = format!(r#"{{"product":"{}"}}"#, "a".repeat(MAX_PRODUCT_TICKET));
        assert!(matches!(
            ProductTicket::parse(long.as_bytes()),
            Err(TicketError::TooLong(_))
        ));
        for bad in [
            &br#"{"product":"a/b","extra":1}"#[..],
            br#"{"version":3}"#,
            br#"[1,2]"#,
            b"{",
        ] {
            assert!(
                matches!(ProductTicket::parse(bad), Err(TicketError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let err = ProductTicket::parse(br#"{"product":"a/b","agreement":"xyz"}"#).unwrap_err();
        assert!(err.to_string().contains("hexadecimal"), "{err}");
    }
}
