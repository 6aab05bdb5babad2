//! Sharing contracts: terms, co-signed agreements, rejections and revocations, the messages of
//! `/meshnode/contract/1`, the negotiation state machine and policy evaluation.
//!
//! The flow, with the node as the shell around these pure functions:
//!
//! 1. The consumer builds [`ContractTerms`], signs a [`ContractRequest`] and sends
//!    [`ContractMessage::Request`].
//! 2. The provider checks it with [`verify_request`], evaluates its product policy with
//!    [`evaluate`] and answers [`ContractReply::Agreed`] (auto approval, via
//!    [`Agreement::countersign`]), [`ContractReply::Pending`] (manual approval) or
//!    [`ContractReply::Rejected`].
//! 3. When the operator decides later, the provider pushes the signed decision with
//!    [`ContractMessage::Decided`]; the consumer also polls with
//!    [`ContractMessage::StatusBatch`] (the fallback when a push is lost; see
//!    [`crate::contract_sync`]). Either side may send [`ContractMessage::Revoke`].
//!    Revocations are also gossiped.
//!
//! The lifecycle of one contract is [`transition`]; [`effective_state`] folds in expiry.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::budget::BudgetRefusal;
use crate::codec::{self, DecodeError};
use crate::descriptor::{ColumnSchema, MAX_COLUMNS, ProductDescriptor, ProductId, Status};
use crate::envelope::{EnvelopeError, Signable, Signed};
use crate::filter::{Filter, FilterError};
use crate::identity::{Identity, PublicKey, Signature, SignatureError};

/// Largest encoded [`ContractTerms`] (and so [`ContractRequest`]) body: room for every column
/// name of the largest descriptor a node takes (which holds them all within
/// [`MAX_DESCRIPTOR_BYTES`](crate::descriptor::MAX_DESCRIPTOR_BYTES)), listed, with a filter
/// of [`MAX_FILTER_LEN`](crate::filter::MAX_FILTER_LEN) and the other terms: a product that
/// can be published can be requested whole.
pub const MAX_TERMS_BYTES: usize = crate::descriptor::MAX_DESCRIPTOR_BYTES + 16 * 1024;
/// Largest encoded [`Rejection`] or [`Revocation`] body.
pub const MAX_NOTICE_BYTES: usize = 4 * 1024;
/// Longest reason a [`Rejection`] or [`Revocation`] carries, in bytes: with the other fields
/// (an id, a key, a time and two lengths, under 100 bytes) the body stays within
/// [`MAX_NOTICE_BYTES`], so every receiver can verify what a party signs.
pub const MAX_REASON_BYTES: usize = 2 * 1024;

/// `reason` cut to at most [`MAX_REASON_BYTES`] bytes on a character boundary, with `…` at
/// the end if anything was cut: for reasons the node words itself (a policy's verdict can
/// list every column of a wide product). An operator's own reason is refused instead when
/// too long, so that it is never signed other than as written.
pub fn clipped_reason(reason: &str) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason.to_owned();
    }
    const ELLIPSIS: &str = "…";
    let mut end = MAX_REASON_BYTES - ELLIPSIS.len();
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ELLIPSIS}", &reason[..end])
}
/// Largest encoded [`Agreement`].
pub const MAX_AGREEMENT_BYTES: usize = Signed::<ContractRequest>::max_encoded_len() + 32 + 64 + 16;
/// Largest [`ContractMessage`] on `/meshnode/contract/1`: a request of the largest terms.
pub const MAX_CONTRACT_MESSAGE: usize = MAX_TERMS_BYTES + 16 * 1024;
/// Largest [`ContractReply`] on `/meshnode/contract/1`: an agreement of the largest terms.
pub const MAX_CONTRACT_REPLY: usize = MAX_TERMS_BYTES + 16 * 1024;
/// Most ids in one [`ContractMessage::StatusBatch`].
pub const MAX_STATUS_BATCH: usize = 64;
/// Request-response protocol name of contract negotiation.
pub const CONTRACT_PROTOCOL: &str = "/meshnode/contract/1";
/// Milliseconds in a day, for `--days`.
pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;
/// Signature context of the provider's countersignature in an [`Agreement`].
pub const AGREEMENT_CONTEXT: &str = "meshnode/agreement/v1";

/// What a consumer asks for and, once countersigned, what both parties agreed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractTerms {
    /// The product shared; `product.owner` is the provider.
    pub product: ProductId,
    /// Domain name of the provider, as the consumer saw it in the catalog (a label).
    pub provider_domain: String,
    /// Domain name of the consumer (a label).
    pub consumer_domain: String,
    /// Key of the providing domain; must equal `product.owner`. Countersigns.
    pub provider: PublicKey,
    /// Key of the consuming domain. Signs the request; the only key allowed to fetch.
    pub consumer: PublicKey,
    /// Lowest product version covered.
    pub min_version: u64,
    /// Highest product version covered; `None` covers every later version too.
    pub max_version: Option<u64>,
    /// Why the consumer wants the data; checked against the policy's allowed purposes.
    pub purpose: String,
    /// Columns granted: the concrete list the approver saw, or, only when the consumer
    /// asked so in so many words, every non-restricted column of any version.
    pub columns: Columns,
    /// Row filter in canonical text ([`Filter`]'s `Display`); `None` for all rows.
    pub filter: Option<String>,
    /// Start of validity, Unix milliseconds (inclusive).
    pub valid_from_ms: u64,
    /// End of validity, Unix milliseconds (exclusive).
    pub valid_until_ms: u64,
    /// Random bytes from the consumer, so that two identical requests have distinct ids.
    pub nonce: [u8; 16],
}

impl ContractTerms {
    /// The agreement id these terms will have.
    pub fn id(&self) -> AgreementId {
        AgreementId::of(self)
    }

    /// Columns granted from `schema` (the version served), in schema order: the listed ones
    /// that it has, or every column under [`Columns::AllCurrentAndFuture`]. A column in
    /// `restricted` is never granted, whatever the terms say. One pass over each list.
    pub fn granted_columns(&self, schema: &[ColumnSchema], restricted: &[String]) -> Vec<String> {
        let listed: Option<HashSet<&str>> = self
            .columns
            .listed()
            .map(|list| list.iter().map(String::as_str).collect());
        let restricted: HashSet<&str> = restricted.iter().map(String::as_str).collect();
        schema
            .iter()
            .filter(|c| {
                listed.as_ref().is_none_or(|l| l.contains(c.name.as_str()))
                    && !restricted.contains(c.name.as_str())
            })
            .map(|c| c.name.clone())
            .collect()
    }

    /// The parsed row filter, if any.
    pub fn parsed_filter(&self) -> Result<Option<Filter>, FilterError> {
        self.filter.as_deref().map(Filter::parse).transpose()
    }

    /// Whether `version` lies in `min_version..=max_version`.
    pub fn covers_version(&self, version: u64) -> bool {
        version >= self.min_version && self.max_version.is_none_or(|max| version <= max)
    }

    /// Whether `now_ms` lies in the validity window `[valid_from_ms, valid_until_ms)`,
    /// widened by `skew_ms` on both ends for clocks that disagree.
    pub fn is_valid_at(&self, now_ms: u64, skew_ms: u64) -> bool {
        now_ms.saturating_add(skew_ms) >= self.valid_from_ms
            && now_ms < self.valid_until_ms.saturating_add(skew_ms)
    }

    /// Length of the validity window in whole days, rounded up.
    pub fn validity_days(&self) -> u64 {
        self.valid_until_ms
            .saturating_sub(self.valid_from_ms)
            .div_ceil(DAY_MS)
    }
}

/// Which columns a contract grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Columns {
    /// Exactly these columns, fixed when the request was made (the consumer resolves "all
    /// columns" to the concrete list of the version it saw). A later version's new columns
    /// need a new agreement.
    Listed(Vec<String>),
    /// Every non-restricted column of whichever version is fetched, columns added later
    /// included. Only when the consumer asked for exactly that (`--columns '*'`), and shown
    /// as such to the approver.
    AllCurrentAndFuture,
}

impl Columns {
    /// Whether the column `name` is granted (restricted columns aside). A scan of the list:
    /// for many names, [`ContractTerms::granted_columns`].
    pub fn covers(&self, name: &str) -> bool {
        match self {
            Columns::Listed(list) => list.iter().any(|c| c == name),
            Columns::AllCurrentAndFuture => true,
        }
    }

    /// The listed columns, `None` for [`Columns::AllCurrentAndFuture`].
    pub fn listed(&self) -> Option<&[String]> {
        match self {
            Columns::Listed(list) => Some(list),
            Columns::AllCurrentAndFuture => None,
        }
    }
}

impl fmt::Display for Columns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Columns::Listed(list) => f.write_str(&list.join(",")),
            Columns::AllCurrentAndFuture => {
                f.write_str("* (all current and future non-restricted columns)")
            }
        }
    }
}

/// Identity of an agreement: BLAKE3 of the canonical encoding of its terms. Also identifies
/// the request (pending or rejected) that proposed those terms.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AgreementId(pub [u8; 32]);

/// Hex digits in [`AgreementId::short`].
pub const SHORT_ID_LEN: usize = 12;

impl AgreementId {
    /// The id of `terms`.
    pub fn of(terms: &ContractTerms) -> Self {
        Self::of_encoded_terms(&codec::encode(terms))
    }

    fn of_encoded_terms(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Full lowercase hex, the stable key for stores.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// First [`SHORT_ID_LEN`] hex digits, for people (`share show 3f2a9c1d0b4e`).
    pub fn short(&self) -> String {
        let mut hex = self.to_hex();
        hex.truncate(SHORT_ID_LEN);
        hex
    }
}

impl fmt::Display for AgreementId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for AgreementId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgreementId({})", self.short())
    }
}

/// Why text is not an agreement id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an agreement id is 64 hexadecimal digits, not `{0}`")]
pub struct ParseAgreementIdError(pub String);

/// Parses the full 64-digit hex form (prefix lookups are the store's business).
impl FromStr for AgreementId {
    type Err = ParseAgreementIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| ParseAgreementIdError(s.to_owned()))?;
        Ok(Self(bytes))
    }
}

/// The consumer's proposal, signed by the consumer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractRequest {
    /// The proposed terms; `terms.consumer` must be the signer.
    pub terms: ContractTerms,
}

impl Signable for ContractRequest {
    const CONTEXT: &'static str = "meshnode/contract-request/v1";
    const MAX_BODY: usize = MAX_TERMS_BYTES;
}

/// Why a request or agreement is not acceptable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AgreementError {
    /// The consumer's envelope does not decode or its signature does not verify.
    #[error("the consumer's signed request is invalid: {0}")]
    Request(#[from] EnvelopeError),
    /// The request was signed by a key other than `terms.consumer`.
    #[error("the request names consumer {expected} but was signed by {signer}")]
    WrongConsumer {
        /// `terms.consumer`.
        expected: PublicKey,
        /// The key that signed the request.
        signer: PublicKey,
    },
    /// The terms are not in canonical encoding, so their id would be ambiguous.
    #[error("the terms are not canonically encoded")]
    NonCanonical,
    /// `terms.provider` is not the owner of `terms.product`.
    #[error("the terms name provider {provider} for a product owned by {owner}")]
    ProviderNotOwner {
        /// `terms.provider`.
        provider: PublicKey,
        /// `terms.product.owner`.
        owner: PublicKey,
    },
    /// The countersignature is by (or claims) a key other than `terms.provider`.
    #[error("the terms name provider {expected} but were countersigned by {actual}")]
    WrongProvider {
        /// `terms.provider`.
        expected: PublicKey,
        /// The key that countersigned.
        actual: PublicKey,
    },
    /// The provider's countersignature does not verify.
    #[error("the provider's countersignature is invalid: {0}")]
    ProviderSignature(SignatureError),
    /// The terms list more columns than a product can have ([`MAX_COLUMNS`]).
    #[error("the terms list {count} columns; a product has at most {max}: list each column once")]
    TooManyColumns {
        /// Entries in the list.
        count: usize,
        /// [`MAX_COLUMNS`].
        max: usize,
    },
}

/// Checks a request on its own: consumer signature, signer is `terms.consumer`, canonical
/// encoding, provider owns the product, at most [`MAX_COLUMNS`] columns listed (so that no
/// party ever handles a longer list, in a request or in an agreement). Returns the terms.
pub fn verify_request(request: &Signed<ContractRequest>) -> Result<ContractTerms, AgreementError> {
    let ContractRequest { terms } = request.verify()?;
    if request.signer() != terms.consumer {
        return Err(AgreementError::WrongConsumer {
            expected: terms.consumer,
            signer: request.signer(),
        });
    }
    // `ContractRequest` is a single-field struct, so its encoding is that of the terms.
    if codec::encode(&terms) != request.body() {
        return Err(AgreementError::NonCanonical);
    }
    if terms.provider != terms.product.owner {
        return Err(AgreementError::ProviderNotOwner {
            provider: terms.provider,
            owner: terms.product.owner,
        });
    }
    if let Some(listed) = terms.columns.listed()
        && listed.len() > MAX_COLUMNS
    {
        return Err(AgreementError::TooManyColumns {
            count: listed.len(),
            max: MAX_COLUMNS,
        });
    }
    Ok(terms)
}

/// Terms co-signed by both parties: the consumer's signed request plus the provider's
/// signature over the same body bytes under [`AGREEMENT_CONTEXT`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    /// The consumer's request, bytes exactly as signed.
    request: Signed<ContractRequest>,
    /// Key that countersigned; must equal `terms.provider`.
    provider: PublicKey,
    /// Signature over `AGREEMENT_CONTEXT || request.body()`.
    provider_signature: Signature,
}

impl Agreement {
    /// The provider accepts a request: verifies it ([`verify_request`]), checks that
    /// `provider` is `terms.provider` and countersigns.
    pub fn countersign(
        provider: &Identity,
        request: Signed<ContractRequest>,
    ) -> Result<Agreement, AgreementError> {
        let terms = verify_request(&request)?;
        if provider.public_key() != terms.provider {
            return Err(AgreementError::WrongProvider {
                expected: terms.provider,
                actual: provider.public_key(),
            });
        }
        let provider_signature = provider.sign(AGREEMENT_CONTEXT, request.body());
        Ok(Agreement {
            request,
            provider: provider.public_key(),
            provider_signature,
        })
    }

    /// Checks both signatures and that the signers are `terms.consumer` and `terms.provider`;
    /// returns the terms. The only way to trust what an agreement says.
    pub fn verify(&self) -> Result<ContractTerms, AgreementError> {
        let terms = verify_request(&self.request)?;
        if self.provider != terms.provider {
            return Err(AgreementError::WrongProvider {
                expected: terms.provider,
                actual: self.provider,
            });
        }
        self.provider
            .verify(
                AGREEMENT_CONTEXT,
                self.request.body(),
                &self.provider_signature,
            )
            .map_err(AgreementError::ProviderSignature)?;
        Ok(terms)
    }

    /// The agreement id: BLAKE3 of the terms' bytes (canonical once [`Agreement::verify`]
    /// succeeded).
    pub fn id(&self) -> AgreementId {
        AgreementId::of_encoded_terms(self.request.body())
    }

    /// Decodes the terms without checking signatures: only for agreements read back from the
    /// local store, which verified them before storing.
    pub fn terms_trusted(&self) -> Result<ContractTerms, DecodeError> {
        self.request.decode_trusted().map(|r| r.terms)
    }

    /// The consumer's signed request inside the agreement.
    pub fn request(&self) -> &Signed<ContractRequest> {
        &self.request
    }

    /// The key that countersigned. Not trustworthy until [`Agreement::verify`] succeeded.
    pub fn provider(&self) -> PublicKey {
        self.provider
    }

    /// Encodes for the wire or the store.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes with the agreement size limit; call [`Agreement::verify`] next.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_AGREEMENT_BYTES)
    }

    /// Assembles an agreement without any check: only for tests that need a forgery.
    #[doc(hidden)]
    pub fn from_parts_unchecked(
        request: Signed<ContractRequest>,
        provider: PublicKey,
        provider_signature: Signature,
    ) -> Self {
        Self {
            request,
            provider,
            provider_signature,
        }
    }
}

/// The provider's refusal of a request, signed by the provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// Id of the refused terms.
    pub agreement_id: AgreementId,
    /// The provider's key; must equal the signer.
    pub provider: PublicKey,
    /// Why, for the consumer's operator (a policy violation or the operator's `--reason`).
    pub reason: String,
    /// When, Unix milliseconds.
    pub at_ms: u64,
}

impl Signable for Rejection {
    const CONTEXT: &'static str = "meshnode/rejection/v1";
    const MAX_BODY: usize = MAX_NOTICE_BYTES;
}

/// Ends an agreement early. Signed by the provider (revocation) or the consumer (withdrawal);
/// sent to the other party and gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The agreement ended.
    pub agreement_id: AgreementId,
    /// Who ends it; must equal the signer and be a party of the agreement.
    pub by: PublicKey,
    /// Why, for the other party.
    pub reason: String,
    /// When, Unix milliseconds.
    pub at_ms: u64,
}

impl Signable for Revocation {
    const CONTEXT: &'static str = "meshnode/revocation/v1";
    const MAX_BODY: usize = MAX_NOTICE_BYTES;
}

/// Why a rejection or revocation is not acceptable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    /// The envelope does not decode or its signature does not verify.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The body names a different key than the one that signed.
    #[error("the notice claims to be from {claimed} but was signed by {signer}")]
    SignerMismatch {
        /// Key named in the body (`provider` or `by`).
        claimed: PublicKey,
        /// Key that signed.
        signer: PublicKey,
    },
    /// The notice is about another agreement.
    #[error("the notice is about agreement {actual}, not {expected}")]
    WrongAgreement {
        /// Id of the terms it was checked against.
        expected: AgreementId,
        /// Id it names.
        actual: AgreementId,
    },
    /// The signer is not allowed to issue it for this agreement.
    #[error("{signer} is not {allowed} of this agreement")]
    NotAllowed {
        /// Key that signed.
        signer: PublicKey,
        /// Who may: "the provider" or "a party".
        allowed: &'static str,
    },
}

/// Checks a rejection of `terms`: good signature, by `terms.provider`, about these terms.
pub fn verify_rejection(
    rejection: &Signed<Rejection>,
    terms: &ContractTerms,
) -> Result<Rejection, NoticeError> {
    let body = rejection.verify()?;
    if body.provider != rejection.signer() {
        return Err(NoticeError::SignerMismatch {
            claimed: body.provider,
            signer: rejection.signer(),
        });
    }
    if body.provider != terms.provider {
        return Err(NoticeError::NotAllowed {
            signer: body.provider,
            allowed: "the provider",
        });
    }
    check_agreement_id(body.agreement_id, terms)?;
    Ok(body)
}

/// Checks a revocation without the terms, as a gossip relay must: good signature and `by` is
/// the signer. Parties then call [`verify_revocation`].
pub fn verify_revocation_signer(
    revocation: &Signed<Revocation>,
) -> Result<Revocation, NoticeError> {
    let body = revocation.verify()?;
    if body.by != revocation.signer() {
        return Err(NoticeError::SignerMismatch {
            claimed: body.by,
            signer: revocation.signer(),
        });
    }
    Ok(body)
}

/// Checks a revocation of `terms`: good signature, by the provider or the consumer, about
/// these terms.
pub fn verify_revocation(
    revocation: &Signed<Revocation>,
    terms: &ContractTerms,
) -> Result<Revocation, NoticeError> {
    let body = verify_revocation_signer(revocation)?;
    if body.by != terms.provider && body.by != terms.consumer {
        return Err(NoticeError::NotAllowed {
            signer: body.by,
            allowed: "a party",
        });
    }
    check_agreement_id(body.agreement_id, terms)?;
    Ok(body)
}

fn check_agreement_id(actual: AgreementId, terms: &ContractTerms) -> Result<(), NoticeError> {
    let expected = terms.id();
    if actual == expected {
        Ok(())
    } else {
        Err(NoticeError::WrongAgreement { expected, actual })
    }
}

/// Consumer → provider on `/meshnode/contract/1` (a revocation may also go provider →
/// consumer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContractMessage {
    /// Propose terms. Answered with `Agreed`, `Pending` or `Rejected`.
    Request(Signed<ContractRequest>),
    /// Ask for the current state of a request or agreement.
    Status(AgreementId),
    /// Ask for the state of several requests or agreements with the same provider at once
    /// (at most [`MAX_STATUS_BATCH`]). Answered with `Statuses`.
    StatusBatch(Vec<AgreementId>),
    /// End an agreement. Answered with `Revoked` (the revocation the receiver now holds).
    Revoke(Signed<Revocation>),
    /// Provider → consumer, right after the provider decided a pending request: the signed
    /// decision a status poll would return, so the consumer need not wait for its next poll.
    /// Applied only to a pending request of the receiver's own to the sender
    /// ([`crate::contract_sync::check_notice`]); answered with the receiver's state of the
    /// contract (`Unknown` when ignored).
    Decided(Decision),
}

/// A provider's decision on a request, as pushed in [`ContractMessage::Decided`]: exactly the
/// signed agreement or signed rejection a status reply carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// As [`ContractReply::Agreed`].
    Agreed(Agreement),
    /// As [`ContractReply::Rejected`].
    Rejected(Signed<Rejection>),
}

impl Decision {
    /// The contract the decision claims to be about, read without checking any signature:
    /// only for finding the receiver's own record, against whose terms the decision is then
    /// verified like a status reply.
    pub fn claimed_id(&self) -> Result<AgreementId, DecodeError> {
        match self {
            Decision::Agreed(agreement) => Ok(agreement.id()),
            Decision::Rejected(rejection) => rejection.decode_trusted().map(|r| r.agreement_id),
        }
    }

    /// The decision as the status reply that carries the same signed record.
    pub fn into_reply(self) -> ContractReply {
        match self {
            Decision::Agreed(agreement) => ContractReply::Agreed(agreement),
            Decision::Rejected(rejection) => ContractReply::Rejected(rejection),
        }
    }
}

impl ContractMessage {
    /// Encodes for the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes with [`MAX_CONTRACT_MESSAGE`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_CONTRACT_MESSAGE)
    }
}

/// Answer to a [`ContractMessage`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContractReply {
    /// Agreed: the co-signed agreement. Whether it has expired follows from its terms
    /// ([`effective_state`]).
    Agreed(Agreement),
    /// Waiting for the provider's operator.
    Pending(AgreementId),
    /// Refused, with the provider's signed reason.
    Rejected(Signed<Rejection>),
    /// Ended early: the revocation in force (also the acknowledgement of `Revoke`).
    Revoked(Signed<Revocation>),
    /// The receiver holds no request or agreement with this id.
    Unknown(AgreementId),
    /// The message could not be handled (malformed, not a party, storage failure...).
    Error(String),
    /// The answers to `StatusBatch`, in the order asked. May hold fewer entries than asked
    /// when they would not fit in one reply: the consumer asks again for the rest.
    Statuses(Vec<StatusEntry>),
    /// Over the consumer's budget: nothing was stored; try again later.
    Busy(BudgetRefusal),
}

/// One answer of [`ContractReply::Statuses`]. Its own type (not a nested [`ContractReply`]) so
/// that a reply cannot nest replies to any depth.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusEntry {
    /// As [`ContractReply::Agreed`].
    Agreed(Agreement),
    /// As [`ContractReply::Pending`].
    Pending(AgreementId),
    /// As [`ContractReply::Rejected`].
    Rejected(Signed<Rejection>),
    /// As [`ContractReply::Revoked`].
    Revoked(Signed<Revocation>),
    /// As [`ContractReply::Unknown`].
    Unknown(AgreementId),
}

impl StatusEntry {
    /// The entry as a single reply.
    pub fn into_reply(self) -> ContractReply {
        match self {
            StatusEntry::Agreed(a) => ContractReply::Agreed(a),
            StatusEntry::Pending(id) => ContractReply::Pending(id),
            StatusEntry::Rejected(r) => ContractReply::Rejected(r),
            StatusEntry::Revoked(r) => ContractReply::Revoked(r),
            StatusEntry::Unknown(id) => ContractReply::Unknown(id),
        }
    }

    /// The entry for a single reply; `None` for replies that are not a status.
    pub fn from_reply(reply: ContractReply) -> Option<Self> {
        Some(match reply {
            ContractReply::Agreed(a) => StatusEntry::Agreed(a),
            ContractReply::Pending(id) => StatusEntry::Pending(id),
            ContractReply::Rejected(r) => StatusEntry::Rejected(r),
            ContractReply::Revoked(r) => StatusEntry::Revoked(r),
            ContractReply::Unknown(id) => StatusEntry::Unknown(id),
            ContractReply::Error(_) | ContractReply::Statuses(_) | ContractReply::Busy(_) => {
                return None;
            }
        })
    }

    /// Encoded size, for filling a reply up to [`MAX_CONTRACT_REPLY`].
    pub fn encoded_len(&self) -> usize {
        codec::encode(self).len()
    }
}

impl ContractReply {
    /// Encodes for the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes with [`MAX_CONTRACT_REPLY`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_CONTRACT_REPLY)
    }
}

/// Where a contract is in its lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContractState {
    /// Received (provider) or sent (consumer); not decided yet.
    Requested,
    /// Parked for the provider's operator (`share accept` / `share reject`).
    Pending,
    /// Co-signed and in force.
    Agreed,
    /// Refused by policy or by the operator. Final.
    Rejected,
    /// Ended early by either party. Final.
    Revoked,
    /// Past `valid_until_ms`. Final.
    Expired,
}

impl ContractState {
    /// Every state, for tables and metrics.
    pub const ALL: [ContractState; 6] = [
        ContractState::Requested,
        ContractState::Pending,
        ContractState::Agreed,
        ContractState::Rejected,
        ContractState::Revoked,
        ContractState::Expired,
    ];

    /// Lowercase label used in the CLI and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            ContractState::Requested => "requested",
            ContractState::Pending => "pending",
            ContractState::Agreed => "agreed",
            ContractState::Rejected => "rejected",
            ContractState::Revoked => "revoked",
            ContractState::Expired => "expired",
        }
    }

    /// True for states no event leaves.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            ContractState::Rejected | ContractState::Revoked | ContractState::Expired
        )
    }
}

impl fmt::Display for ContractState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ContractState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ContractState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown contract state `{s}`"))
    }
}

/// Something that happens to a contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContractEvent {
    /// Policy says `manual`: wait for the operator.
    ParkForOperator,
    /// Agreed: automatically (from `Requested`) or by the operator (from `Pending`).
    Approve,
    /// Refused by policy or by the operator.
    Reject,
    /// A valid revocation arrived or was issued.
    Revoke,
    /// The validity window ended.
    Expire,
}

impl ContractEvent {
    /// Every event, for tables.
    pub const ALL: [ContractEvent; 5] = [
        ContractEvent::ParkForOperator,
        ContractEvent::Approve,
        ContractEvent::Reject,
        ContractEvent::Revoke,
        ContractEvent::Expire,
    ];

    /// The state this event leads to when it is legal.
    pub fn target(&self) -> ContractState {
        match self {
            ContractEvent::ParkForOperator => ContractState::Pending,
            ContractEvent::Approve => ContractState::Agreed,
            ContractEvent::Reject => ContractState::Rejected,
            ContractEvent::Revoke => ContractState::Revoked,
            ContractEvent::Expire => ContractState::Expired,
        }
    }
}

/// An event that the current state does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a contract cannot go from {from} to {to} ({event:?})")]
pub struct TransitionError {
    /// The current state.
    pub from: ContractState,
    /// The state the event would lead to.
    pub to: ContractState,
    /// The refused event.
    pub event: ContractEvent,
}

/// The negotiation state machine. Legal: requested → pending | agreed | rejected,
/// pending → agreed | rejected, agreed → revoked | expired. Everything else is an error.
pub fn transition(
    state: ContractState,
    event: ContractEvent,
) -> Result<ContractState, TransitionError> {
    use ContractEvent as E;
    use ContractState as S;
    let legal = matches!(
        (state, event),
        (S::Requested, E::ParkForOperator | E::Approve | E::Reject)
            | (S::Pending, E::Approve | E::Reject)
            | (S::Agreed, E::Revoke | E::Expire)
    );
    if legal {
        Ok(event.target())
    } else {
        Err(TransitionError {
            from: state,
            to: event.target(),
            event,
        })
    }
}

/// The state to show and enforce: an agreed contract at or past `valid_until_ms` is expired.
pub fn effective_state(stored: ContractState, valid_until_ms: u64, now_ms: u64) -> ContractState {
    if stored == ContractState::Agreed && now_ms >= valid_until_ms {
        ContractState::Expired
    } else {
        stored
    }
}

/// What the provider does with a request that satisfies the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyDecision {
    /// Countersign at once.
    AutoApprove,
    /// Park as pending for the operator.
    NeedsOperator,
}

/// Why a request breaks the product policy. The `Display` text is sent to the consumer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyViolation {
    /// The terms name another product or provider than the descriptor.
    #[error("the request is for product {requested}, but this is {offered}")]
    WrongProduct {
        /// `owner-hex/name` from the terms (and the provider key when it differs).
        requested: String,
        /// `owner-hex/name` of the descriptor.
        offered: String,
    },
    /// The product is retired.
    #[error("product {0} is retired and no longer shared")]
    Retired(String),
    /// `valid_until_ms` is not after `valid_from_ms`.
    #[error("the validity window is empty: it ends ({until_ms}) before it starts ({from_ms})")]
    EmptyValidity {
        /// `valid_from_ms`.
        from_ms: u64,
        /// `valid_until_ms`.
        until_ms: u64,
    },
    /// The validity window starts later than now, beyond the clock-skew tolerance.
    #[error(
        "the validity window starts at {from_ms}, after now ({now_ms}) plus the tolerated clock skew: check the consumer's clock"
    )]
    NotYetValid {
        /// `valid_from_ms`.
        from_ms: u64,
        /// Evaluation time.
        now_ms: u64,
    },
    /// The validity window ended before the request was evaluated.
    #[error("the validity window ended at {until_ms}, before now ({now_ms})")]
    AlreadyEnded {
        /// `valid_until_ms`.
        until_ms: u64,
        /// Evaluation time.
        now_ms: u64,
    },
    /// `min_version..=max_version` holds no version.
    #[error("the version range {min}..={max} covers no version")]
    EmptyVersionRange {
        /// `min_version`.
        min: u64,
        /// `max_version`.
        max: u64,
    },
    /// No purpose given.
    #[error("state a purpose for the data")]
    MissingPurpose,
    /// The purpose is not one the policy allows.
    #[error("purpose `{purpose}` is not allowed; allowed purposes: {}", allowed.join(", "))]
    PurposeNotAllowed {
        /// The stated purpose.
        purpose: String,
        /// The policy's allowed purposes.
        allowed: Vec<String>,
    },
    /// `columns` is an empty list.
    #[error("the request asks for no columns")]
    NoColumns,
    /// `columns` lists more names than a product can have columns.
    #[error(
        "the request lists {count} columns; a product has at most {max}: list each column once"
    )]
    TooManyColumns {
        /// Entries in the list.
        count: usize,
        /// [`MAX_COLUMNS`].
        max: usize,
    },
    /// `columns` names a column more than once.
    #[error("column `{column}` is listed more than once: list each column once")]
    DuplicateColumn {
        /// The first name listed again.
        column: String,
    },
    /// Requested columns are not in the schema.
    #[error("unknown columns: {}; the product has: {}", columns.join(", "), available.join(", "))]
    UnknownColumns {
        /// The unknown names.
        columns: Vec<String>,
        /// The schema's columns.
        available: Vec<String>,
    },
    /// Restricted columns would be shared.
    #[error("restricted columns cannot be shared: {}", columns.join(", "))]
    RestrictedColumns {
        /// The restricted columns asked for.
        columns: Vec<String>,
    },
    /// `*` (all current and future non-restricted columns) while every column is restricted.
    #[error("every column of this product is restricted: nothing can be shared")]
    AllRestricted,
    /// The validity is longer than `max_contract_days`.
    #[error("the contract would last {days} days; this product allows at most {max}")]
    TooLong {
        /// Requested days, rounded up.
        days: u64,
        /// The policy's limit.
        max: u32,
    },
    /// The filter does not parse or does not fit the schema.
    #[error("invalid filter: {0}")]
    BadFilter(FilterError),
    /// The filter reads restricted columns, which would leak their content.
    #[error("the filter reads restricted columns: {}", columns.join(", "))]
    FilterOnRestricted {
        /// The restricted columns the filter reads.
        columns: Vec<String>,
    },
}

/// Evaluates `terms` against the product policy of `descriptor` at `now_ms`, tolerating
/// clocks that differ by up to `skew_ms`. Checks, in this order (the first violation is
/// returned): product and provider, product status, validity window, version range,
/// purpose, columns (empty, more than [`MAX_COLUMNS`], unknown, restricted, listed twice),
/// duration, filter. The signature and consumer checks are [`verify_request`]'s. The column
/// checks are hash lookups, so their cost is linear in the list and the schema.
pub fn evaluate(
    descriptor: &ProductDescriptor,
    terms: &ContractTerms,
    now_ms: u64,
    skew_ms: u64,
) -> Result<PolicyDecision, PolicyViolation> {
    use PolicyViolation as V;
    let policy = &descriptor.policy;
    if terms.product != descriptor.id() || terms.provider != descriptor.owner {
        let mut requested = terms.product.storage_key();
        if terms.provider != terms.product.owner {
            requested.push_str(&format!(" from provider {}", terms.provider));
        }
        return Err(V::WrongProduct {
            requested,
            offered: descriptor.id().storage_key(),
        });
    }
    if descriptor.status == Status::Retired {
        return Err(V::Retired(descriptor.display_name()));
    }
    if terms.valid_until_ms <= terms.valid_from_ms {
        return Err(V::EmptyValidity {
            from_ms: terms.valid_from_ms,
            until_ms: terms.valid_until_ms,
        });
    }
    if terms.valid_from_ms > now_ms.saturating_add(skew_ms) {
        return Err(V::NotYetValid {
            from_ms: terms.valid_from_ms,
            now_ms,
        });
    }
    if terms.valid_until_ms.saturating_add(skew_ms) <= now_ms {
        return Err(V::AlreadyEnded {
            until_ms: terms.valid_until_ms,
            now_ms,
        });
    }
    if let Some(max) = terms.max_version
        && (max < terms.min_version || max == 0)
    {
        return Err(V::EmptyVersionRange {
            min: terms.min_version,
            max,
        });
    }
    if terms.purpose.trim().is_empty() {
        return Err(V::MissingPurpose);
    }
    if !policy.allowed_purposes.is_empty() && !policy.allowed_purposes.contains(&terms.purpose) {
        return Err(V::PurposeNotAllowed {
            purpose: terms.purpose.clone(),
            allowed: policy.allowed_purposes.clone(),
        });
    }
    let restricted: HashSet<&str> = policy
        .restricted_columns
        .iter()
        .map(String::as_str)
        .collect();
    match &terms.columns {
        Columns::Listed(columns) => {
            if columns.is_empty() {
                return Err(V::NoColumns);
            }
            if columns.len() > MAX_COLUMNS {
                return Err(V::TooManyColumns {
                    count: columns.len(),
                    max: MAX_COLUMNS,
                });
            }
            let schema: HashSet<&str> = descriptor.column_names().collect();
            let unknown = distinct(columns.iter().filter(|c| !schema.contains(c.as_str())));
            if !unknown.is_empty() {
                return Err(V::UnknownColumns {
                    columns: unknown,
                    available: descriptor.column_names().map(str::to_owned).collect(),
                });
            }
            let restricted = distinct(columns.iter().filter(|c| restricted.contains(c.as_str())));
            if !restricted.is_empty() {
                return Err(V::RestrictedColumns {
                    columns: restricted,
                });
            }
            let mut seen = HashSet::with_capacity(columns.len());
            if let Some(column) = columns.iter().find(|c| !seen.insert(c.as_str())) {
                return Err(V::DuplicateColumn {
                    column: column.clone(),
                });
            }
        }
        Columns::AllCurrentAndFuture => {
            if terms
                .granted_columns(&descriptor.schema, &policy.restricted_columns)
                .is_empty()
            {
                return Err(V::AllRestricted);
            }
        }
    }
    if policy.max_contract_days > 0 && terms.validity_days() > u64::from(policy.max_contract_days) {
        return Err(V::TooLong {
            days: terms.validity_days(),
            max: policy.max_contract_days,
        });
    }
    if let Some(filter) = terms.parsed_filter().map_err(V::BadFilter)? {
        filter.check(&descriptor.schema).map_err(V::BadFilter)?;
        let leaked = distinct(filter.columns().filter(|c| restricted.contains(c)));
        if !leaked.is_empty() {
            return Err(V::FilterOnRestricted { columns: leaked });
        }
    }
    Ok(match policy.approval {
        crate::descriptor::Approval::Auto => PolicyDecision::AutoApprove,
        crate::descriptor::Approval::Manual => PolicyDecision::NeedsOperator,
    })
}

/// The items, once each, in first-seen order.
fn distinct<'a, S: AsRef<str> + 'a + ?Sized>(items: impl Iterator<Item = &'a S>) -> Vec<String> {
    let mut seen: HashSet<&str> = HashSet::new();
    items
        .map(AsRef::as_ref)
        .filter(|item| seen.insert(item))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {

    #[test]
    fn a_clipped_reason_fits_a_notice_that_verifies() {
        let identity = Identity::from_secret_bytes([3; 32]);
        for reason in [
            "short".to_owned(),
            "é".repeat(5000),
            "x".repeat(MAX_REASON_BYTES),
        ] {
            let clipped = clipped_reason(&reason);
            assert!(clipped.len() <= MAX_REASON_BYTES);
            if reason.len() <= MAX_REASON_BYTES {
                assert_eq!(clipped, reason);
            } else {
                assert!(
                    clipped.ends_with('…') && reason.starts_with(clipped.trim_end_matches('…'))
                );
            }
            let notice = Signed::sign(
                &identity,
                &Revocation {
                    agreement_id: AgreementId([9; 32]),
                    by: identity.public_key(),
                    reason: clipped.clone(),
                    at_ms: u64::MAX,
                },
            );
            let bytes = notice.to_bytes();
            let back = Signed::<Revocation>::from_bytes(&bytes).unwrap();
            assert_eq!(back.verify().unwrap().reason, clipped);
            let rejection = Signed::sign(
                &identity,
                &Rejection {
                    agreement_id: AgreementId([9; 32]),
                    provider: identity.public_key(),
                    reason: clipped.clone(),
                    at_ms: u64::MAX,
                },
            );
            assert_eq!(rejection.verify().unwrap().reason, clipped);
        }
    }

    use super::*;
    use crate::descriptor::tests::sample;
    use crate::descriptor::{Approval, ColumnSchema};
    use proptest::prelude::*;

    pub(crate) const NOW: u64 = 1_700_000_000_000;

    pub(crate) fn provider() -> Identity {
        Identity::from_secret_bytes([1; 32])
    }

    pub(crate) fn consumer() -> Identity {
        Identity::from_secret_bytes([2; 32])
    }

    fn mallory() -> Identity {
        Identity::from_secret_bytes([3; 32])
    }

    /// A descriptor with columns order_id (Int64), region (Utf8), email (Utf8, restricted).
    pub(crate) fn descriptor() -> ProductDescriptor {
        let mut d = sample(&provider(), "product-sales", 3);
        d.schema.insert(
            1,
            ColumnSchema {
                name: "region".into(),
                data_type: "Utf8".into(),
                nullable: false,
            },
        );
        d.policy.allowed_purposes = vec!["analytics".into(), "churn-model".into()];
        d
    }

    /// Terms that satisfy [`descriptor`]'s policy.
    pub(crate) fn terms() -> ContractTerms {
        ContractTerms {
            product: descriptor().id(),
            provider_domain: "sales".into(),
            consumer_domain: "churn".into(),
            provider: provider().public_key(),
            consumer: consumer().public_key(),
            min_version: 1,
            max_version: None,
            purpose: "analytics".into(),
            columns: Columns::Listed(vec!["region".into(), "order_id".into()]),
            filter: Some("region = 'EU'".into()),
            valid_from_ms: NOW,
            valid_until_ms: NOW + 30 * DAY_MS,
            nonce: [7; 16],
        }
    }

    #[test]
    fn every_column_of_the_widest_publishable_product_can_be_requested_and_agreed() {
        // 1,100 columns of 48-byte names: a descriptor near MAX_DESCRIPTOR_BYTES.
        let mut wide = descriptor();
        wide.schema = (0..1100)
            .map(|i| ColumnSchema {
                name: format!("c{i:04}_{}", "x".repeat(42)),
                data_type: "Int64".into(),
                nullable: true,
            })
            .collect();
        wide.policy.restricted_columns.clear();
        wide.stewardship.column_tags.clear();
        let envelope = wide.sign_for_publication(&provider()).unwrap();
        assert!(envelope.body().len() > crate::descriptor::MAX_DESCRIPTOR_BYTES / 2);
        let terms = ContractTerms {
            product: wide.id(),
            columns: Columns::Listed(wide.schema.iter().map(|c| c.name.clone()).collect()),
            filter: Some(format!("region = '{}'", "e".repeat(3900))),
            ..terms()
        };
        let request = Signed::sign(&consumer(), &ContractRequest { terms });
        assert_eq!(verify_request(&request).map(|_| ()), Ok(()));
        let message = ContractMessage::Request(request.clone()).to_bytes();
        // Past the 32 KiB terms this limit once was.
        assert!(message.len() > 48 * 1024, "{}", message.len());
        assert!(ContractMessage::from_bytes(&message).is_ok());
        let agreement = Agreement::countersign(&provider(), request).unwrap();
        let reply = ContractReply::Agreed(agreement).to_bytes();
        assert!(ContractReply::from_bytes(&reply).is_ok());
    }

    pub(crate) fn agreement() -> Agreement {
        let request = Signed::sign(&consumer(), &ContractRequest { terms: terms() });
        Agreement::countersign(&provider(), request).unwrap()
    }

    #[test]
    fn agreement_ids() {
        let t = terms();
        let id = t.id();
        assert_eq!(id.0, *blake3::hash(&codec::encode(&t)).as_bytes());
        assert_eq!(id.to_string().len(), 64);
        assert_eq!(id.short(), id.to_string()[..12]);
        assert_eq!(id.to_string().parse::<AgreementId>().unwrap(), id);
        assert_eq!(
            id.short().parse::<AgreementId>().unwrap_err().to_string(),
            format!(
                "an agreement id is 64 hexadecimal digits, not `{}`",
                id.short()
            )
        );
        let mut other = t.clone();
        other.nonce = [8; 16];
        assert_ne!(other.id(), id);
        assert_eq!(agreement().id(), id);
    }

    #[test]
    fn co_signed_agreement_verifies_and_round_trips() {
        let a = agreement();
        assert_eq!(a.verify().unwrap(), terms());
        assert_eq!(a.provider(), provider().public_key());
        assert_eq!(a.request().signer(), consumer().public_key());
        let back = Agreement::from_bytes(&a.to_bytes()).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.verify().unwrap(), terms());
        assert_eq!(back.terms_trusted().unwrap(), terms());
        assert!(a.to_bytes().len() < MAX_AGREEMENT_BYTES);
    }

    #[test]
    fn tampered_terms_are_refused() {
        let a = agreement();
        let mut t = terms();
        t.columns = Columns::AllCurrentAndFuture;
        let forged = Agreement::from_parts_unchecked(
            a.request().with_tampered_body(codec::encode(&t)),
            a.provider(),
            a.provider_signature,
        );
        assert_eq!(
            forged.verify(),
            Err(AgreementError::Request(EnvelopeError::Signature(
                SignatureError::Mismatch
            )))
        );
    }

    #[test]
    fn swapped_consumer_key_is_refused() {
        // The envelope claims another signer than the one who signed.
        let a = agreement();
        let forged = Agreement::from_parts_unchecked(
            a.request().with_claimed_signer(mallory().public_key()),
            a.provider(),
            a.provider_signature,
        );
        assert_eq!(
            forged.verify(),
            Err(AgreementError::Request(EnvelopeError::Signature(
                SignatureError::Mismatch
            )))
        );
    }

    #[test]
    fn request_signed_by_someone_else_than_the_consumer_is_refused() {
        // Mallory signs terms that name the real consumer.
        let request = Signed::sign(&mallory(), &ContractRequest { terms: terms() });
        let expected = || AgreementError::WrongConsumer {
            expected: consumer().public_key(),
            signer: mallory().public_key(),
        };
        assert_eq!(verify_request(&request), Err(expected()));
        assert_eq!(
            Agreement::countersign(&provider(), request.clone()).unwrap_err(),
            expected()
        );
        // Even with a genuine countersignature.
        let forged = Agreement::from_parts_unchecked(
            request.clone(),
            provider().public_key(),
            provider().sign(AGREEMENT_CONTEXT, request.body()),
        );
        assert_eq!(forged.verify().unwrap_err(), expected());
        assert_eq!(
            forged.verify().unwrap_err().to_string(),
            format!(
                "the request names consumer {} but was signed by {}",
                consumer().public_key(),
                mallory().public_key()
            )
        );
    }

    #[test]
    fn provider_signature_by_another_key_is_refused() {
        let a = agreement();
        let body = a.request().body().to_vec();
        // Mallory countersigns and says so.
        let as_mallory = Agreement::from_parts_unchecked(
            a.request().clone(),
            mallory().public_key(),
            mallory().sign(AGREEMENT_CONTEXT, &body),
        );
        assert_eq!(
            as_mallory.verify(),
            Err(AgreementError::WrongProvider {
                expected: provider().public_key(),
                actual: mallory().public_key(),
            })
        );
        // Mallory countersigns and claims to be the provider.
        let claiming = Agreement::from_parts_unchecked(
            a.request().clone(),
            provider().public_key(),
            mallory().sign(AGREEMENT_CONTEXT, &body),
        );
        assert_eq!(
            claiming.verify(),
            Err(AgreementError::ProviderSignature(SignatureError::Mismatch))
        );
        // The provider's signature under another context (e.g. a rejection) does not count.
        let wrong_context = Agreement::from_parts_unchecked(
            a.request().clone(),
            provider().public_key(),
            provider().sign(Rejection::CONTEXT, &body),
        );
        assert_eq!(
            wrong_context.verify(),
            Err(AgreementError::ProviderSignature(SignatureError::Mismatch))
        );
        // And Mallory cannot countersign for the provider.
        let request = a.request().clone();
        assert_eq!(
            Agreement::countersign(&mallory(), request).unwrap_err(),
            AgreementError::WrongProvider {
                expected: provider().public_key(),
                actual: mallory().public_key(),
            }
        );
    }

    #[test]
    fn provider_must_own_the_product() {
        let mut t = terms();
        t.provider = mallory().public_key();
        let request = Signed::sign(&consumer(), &ContractRequest { terms: t });
        assert_eq!(
            Agreement::countersign(&mallory(), request).unwrap_err(),
            AgreementError::ProviderNotOwner {
                provider: mallory().public_key(),
                owner: provider().public_key(),
            }
        );
    }

    #[test]
    fn non_canonical_encoding_is_refused() {
        // postcard accepts overlong varints: the product name length 13 written as two bytes
        // decodes to the same terms. Such bytes would give the same terms another id.
        let mut padded = codec::encode(&terms());
        let name_len_at = 32; // right after the 32-byte owner key
        assert_eq!(padded[name_len_at] as usize, "product-sales".len());
        padded.splice(
            name_len_at..=name_len_at,
            [0x80 | padded[name_len_at], 0x00],
        );
        assert_eq!(
            codec::decode::<ContractTerms>(&padded, MAX_TERMS_BYTES).unwrap(),
            terms()
        );
        let request = Signed::<ContractRequest>::sign_raw_for_tests(&consumer(), padded);
        assert_eq!(verify_request(&request), Err(AgreementError::NonCanonical));
        assert_eq!(
            Agreement::countersign(&provider(), request).unwrap_err(),
            AgreementError::NonCanonical
        );
    }

    #[test]
    fn garbage_request_is_refused() {
        let request = Signed::<ContractRequest>::sign_raw_for_tests(&consumer(), vec![0xff; 10]);
        assert!(matches!(
            verify_request(&request),
            Err(AgreementError::Request(EnvelopeError::Decode(
                DecodeError::Malformed(_)
            )))
        ));
    }

    #[test]
    fn rejections() {
        let t = terms();
        let rejection = Rejection {
            agreement_id: t.id(),
            provider: provider().public_key(),
            reason: "not now".into(),
            at_ms: NOW,
        };
        let signed = Signed::sign(&provider(), &rejection);
        assert_eq!(verify_rejection(&signed, &t), Ok(rejection.clone()));

        let by_mallory = Signed::sign(&mallory(), &rejection);
        assert_eq!(
            verify_rejection(&by_mallory, &t),
            Err(NoticeError::SignerMismatch {
                claimed: provider().public_key(),
                signer: mallory().public_key(),
            })
        );
        let mut from_consumer = rejection.clone();
        from_consumer.provider = consumer().public_key();
        assert_eq!(
            verify_rejection(&Signed::sign(&consumer(), &from_consumer), &t),
            Err(NoticeError::NotAllowed {
                signer: consumer().public_key(),
                allowed: "the provider",
            })
        );
        let mut other = t.clone();
        other.nonce = [0; 16];
        assert_eq!(
            verify_rejection(&signed, &other),
            Err(NoticeError::WrongAgreement {
                expected: other.id(),
                actual: t.id(),
            })
        );
    }

    #[test]
    fn revocations_by_either_party_only() {
        let t = terms();
        for party in [provider(), consumer()] {
            let rev = Revocation {
                agreement_id: t.id(),
                by: party.public_key(),
                reason: "done".into(),
                at_ms: NOW,
            };
            let signed = Signed::sign(&party, &rev);
            assert_eq!(verify_revocation(&signed, &t), Ok(rev.clone()));
            assert_eq!(verify_revocation_signer(&signed), Ok(rev));
        }
        let rev = Revocation {
            agreement_id: t.id(),
            by: mallory().public_key(),
            reason: "mine now".into(),
            at_ms: NOW,
        };
        let err = verify_revocation(&Signed::sign(&mallory(), &rev), &t).unwrap_err();
        assert_eq!(
            err,
            NoticeError::NotAllowed {
                signer: mallory().public_key(),
                allowed: "a party"
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "{} is not a party of this agreement",
                mallory().public_key()
            )
        );
        // Mallory signs a revocation that claims to be by the provider.
        let mut claiming = rev.clone();
        claiming.by = provider().public_key();
        assert_eq!(
            verify_revocation(&Signed::sign(&mallory(), &claiming), &t),
            Err(NoticeError::SignerMismatch {
                claimed: provider().public_key(),
                signer: mallory().public_key(),
            })
        );
        // Tampered body.
        let good = Signed::sign(&provider(), &claiming);
        let mut tampered = claiming.clone();
        tampered.reason = "other".into();
        assert_eq!(
            verify_revocation(&good.with_tampered_body(codec::encode(&tampered)), &t),
            Err(NoticeError::Envelope(EnvelopeError::Signature(
                SignatureError::Mismatch
            )))
        );
    }

    #[test]
    fn contract_messages_round_trip() {
        let t = terms();
        let request = Signed::sign(&consumer(), &ContractRequest { terms: t.clone() });
        let rev = Signed::sign(
            &consumer(),
            &Revocation {
                agreement_id: t.id(),
                by: consumer().public_key(),
                reason: "no longer needed".into(),
                at_ms: NOW,
            },
        );
        let rej = Signed::sign(
            &provider(),
            &Rejection {
                agreement_id: t.id(),
                provider: provider().public_key(),
                reason: "no".into(),
                at_ms: NOW,
            },
        );
        for m in [
            ContractMessage::Request(request),
            ContractMessage::Status(t.id()),
            ContractMessage::StatusBatch(vec![t.id(); 3]),
            ContractMessage::Revoke(rev.clone()),
        ] {
            assert_eq!(ContractMessage::from_bytes(&m.to_bytes()).unwrap(), m);
        }
        for r in [
            ContractReply::Agreed(agreement()),
            ContractReply::Pending(t.id()),
            ContractReply::Rejected(rej),
            ContractReply::Revoked(rev),
            ContractReply::Unknown(t.id()),
            ContractReply::Error("busy".into()),
            ContractReply::Statuses(vec![
                StatusEntry::Pending(t.id()),
                StatusEntry::Agreed(agreement()),
                StatusEntry::Unknown(t.id()),
            ]),
            ContractReply::Busy(BudgetRefusal::TooManyOpen { open: 32, max: 32 }),
        ] {
            assert_eq!(ContractReply::from_bytes(&r.to_bytes()).unwrap(), r);
        }
        assert_eq!(
            ContractMessage::from_bytes(&vec![1; MAX_CONTRACT_MESSAGE + 1]),
            Err(DecodeError::TooLarge {
                len: MAX_CONTRACT_MESSAGE + 1,
                max: MAX_CONTRACT_MESSAGE
            })
        );
        assert!(matches!(
            ContractReply::from_bytes(&[9]),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn every_transition() {
        use ContractEvent as E;
        use ContractState as S;
        // (state, event, Some(next) when legal)
        let table: [(S, E, Option<S>); 30] = [
            (S::Requested, E::ParkForOperator, Some(S::Pending)),
            (S::Requested, E::Approve, Some(S::Agreed)),
            (S::Requested, E::Reject, Some(S::Rejected)),
            (S::Requested, E::Revoke, None),
            (S::Requested, E::Expire, None),
            (S::Pending, E::ParkForOperator, None),
            (S::Pending, E::Approve, Some(S::Agreed)),
            (S::Pending, E::Reject, Some(S::Rejected)),
            (S::Pending, E::Revoke, None),
            (S::Pending, E::Expire, None),
            (S::Agreed, E::ParkForOperator, None),
            (S::Agreed, E::Approve, None),
            (S::Agreed, E::Reject, None),
            (S::Agreed, E::Revoke, Some(S::Revoked)),
            (S::Agreed, E::Expire, Some(S::Expired)),
            (S::Rejected, E::ParkForOperator, None),
            (S::Rejected, E::Approve, None),
            (S::Rejected, E::Reject, None),
            (S::Rejected, E::Revoke, None),
            (S::Rejected, E::Expire, None),
            (S::Revoked, E::ParkForOperator, None),
            (S::Revoked, E::Approve, None),
            (S::Revoked, E::Reject, None),
            (S::Revoked, E::Revoke, None),
            (S::Revoked, E::Expire, None),
            (S::Expired, E::ParkForOperator, None),
            (S::Expired, E::Approve, None),
            (S::Expired, E::Reject, None),
            (S::Expired, E::Revoke, None),
            (S::Expired, E::Expire, None),
        ];
        // The table is exhaustive.
        for state in S::ALL {
            for event in E::ALL {
                assert_eq!(
                    table
                        .iter()
                        .filter(|(s, e, _)| *s == state && *e == event)
                        .count(),
                    1,
                    "{state} {event:?}"
                );
            }
        }
        for (state, event, next) in table {
            match next {
                Some(next) => assert_eq!(transition(state, event), Ok(next), "{state} {event:?}"),
                None => {
                    let err = transition(state, event).unwrap_err();
                    assert_eq!(
                        err,
                        TransitionError {
                            from: state,
                            to: event.target(),
                            event
                        }
                    );
                    assert_eq!(
                        err.to_string(),
                        format!(
                            "a contract cannot go from {} to {} ({event:?})",
                            state.as_str(),
                            event.target().as_str()
                        )
                    );
                }
            }
            // Final states are exactly those no event leaves.
            if state.is_final() {
                assert_eq!(next, None);
            }
        }
        assert_eq!(
            transition(S::Pending, E::Revoke).unwrap_err().to_string(),
            "a contract cannot go from pending to revoked (Revoke)"
        );
    }

    #[test]
    fn effective_state_expires_agreed_contracts_only() {
        use ContractState as S;
        assert_eq!(effective_state(S::Agreed, NOW, NOW - 1), S::Agreed);
        assert_eq!(effective_state(S::Agreed, NOW, NOW), S::Expired);
        assert_eq!(effective_state(S::Agreed, NOW, NOW + 1), S::Expired);
        for state in [
            S::Requested,
            S::Pending,
            S::Rejected,
            S::Revoked,
            S::Expired,
        ] {
            assert_eq!(effective_state(state, NOW, NOW + 1), state);
        }
        for state in S::ALL {
            assert_eq!(state.as_str().parse::<S>(), Ok(state));
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{state}\"")
            );
        }
        assert_eq!(
            "done".parse::<S>(),
            Err("unknown contract state `done`".to_owned())
        );
    }

    #[test]
    fn terms_helpers() {
        let d = descriptor();
        let mut t = terms();
        let restricted = &d.policy.restricted_columns;
        assert_eq!(t.granted_columns(&d.schema, &[]), ["order_id", "region"]);
        t.columns = Columns::AllCurrentAndFuture;
        assert_eq!(
            t.granted_columns(&d.schema, &[]),
            ["order_id", "region", "email"]
        );
        assert_eq!(
            t.granted_columns(&d.schema, restricted),
            ["order_id", "region"]
        );
        t.columns = Columns::Listed(vec!["region".into(), "nope".into(), "region".into()]);
        assert_eq!(t.granted_columns(&d.schema, &[]), ["region"]);
        // A restricted column is never granted, even when listed.
        t.columns = Columns::Listed(vec!["email".into(), "region".into()]);
        assert_eq!(t.granted_columns(&d.schema, restricted), ["region"]);
        assert_eq!(t.validity_days(), 30);
        t.valid_until_ms += 1;
        assert_eq!(t.validity_days(), 31);
        assert!(t.is_valid_at(NOW, 0));
        assert!(!t.is_valid_at(NOW - 1, 0));
        assert!(!t.is_valid_at(t.valid_until_ms, 0));
        t.min_version = 2;
        t.max_version = Some(4);
        assert!(!t.covers_version(1));
        assert!(t.covers_version(2) && t.covers_version(4));
        assert!(!t.covers_version(5));
        t.max_version = None;
        assert!(t.covers_version(u64::MAX));
        assert_eq!(
            t.parsed_filter().unwrap().unwrap().to_string(),
            "region = 'EU'"
        );
    }

    #[test]
    fn pinned_columns_do_not_grow_with_new_versions() {
        // The approver saw (order_id, region) of version 3; version 4 adds `ssn`.
        let mut v4 = descriptor();
        v4.version = 4;
        v4.schema.push(ColumnSchema {
            name: "ssn".into(),
            data_type: "Utf8".into(),
            nullable: true,
        });
        let t = terms();
        assert_eq!(
            t.granted_columns(&v4.schema, &v4.policy.restricted_columns),
            ["order_id", "region"]
        );
        // Only `*`, asked for in so many words, grows; restricted columns never.
        let mut all = terms();
        all.columns = Columns::AllCurrentAndFuture;
        assert_eq!(
            all.granted_columns(&v4.schema, &v4.policy.restricted_columns),
            ["order_id", "region", "ssn"]
        );
        v4.policy.restricted_columns.push("ssn".into());
        assert_eq!(
            all.granted_columns(&v4.schema, &v4.policy.restricted_columns),
            ["order_id", "region"]
        );
        assert_eq!(
            all.columns.to_string(),
            "* (all current and future non-restricted columns)"
        );
        assert_eq!(t.columns.to_string(), "region,order_id");
        // The two meanings have different ids: one cannot pass for the other.
        assert_ne!(all.id(), t.id());
    }

    #[test]
    fn policy_ok_for_auto_and_manual() {
        let mut d = descriptor();
        assert_eq!(
            evaluate(&d, &terms(), NOW, 0),
            Ok(PolicyDecision::AutoApprove)
        );
        d.policy.approval = Approval::Manual;
        assert_eq!(
            evaluate(&d, &terms(), NOW, 0),
            Ok(PolicyDecision::NeedsOperator)
        );
        // Any purpose when the list is empty, unlimited days when max is 0, no filter.
        d.policy.allowed_purposes.clear();
        d.policy.max_contract_days = 0;
        let mut t = terms();
        t.purpose = "anything".into();
        t.valid_until_ms = NOW + 3650 * DAY_MS;
        t.filter = None;
        assert_eq!(evaluate(&d, &t, NOW, 0), Ok(PolicyDecision::NeedsOperator));
        // `*` is fine: it never includes the restricted column.
        t.columns = Columns::AllCurrentAndFuture;
        assert_eq!(evaluate(&d, &t, NOW, 0), Ok(PolicyDecision::NeedsOperator));
        // ... unless every column is restricted.
        d.policy.restricted_columns = d.column_names().map(str::to_owned).collect();
        assert_eq!(
            evaluate(&d, &t, NOW, 0),
            Err(PolicyViolation::AllRestricted)
        );
    }

    #[test]
    fn clock_skew_is_tolerated_up_to_the_limit() {
        let d = descriptor();
        // A consumer whose clock runs 3 minutes ahead.
        let mut t = terms();
        t.valid_from_ms = NOW + 180_000;
        assert_eq!(
            evaluate(&d, &t, NOW, 300_000),
            Ok(PolicyDecision::AutoApprove)
        );
        assert_eq!(
            evaluate(&d, &t, NOW, 60_000),
            Err(PolicyViolation::NotYetValid {
                from_ms: NOW + 180_000,
                now_ms: NOW
            })
        );
        assert!(t.is_valid_at(NOW, 300_000));
        assert!(!t.is_valid_at(NOW, 0));
        // Expiry, as seen by a provider whose clock runs 1 minute ahead.
        let t = terms();
        let late = t.valid_until_ms + 60_000;
        assert!(t.is_valid_at(late, 300_000));
        assert!(!t.is_valid_at(late, 60_000));
        assert!(evaluate(&d, &t, late, 300_000).is_ok());
        assert!(matches!(
            evaluate(&d, &t, late, 0),
            Err(PolicyViolation::AlreadyEnded { .. })
        ));
    }

    fn violation(change: impl FnOnce(&mut ContractTerms)) -> PolicyViolation {
        let mut t = terms();
        change(&mut t);
        evaluate(&descriptor(), &t, NOW, 0).unwrap_err()
    }

    #[test]
    fn policy_refuses_purpose_not_allowed() {
        let v = violation(|t| t.purpose = "marketing".into());
        assert_eq!(
            v,
            PolicyViolation::PurposeNotAllowed {
                purpose: "marketing".into(),
                allowed: vec!["analytics".into(), "churn-model".into()],
            }
        );
        assert_eq!(
            v.to_string(),
            "purpose `marketing` is not allowed; allowed purposes: analytics, churn-model"
        );
        assert_eq!(
            violation(|t| t.purpose = " ".into()),
            PolicyViolation::MissingPurpose
        );
    }

    #[test]
    fn policy_refuses_restricted_columns() {
        let explicit =
            violation(|t| t.columns = Columns::Listed(vec!["order_id".into(), "email".into()]));
        assert_eq!(
            explicit,
            PolicyViolation::RestrictedColumns {
                columns: vec!["email".into()],
            }
        );
        assert_eq!(
            explicit.to_string(),
            "restricted columns cannot be shared: email"
        );
        let via_filter = violation(|t| t.filter = Some("email = 'a@b.c'".into()));
        assert_eq!(
            via_filter,
            PolicyViolation::FilterOnRestricted {
                columns: vec!["email".into()]
            }
        );
        // Restricted columns read anywhere in an SQL filter: under OR, NOT, IN, IS NULL, LIKE.
        for filter in [
            "region = 'EU' OR email = 'a@b.c'",
            "NOT (region = 'EU' AND email IS NULL)",
            "region IN ('EU') AND (order_id > 1 OR email LIKE '%@b.c')",
            "email BETWEEN 'a' AND 'b'",
        ] {
            assert_eq!(
                violation(|t| t.filter = Some(filter.into())),
                PolicyViolation::FilterOnRestricted {
                    columns: vec!["email".into()]
                },
                "{filter}"
            );
        }
    }

    #[test]
    fn policy_refuses_unknown_columns() {
        let v = violation(|t| {
            t.columns = Columns::Listed(vec![
                "region".into(),
                "ssn".into(),
                "iban".into(),
                "ssn".into(),
            ])
        });
        assert_eq!(
            v.to_string(),
            "unknown columns: ssn, iban; the product has: order_id, region, email"
        );
        assert_eq!(
            violation(|t| t.columns = Columns::Listed(vec![])),
            PolicyViolation::NoColumns
        );
    }

    /// `n` distinct names of three characters of `[a-z0-9]` (`n` at most 36³).
    fn short_names(n: usize) -> Vec<String> {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        (0..n)
            .map(|i| {
                [i / 1296, i / 36 % 36, i % 36]
                    .into_iter()
                    .map(|d| char::from(ALPHABET[d]))
                    .collect()
            })
            .collect()
    }

    /// A generous bound for work that is linear in a contract message: a quadratic scan of
    /// the lists these tests build takes seconds in a debug build.
    const QUICK: std::time::Duration = std::time::Duration::from_secs(1);

    #[test]
    fn a_request_listing_thousands_of_distinct_columns_is_refused_quickly() {
        let mut t = terms();
        t.filter = None;
        t.columns = Columns::Listed(short_names(20_000));
        let request = Signed::sign(&consumer(), &ContractRequest { terms: t.clone() });
        // It fits one contract message: only the column bound stands against it.
        assert!(request.body().len() <= MAX_TERMS_BYTES);
        let message = ContractMessage::Request(request.clone()).to_bytes();
        assert!(ContractMessage::from_bytes(&message).is_ok());

        let started = std::time::Instant::now();
        let verdict = evaluate(&descriptor(), &t, NOW, 0);
        let elapsed = started.elapsed();
        assert!(elapsed < QUICK, "evaluate took {elapsed:?}");
        let violation = verdict.unwrap_err();
        assert_eq!(
            violation,
            PolicyViolation::TooManyColumns {
                count: 20_000,
                max: MAX_COLUMNS
            }
        );
        assert_eq!(
            violation.to_string(),
            "the request lists 20000 columns; a product has at most 2048: list each column once"
        );

        let started = std::time::Instant::now();
        let verified = verify_request(&request);
        let elapsed = started.elapsed();
        assert!(elapsed < QUICK, "verify_request took {elapsed:?}");
        let err = verified.unwrap_err();
        assert_eq!(
            err,
            AgreementError::TooManyColumns {
                count: 20_000,
                max: MAX_COLUMNS
            }
        );
        assert_eq!(
            err.to_string(),
            "the terms list 20000 columns; a product has at most 2048: list each column once"
        );
    }

    #[test]
    fn a_request_repeating_a_granted_column_is_refused_quickly() {
        let mut d = descriptor();
        d.schema.push(ColumnSchema {
            name: "sku".into(),
            data_type: "Utf8".into(),
            nullable: false,
        });
        let mut t = terms();
        t.filter = None;
        t.columns = Columns::Listed(vec!["sku".into(); 16_000]);
        let request = Signed::sign(&consumer(), &ContractRequest { terms: t.clone() });
        assert!(request.body().len() <= MAX_TERMS_BYTES);

        let started = std::time::Instant::now();
        let verdict = evaluate(&d, &t, NOW, 0);
        let elapsed = started.elapsed();
        assert!(elapsed < QUICK, "evaluate took {elapsed:?}");
        let too_many = PolicyViolation::TooManyColumns {
            count: 16_000,
            max: MAX_COLUMNS,
        };
        assert_eq!(verdict, Err(too_many));
        let refused = AgreementError::TooManyColumns {
            count: 16_000,
            max: MAX_COLUMNS,
        };
        assert_eq!(verify_request(&request).unwrap_err(), refused);
        // Countersigned as a provider without this bound would have: it does not verify, so
        // no fetch is served under it.
        let countersigned = Agreement::from_parts_unchecked(
            request.clone(),
            provider().public_key(),
            provider().sign(AGREEMENT_CONTEXT, request.body()),
        );
        assert_eq!(countersigned.verify().unwrap_err(), refused);
        // What such terms grant from the widest schema still takes one pass over each list.
        let mut wide: Vec<ColumnSchema> = short_names(MAX_COLUMNS - 1)
            .into_iter()
            .map(|name| ColumnSchema {
                name,
                data_type: "Int64".into(),
                nullable: true,
            })
            .collect();
        wide.push(d.schema.last().unwrap().clone());
        let started = std::time::Instant::now();
        let granted = t.granted_columns(&wide, &d.policy.restricted_columns);
        let elapsed = started.elapsed();
        assert!(elapsed < QUICK, "granted_columns took {elapsed:?}");
        assert_eq!(granted, ["sku"]);
    }

    #[test]
    fn policy_refuses_a_column_listed_twice() {
        let v = violation(|t| {
            t.columns = Columns::Listed(vec!["region".into(), "order_id".into(), "region".into()])
        });
        assert_eq!(
            v,
            PolicyViolation::DuplicateColumn {
                column: "region".into()
            }
        );
        assert_eq!(
            v.to_string(),
            "column `region` is listed more than once: list each column once"
        );
        // Within the count bound, a granted name repeated is refused just the same.
        assert_eq!(
            violation(|t| t.columns = Columns::Listed(vec!["order_id".into(); MAX_COLUMNS])),
            PolicyViolation::DuplicateColumn {
                column: "order_id".into()
            }
        );
        // As many distinct names as a product may have columns pass the count check.
        let v = violation(|t| t.columns = Columns::Listed(short_names(MAX_COLUMNS)));
        assert!(
            v.to_string().starts_with("unknown columns: aaa, aab, "),
            "{v}"
        );
    }

    #[test]
    fn policy_refuses_too_many_days() {
        let v = violation(|t| t.valid_until_ms = t.valid_from_ms + 30 * DAY_MS + 1);
        assert_eq!(v, PolicyViolation::TooLong { days: 31, max: 30 });
        assert_eq!(
            v.to_string(),
            "the contract would last 31 days; this product allows at most 30"
        );
    }

    #[test]
    fn policy_refuses_bad_filters() {
        let v = violation(|t| t.filter = Some("region ~ 'EU'".into()));
        assert!(
            v.to_string()
                .starts_with("invalid filter: the operator `~` is not supported in filters"),
            "{v}"
        );
        let v = violation(|t| t.filter = Some("order_id = 'x'".into()));
        assert!(matches!(
            &v,
            PolicyViolation::BadFilter(FilterError::Incompatible { column, .. }) if column == "order_id"
        ));
        let v = violation(|t| t.filter = Some("country = 'EU'".into()));
        assert_eq!(
            v.to_string(),
            "invalid filter: unknown column `country`; the product has columns: order_id, \
             region, email"
        );
    }

    #[test]
    fn policy_refuses_wrong_product_window_and_versions() {
        let d = descriptor();
        let v = violation(|t| t.product.name = "other".into());
        assert_eq!(
            v,
            PolicyViolation::WrongProduct {
                requested: format!("{}/other", provider().public_key()),
                offered: d.id().storage_key(),
            }
        );
        let v = violation(|t| t.provider = mallory().public_key());
        assert_eq!(
            v,
            PolicyViolation::WrongProduct {
                requested: format!(
                    "{} from provider {}",
                    d.id().storage_key(),
                    mallory().public_key()
                ),
                offered: d.id().storage_key(),
            }
        );
        assert_eq!(
            violation(|t| t.valid_until_ms = t.valid_from_ms),
            PolicyViolation::EmptyValidity {
                from_ms: NOW,
                until_ms: NOW
            }
        );
        let v = evaluate(&d, &terms(), NOW + 30 * DAY_MS, 0).unwrap_err();
        assert_eq!(
            v,
            PolicyViolation::AlreadyEnded {
                until_ms: NOW + 30 * DAY_MS,
                now_ms: NOW + 30 * DAY_MS
            }
        );
        assert_eq!(
            violation(|t| {
                t.min_version = 5;
                t.max_version = Some(4);
            }),
            PolicyViolation::EmptyVersionRange { min: 5, max: 4 }
        );
        assert_eq!(
            violation(|t| {
                t.min_version = 0;
                t.max_version = Some(0);
            })
            .to_string(),
            "the version range 0..=0 covers no version"
        );
        let mut retired = descriptor();
        retired.status = Status::Retired;
        assert_eq!(
            evaluate(&retired, &terms(), NOW, 0),
            Err(PolicyViolation::Retired("sales/product-sales".into()))
        );
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = ContractMessage::from_bytes(&bytes);
            let _ = ContractReply::from_bytes(&bytes);
            if let Ok(a) = Agreement::from_bytes(&bytes) {
                let _ = a.verify();
            }
        }

        #[test]
        fn mutated_agreements_never_verify_with_other_terms(
            flip in 0usize..4096,
            bit in 0u8..8,
        ) {
            let mut bytes = agreement().to_bytes();
            let i = flip % bytes.len();
            bytes[i] ^= 1 << bit;
            if let Ok(a) = Agreement::from_bytes(&bytes)
                && let Ok(t) = a.verify()
            {
                // Only a flip that changes nothing semantically could verify; it must still be
                // the original terms.
                prop_assert_eq!(t, terms());
            }
        }
    }
}
