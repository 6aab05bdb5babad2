//! Deterministic, bounded wire encoding.
//!
//! Every message meshnode signs or sends is encoded with [postcard]: a compact, non
//! self-describing format whose output depends only on the value (structs in field order,
//! integers as varints, no maps with unspecified order). Decoding checks the size limit
//! *before* it looks at a byte and rejects trailing input, so garbage never panics and never
//! allocates more than the input could justify.

use serde::{Serialize, de::DeserializeOwned};

/// Why bytes could not be turned into a value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The input is larger than the limit for this message type.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size of the input.
        len: usize,
        /// Limit for this message type.
        max: usize,
    },
    /// The bytes are not a valid encoding of the expected type.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A valid value was followed by extra bytes.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}

/// Encodes `value` deterministically.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serialising our own types into a Vec cannot fail: they contain no maps with
    // non-string keys and no sequences of unknown length.
    postcard::to_stdvec(value).expect("encoding into a Vec is infallible for protocol types")
}

/// Decodes exactly one `T` from `bytes`, refusing inputs larger than `max`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_limits() {
        let v = (7u64, String::from("sales"), vec![1u8, 2, 3]);
        let bytes = encode(&v);
        assert_eq!(decode::<(u64, String, Vec<u8>)>(&bytes, 1024).unwrap(), v);
        assert!(matches!(
            decode::<(u64, String, Vec<u8>)>(&bytes, 3),
            Err(DecodeError::TooLarge { .. })
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode::<(u64, String, Vec<u8>)>(&longer, 1024),
            Err(DecodeError::TrailingBytes(1))
        );
        assert!(matches!(
            decode::<(u64, String, Vec<u8>)>(&[0xff, 0xff, 0xff], 1024),
            Err(DecodeError::Malformed(_))
        ));
    }
}
