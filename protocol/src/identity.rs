//! Node identity: one ed25519 key pair per domain.
//!
//! The same key signs catalog entries and contracts and, in `node`, becomes the libp2p
//! identity and the data-plane TLS key, so a transport handshake already authenticates the
//! domain that signed a message.

use std::fmt;

use ed25519_dalek::Signer;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of an ed25519 secret key seed.
pub const SECRET_KEY_LEN: usize = 32;

/// A node's signing key. Debug output never shows the secret.
#[derive(Clone)]
pub struct Identity {
    /// The ed25519 signing key.
    key: ed25519_dalek::SigningKey,
}

impl Identity {
    /// Builds an identity from a 32-byte secret seed (from a key file or an RNG the caller owns).
    pub fn from_secret_bytes(secret: [u8; SECRET_KEY_LEN]) -> Self {
        Self {
            key: ed25519_dalek::SigningKey::from_bytes(&secret),
        }
    }

    /// Parses the secret seed from a slice, as read from an identity file.
    pub fn from_secret_slice(secret: &[u8]) -> Result<Self, KeyError> {
        let secret: [u8; SECRET_KEY_LEN] = secret.try_into().map_err(|_| KeyError::Length {
            expected: SECRET_KEY_LEN,
            actual: secret.len(),
        })?;
        Ok(Self::from_secret_bytes(secret))
    }

    /// The secret seed, for writing the identity file.
    pub fn secret_bytes(&self) -> [u8; SECRET_KEY_LEN] {
        self.key.to_bytes()
    }

    /// The public half.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.key.verifying_key().to_bytes())
    }

    /// Signs `context || message`; the context separates message types so a signature over
    /// one kind of message can never be replayed as another.
    pub fn sign(&self, context: &str, message: &[u8]) -> Signature {
        Signature(self.key.sign(&signing_input(context, message)).to_bytes())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public_key", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// Decompressed verifying keys, by their 32 bytes. Decompressing a key (a square root on the
/// curve) is about a seventh of a signature check, and a node checks the same few keys (its
/// mesh's members) again and again. A pure function's memo, least recently used first out:
/// it holds at most [`verifying_keys::CAPACITY`] keys, so fresh keys from a peer cost it
/// memory no more than that, and time no more than they would without it.
mod verifying_keys {
    use std::sync::{Mutex, OnceLock, PoisonError};

    use ed25519_dalek::VerifyingKey;
    use hashlink::LruCache;

    /// Most keys held.
    pub(super) const CAPACITY: usize = 4096;

    fn cache() -> &'static Mutex<LruCache<[u8; 32], VerifyingKey>> {
        static CACHE: OnceLock<Mutex<LruCache<[u8; 32], VerifyingKey>>> = OnceLock::new();
        CACHE.get_or_init(|| Mutex::new(LruCache::new(CAPACITY)))
    }

    /// The key for `bytes`, `None` when they are not a point on the curve (never cached).
    pub(super) fn get(bytes: &[u8; 32]) -> Option<VerifyingKey> {
        if let Some(key) = cache()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(bytes)
        {
            return Some(*key);
        }
        // Decompressed outside the lock: two threads may both do it for a new key, and
        // insert the same value.
        let key = VerifyingKey::from_bytes(bytes).ok()?;
        cache()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(*bytes, key);
        Some(key)
    }

    /// Keys held now.
    #[cfg(test)]
    pub(super) fn len() -> usize {
        cache().lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

fn signing_input(context: &str, message: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(context.len() + 1 + message.len());
    input.extend_from_slice(context.as_bytes());
    // A separator that cannot occur in a context string keeps `("ab", "c")` and `("a", "bc")`
    // apart.
    input.push(0);
    input.extend_from_slice(message);
    input
}

/// Why key material could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Wrong number of bytes.
    #[error("expected {expected} key bytes, found {actual}")]
    Length {
        /// Required length.
        expected: usize,
        /// Length found.
        actual: usize,
    },
    /// Not valid hexadecimal.
    #[error("not a hexadecimal key: {0}")]
    Hex(String),
    /// The bytes are not a point on the curve.
    #[error("not a valid ed25519 public key")]
    InvalidPoint,
}

/// An ed25519 public key: the canonical identity of a domain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Parses a 64-character hex string.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(s).map_err(|e| KeyError::Hex(e.to_string()))?;
        let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::Length {
            expected: 32,
            actual: bytes.len(),
        })?;
        Ok(Self(bytes))
    }

    /// Full lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Short form shown next to a domain name when two keys claim the same name
    /// (`sales@3f2a9c1d5e7b0a46/product-sales`): the first [`FINGERPRINT_HEX_LEN`] hex digits
    /// (64 bits) of BLAKE3(key). 64 bits put a key whose fingerprint collides with a chosen
    /// one out of reach of offline grinding (about 2^64 key derivations); 32 bits did not.
    pub fn fingerprint(&self) -> String {
        hex::encode(&blake3::hash(&self.0).as_bytes()[..FINGERPRINT_HEX_LEN / 2])
    }

    /// Whether `prefix` (as checked by [`parse_fingerprint`]) is a prefix of this key's
    /// fingerprint.
    pub fn fingerprint_matches(&self, prefix: &FingerprintPrefix) -> bool {
        self.fingerprint().starts_with(prefix.as_str())
    }

    /// Verifies `signature` over `context || message`.
    pub fn verify(
        &self,
        context: &str,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        let key = verifying_keys::get(&self.0).ok_or(SignatureError::InvalidKey)?;
        let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(&signing_input(context, message), &signature)
            .map_err(|_| SignatureError::Mismatch)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Hex digits of a key fingerprint (64 bits).
pub const FINGERPRINT_HEX_LEN: usize = 16;

/// Fewest hex digits accepted as a fingerprint prefix in `domain@fp/product`: the 8-digit
/// fingerprints of earlier releases keep resolving. A short prefix never picks a key by
/// itself when another key matches it too: resolution refuses every ambiguous name.
pub const MIN_FINGERPRINT_PREFIX: usize = 8;

/// A checked fingerprint prefix, lowercase hex, [`MIN_FINGERPRINT_PREFIX`] to
/// [`FINGERPRINT_HEX_LEN`] digits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FingerprintPrefix(String);

impl FingerprintPrefix {
    /// The prefix, lowercase.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why the part after `@` in `domain@fp/product` is not a fingerprint.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FingerprintError {
    /// Too short to name a key with any confidence, or longer than a fingerprint.
    #[error(
        "fingerprint `{0}` must have {MIN_FINGERPRINT_PREFIX} to {FINGERPRINT_HEX_LEN} hex digits (copy it from `meshnode catalog`)"
    )]
    Length(String),
    /// Not hexadecimal.
    #[error("fingerprint `{0}` is not hexadecimal (copy it from `meshnode catalog`)")]
    NotHex(String),
}

/// Checks a fingerprint (or prefix of one) typed by a user. Upper case is accepted.
pub fn parse_fingerprint(text: &str) -> Result<FingerprintPrefix, FingerprintError> {
    // Length first, so a huge input is refused before it is copied.
    if text.len() < MIN_FINGERPRINT_PREFIX || text.len() > FINGERPRINT_HEX_LEN {
        let shown: String = text.chars().take(FINGERPRINT_HEX_LEN + 1).collect();
        return Err(FingerprintError::Length(shown));
    }
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FingerprintError::NotHex(text.to_owned()));
    }
    Ok(FingerprintPrefix(text.to_ascii_lowercase()))
}

/// Why a signature was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum SignatureError {
    /// The signer field is not a valid ed25519 key.
    #[error("the signer is not a valid ed25519 key")]
    InvalidKey,
    /// The signature does not match the key and message.
    #[error("the signature does not match the signer and content")]
    Mismatch,
}

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", hex::encode(&self.0[..8]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> serde::de::Visitor<'de> for BytesVisitor {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Signature, E> {
                let bytes: [u8; 64] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Signature(bytes))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Signature, A::Error> {
                let mut bytes = [0u8; 64];
                for (i, b) in bytes.iter_mut().enumerate() {
                    *b = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                Ok(Signature(bytes))
            }
        }
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_keys_verify_like_fresh_ones_and_the_cache_stays_bounded() {
        let signer = Identity::from_secret_bytes([42; 32]);
        let key = signer.public_key();
        let signature = signer.sign("ctx", b"message");
        // Twice: decompressed, then from the cache; the answer is the same.
        for _ in 0..2 {
            assert_eq!(key.verify("ctx", b"message", &signature), Ok(()));
            assert_eq!(
                key.verify("ctx", b"other", &signature),
                Err(SignatureError::Mismatch)
            );
        }
        // Bytes that are not a point are refused every time and never cached. (The
        // y-coordinate 2 has no x on the curve.)
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        for _ in 0..2 {
            assert_eq!(
                PublicKey(not_a_point).verify("ctx", b"message", &signature),
                Err(SignatureError::InvalidKey)
            );
        }
        // Many fresh keys: the cache never holds more than its capacity.
        for i in 0..(verifying_keys::CAPACITY as u32 + 10) {
            let mut secret = [7u8; 32];
            secret[..4].copy_from_slice(&i.to_le_bytes());
            let key = Identity::from_secret_bytes(secret).public_key();
            assert_eq!(
                key.verify("ctx", b"message", &signature),
                Err(SignatureError::Mismatch)
            );
            assert!(verifying_keys::len() <= verifying_keys::CAPACITY);
        }
        assert_eq!(key.verify("ctx", b"message", &signature), Ok(()));
    }

    #[test]
    fn sign_and_verify_with_context() {
        let id = Identity::from_secret_bytes([7; 32]);
        let sig = id.sign("meshnode/test/v1", b"hello");
        let pk = id.public_key();
        assert_eq!(pk.verify("meshnode/test/v1", b"hello", &sig), Ok(()));
        assert_eq!(
            pk.verify("meshnode/other/v1", b"hello", &sig),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            pk.verify("meshnode/test/v1", b"hellp", &sig),
            Err(SignatureError::Mismatch)
        );
        let other = Identity::from_secret_bytes([8; 32]).public_key();
        assert_eq!(
            other.verify("meshnode/test/v1", b"hello", &sig),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn hex_round_trip_and_fingerprint() {
        let pk = Identity::from_secret_bytes([1; 32]).public_key();
        assert_eq!(PublicKey::from_hex(&pk.to_hex()).unwrap(), pk);
        assert!(PublicKey::from_hex("abcd").is_err());
        assert!(PublicKey::from_hex("zz").is_err());
    }

    #[test]
    fn fingerprint_is_64_bits_and_prefixes_are_checked() {
        let pk = Identity::from_secret_bytes([1; 32]).public_key();
        let fp = pk.fingerprint();
        assert_eq!(fp.len(), FINGERPRINT_HEX_LEN);
        assert_eq!(FINGERPRINT_HEX_LEN * 4, 64);
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
        let full = parse_fingerprint(&fp).unwrap();
        assert!(pk.fingerprint_matches(&full));
        let short = parse_fingerprint(&fp[..MIN_FINGERPRINT_PREFIX].to_ascii_uppercase()).unwrap();
        assert!(pk.fingerprint_matches(&short));
        let other = Identity::from_secret_bytes([2; 32]).public_key();
        assert!(!other.fingerprint_matches(&full));
        for bad in ["", "3f2a", "3f2a9c1", &format!("{fp}0")] {
            assert!(
                matches!(parse_fingerprint(bad), Err(FingerprintError::Length(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_fingerprint("3f2a9c1z"),
            Err(FingerprintError::NotHex(_))
        ));
        let huge = "a".repeat(100_000);
        let err = parse_fingerprint(&huge).unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn debug_hides_secret() {
        let id = Identity::from_secret_bytes([9; 32]);
        let shown = format!("{id:?}");
        assert!(!shown.contains(&hex::encode([9u8; 32])));
    }
}
