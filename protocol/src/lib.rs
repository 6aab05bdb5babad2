//! # mesh-protocol
//!
//! The sans-I/O core of meshnode. Everything here is a pure function or a plain data type:
//! no sockets, no files, no clock, no randomness (time and random bytes are passed in). The
//! daemon in `mesh-node` is the shell that feeds it bytes and time.
//!
//! ## Layout
//!
//! - [`admission`]: the data plane's admission policy for QUIC connection attempts
//!   (Accept, Retry, Refuse, Ignore), per-source counts and connection slots.
//! - [`codec`]: deterministic, size-bounded encoding with typed decode errors.
//! - [`identity`]: ed25519 keys, signatures with per-type contexts, key fingerprints.
//! - [`envelope`]: [`Signed<T>`](envelope::Signed), keeps bytes as signed, verifies before use.
//! - [`bounds`]: length and depth limits checked before a recursive parser sees peer or
//!   file input; the bounded Arrow type parser.
//! - [`descriptor`]: the product descriptor that every node gossips.
//! - [`catalog`]: the catalog merge rule and signed node records.
//! - [`audit`]: hash-chained audit log entries and chain verification.
//! - [`budget`]: per-consumer request budgets (open requests, rate, expiry of pending ones).
//! - [`wire`]: gossip and anti-entropy sync messages.
//! - [`reconcile`]: range-based set reconciliation, the bounded anti-entropy of the catalog.
//! - [`peers`]: the peer policy: discovery, dial backoff, trimming, sync scheduling, scores.
//! - [`quota`]: the bytes of descriptors a node keeps, and each key's fair share of them.
//! - [`governance`]: the mesh charter, membership motions and votes, the global policies,
//!   join tickets.
//! - [`filter`]: the row-filter language of contracts: parse, canonical text, type check.
//! - [`sqlbudget`]: the budget on `sqlparser`'s backtracking that the filter parser and the
//!   local SQL engine parse under.
//! - [`contract`]: contract terms, co-signed agreements, rejections, revocations, the
//!   `/meshnode/contract/1` messages, the negotiation state machine and policy evaluation.
//! - [`contract_sync`]: keeping both parties' copies of a contract in step: first answers,
//!   follow-up polls and their backoff, status batch answers, which pushed decision notices
//!   are applied.
//! - [`transfer`]: data-plane framing, the incremental frame decoder, signed transfer trailers.

pub mod admission;
pub mod audit;
pub mod bounds;
pub mod budget;
pub mod catalog;
pub mod codec;
pub mod contract;
pub mod contract_sync;
pub mod descriptor;
pub mod envelope;
pub mod filter;
pub mod governance;
pub mod identity;
pub mod peers;
pub mod quota;
pub mod reconcile;
pub mod refused;
pub mod retention;
pub mod sqlbudget;
pub mod transfer;
pub mod wire;

pub use catalog::{MergeOutcome, NodeRecord, RejectReason, merge, merge_lazy};
pub use contract::{
    Agreement, AgreementError, AgreementId, Columns, ContractEvent, ContractMessage, ContractReply,
    ContractRequest, ContractState, ContractTerms, NoticeError, PolicyDecision, PolicyViolation,
    Rejection, Revocation, StatusEntry, TransitionError, effective_state, evaluate, transition,
    verify_rejection, verify_request, verify_revocation,
};
pub use descriptor::{ProductDescriptor, ProductId};
pub use envelope::{Signable, Signed};
pub use filter::{CompareOp, Filter, FilterError, Literal};
pub use identity::{Identity, PublicKey, Signature};
pub use transfer::{
    Compression, ExpectedTrailer, FetchRefusal, FetchRequest, Frame, FrameDecoder, FrameError,
    FrameHeader, Narrowing, Refusal, RunningAgreement, StreamSummary, Stripe, TransferHeader,
    TransferTally, TransferTrailer, encode_data_header, encode_frame, verify_trailer,
};
