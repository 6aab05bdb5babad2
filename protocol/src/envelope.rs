//! Signed envelopes.
//!
//! A [`Signed<T>`] carries the deterministic encoding of a `T` exactly as its signer produced
//! it, the signer's key and a signature over `T::CONTEXT || body`. Receivers verify before
//! they use the value, and store and forward the bytes as received: nothing is ever
//! re-encoded to check a signature.

use std::marker::PhantomData;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::codec::{self, DecodeError};
use crate::identity::{Identity, PublicKey, Signature, SignatureError};

/// A message type that travels signed.
pub trait Signable: Serialize + DeserializeOwned {
    /// Domain-separation string, e.g. `meshnode/descriptor/v1`.
    const CONTEXT: &'static str;
    /// Largest encoded body accepted for this type.
    const MAX_BODY: usize;
}

/// Bytes of envelope overhead on top of the body: key, signature, length prefixes.
const ENVELOPE_OVERHEAD: usize = 32 + 64 + 16;

/// Why an envelope was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The envelope or its body could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The signature is not valid for the signer.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// A value of type `T`, encoded and signed.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Signed<T> {
    /// Deterministic encoding of the `T`, kept byte for byte as signed.
    body: Vec<u8>,
    /// Key that produced `signature`.
    signer: PublicKey,
    /// Signature over `T::CONTEXT || body`.
    signature: Signature,
    #[serde(skip)]
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Signed<T> {
    fn clone(&self) -> Self {
        Self {
            body: self.body.clone(),
            signer: self.signer,
            signature: self.signature,
            _type: PhantomData,
        }
    }
}

impl<T> PartialEq for Signed<T> {
    fn eq(&self, other: &Self) -> bool {
        self.body == other.body && self.signer == other.signer && self.signature == other.signature
    }
}

impl<T> Eq for Signed<T> {}

impl<T> std::fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signed")
            .field("type", &std::any::type_name::<T>())
            .field("body_len", &self.body.len())
            .field("signer", &self.signer)
            .finish()
    }
}

impl<T: Signable> Signed<T> {
    /// Encodes and signs `value`.
    pub fn sign(identity: &Identity, value: &T) -> Self {
        let body = codec::encode(value);
        let signature = identity.sign(T::CONTEXT, &body);
        Self {
            body,
            signer: identity.public_key(),
            signature,
            _type: PhantomData,
        }
    }

    /// Checks the signature, then decodes the body. The only way to get a `T` out.
    pub fn verify(&self) -> Result<T, EnvelopeError> {
        self.signer
            .verify(T::CONTEXT, &self.body, &self.signature)?;
        Ok(codec::decode(&self.body, T::MAX_BODY)?)
    }

    /// Who signed. Not trustworthy until [`Signed::verify`] succeeded.
    pub fn signer(&self) -> PublicKey {
        self.signer
    }

    /// The body bytes exactly as signed.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Largest encoded envelope for this type.
    pub const fn max_encoded_len() -> usize {
        T::MAX_BODY + ENVELOPE_OVERHEAD
    }

    /// Encodes the whole envelope for the wire or the store.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes an envelope without verifying it; call [`Signed::verify`] next.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, Self::max_encoded_len())
    }

    /// Signs arbitrary bytes as if they were a `T`: only for tests that need well-signed garbage.
    #[cfg(any(test, feature = "test-util"))]
    pub fn sign_raw_for_tests(identity: &Identity, body: Vec<u8>) -> Self {
        let signature = identity.sign(T::CONTEXT, &body);
        Self {
            body,
            signer: identity.public_key(),
            signature,
            _type: PhantomData,
        }
    }

    /// Decodes the body without checking the signature. For envelopes read back from the
    /// local store, which verified them before storing, and to refuse an envelope on what
    /// it claims before paying for the check: nothing it says is stored or acted on.
    pub fn decode_trusted(&self) -> Result<T, DecodeError> {
        codec::decode(&self.body, T::MAX_BODY)
    }

    /// A copy with the body replaced, signature kept: only for tests that need a forgery.
    #[doc(hidden)]
    pub fn with_tampered_body(&self, body: Vec<u8>) -> Self {
        Self {
            body,
            ..self.clone()
        }
    }

    /// A copy that claims another signer, signature kept: only for tests that need a forgery.
    #[doc(hidden)]
    pub fn with_claimed_signer(&self, signer: PublicKey) -> Self {
        Self {
            signer,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Note {
        text: String,
    }

    impl Signable for Note {
        const CONTEXT: &'static str = "meshnode/test-note/v1";
        const MAX_BODY: usize = 64;
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Other {
        text: String,
    }

    impl Signable for Other {
        const CONTEXT: &'static str = "meshnode/test-other/v1";
        const MAX_BODY: usize = 64;
    }

    #[test]
    fn sign_verify_round_trip() {
        let id = Identity::from_secret_bytes([3; 32]);
        let note = Note {
            text: "hello".into(),
        };
        let signed = Signed::sign(&id, &note);
        let decoded = Signed::<Note>::from_bytes(&signed.to_bytes()).unwrap();
        assert_eq!(decoded, signed);
        assert_eq!(decoded.verify().unwrap(), note);
        assert_eq!(decoded.signer(), id.public_key());
    }

    #[test]
    fn tampering_is_detected() {
        let id = Identity::from_secret_bytes([3; 32]);
        let signed = Signed::sign(
            &id,
            &Note {
                text: "hello".into(),
            },
        );
        let mut body = signed.body().to_vec();
        *body.last_mut().unwrap() ^= 1;
        assert_eq!(
            signed.with_tampered_body(body).verify(),
            Err(EnvelopeError::Signature(SignatureError::Mismatch))
        );
        let mallory = Identity::from_secret_bytes([4; 32]).public_key();
        assert_eq!(
            signed.with_claimed_signer(mallory).verify(),
            Err(EnvelopeError::Signature(SignatureError::Mismatch))
        );
    }

    #[test]
    fn context_separates_types() {
        let id = Identity::from_secret_bytes([3; 32]);
        let signed = Signed::sign(
            &id,
            &Note {
                text: "hello".into(),
            },
        );
        // Same body bytes, reinterpreted as another signed type: the context differs.
        let as_other = Signed::<Other>::from_bytes(&signed.to_bytes()).unwrap();
        assert!(as_other.verify().is_err());
    }

    #[test]
    fn oversized_body_is_refused() {
        let id = Identity::from_secret_bytes([3; 32]);
        let signed = Signed::sign(
            &id,
            &Note {
                text: "x".repeat(200),
            },
        );
        assert!(matches!(
            signed.verify(),
            Err(EnvelopeError::Decode(DecodeError::TooLarge { .. }))
        ));
    }
}
