//! # mesh-fuzz
//!
//! Fuzz targets for every decoder and parser of `mesh-protocol` that reads bytes or text a
//! peer or a file controls, shared by the coverage-guided engine (`fuzz/libfuzzer`, run by
//! `fuzz/run.sh`) and by the corpus replay test (`cargo test -p mesh-fuzz`), so both run the
//! very same code.
//!
//! ## Layout
//!
//! - [`targets`]: one function per target, `fn(&[u8])`. A target panics only on a bug: a
//!   decoder that panics, or a broken invariant it asserts (an incremental decoder that
//!   disagrees with itself, a canonical text that does not parse back).
//! - [`fixtures`]: the fixed keys, clock and reference product the targets check against.
//! - [`seeds`]: real encoded messages, the seed corpus in `fuzz/corpus/<target>/`
//!   (regenerate it with `cargo run -p mesh-fuzz --bin mesh-fuzz-seeds`).
//! - [`TARGETS`]: the table both runners iterate.
//!
//! ## Signatures
//!
//! Fuzzed bytes never carry a valid signature, but an attacker signs whatever body it likes
//! with its own key. So every target that meets a `Signed<T>` also re-signs the body it
//! decoded with a fixture key and runs the real verification and the checks after it
//! (`catalog::merge`, `verify_request`, `evaluate`, `authorize_fetch`...): the fuzzer reaches
//! what a hostile but well-keyed peer reaches.

pub mod fixtures;
pub mod seeds;
pub mod targets;

/// One fuzz target: a name (its libFuzzer binary and corpus directory) and its body.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Name of the libFuzzer binary and of the corpus directory `fuzz/corpus/<name>`.
    pub name: &'static str,
    /// What it feeds, for `run.sh` and the docs.
    pub what: &'static str,
    /// The body: decodes `data` and exercises everything behind the decoder.
    pub run: fn(&[u8]),
}

/// Every target, in the order `fuzz/run.sh` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "gossip_message",
        what: "catalog topic message (descriptor, node record, revocation, vote)",
        run: targets::gossip_message,
    },
    Target {
        name: "sync_request",
        what: "anti-entropy request (catalog, node record and vote ranges)",
        run: targets::sync_request,
    },
    Target {
        name: "sync_response",
        what: "anti-entropy response (descriptors, node records, votes)",
        run: targets::sync_response,
    },
    Target {
        name: "envelope_descriptor",
        what: "Signed<ProductDescriptor>, then the catalog merge rule",
        run: targets::envelope_descriptor,
    },
    Target {
        name: "envelope_node_record",
        what: "Signed<NodeRecord>, then the node-record merge rule",
        run: targets::envelope_node_record,
    },
    Target {
        name: "envelope_contract_request",
        what: "Signed<ContractRequest>, then verification, policy evaluation, countersigning",
        run: targets::envelope_contract_request,
    },
    Target {
        name: "envelope_rejection",
        what: "Signed<Rejection>, then its verification",
        run: targets::envelope_rejection,
    },
    Target {
        name: "envelope_revocation",
        what: "Signed<Revocation>, then relay and party verification",
        run: targets::envelope_revocation,
    },
    Target {
        name: "envelope_transfer_trailer",
        what: "Signed<TransferTrailer>, then its check against what was received",
        run: targets::envelope_transfer_trailer,
    },
    Target {
        name: "envelope_audit_head",
        what: "Signed<AuditHead> read from the store, then its check",
        run: targets::envelope_audit_head,
    },
    Target {
        name: "agreement",
        what: "co-signed Agreement (store, fetch request), then fetch authorisation",
        run: targets::agreement,
    },
    Target {
        name: "contract_message",
        what: "/meshnode/contract/1 message (request, status, revoke)",
        run: targets::contract_message,
    },
    Target {
        name: "contract_reply",
        what: "/meshnode/contract/1 reply (agreed, pending, rejected, revoked, error)",
        run: targets::contract_reply,
    },
    Target {
        name: "data_frames",
        what: "data-plane byte stream through FrameDecoder, in chunks",
        run: targets::data_frames,
    },
    Target {
        name: "filter",
        what: "row-filter text: parse, canonical text round trip, type check",
        run: targets::filter,
    },
    Target {
        name: "type_string",
        what: "column type string through descriptor validation",
        run: targets::type_string,
    },
    Target {
        name: "audit_entry",
        what: "stored audit entries: decode, detail JSON, hash-chain check",
        run: targets::audit_entry,
    },
    Target {
        name: "vote",
        what: "Signed<Motion> (a vote) offered to a mesh state, then the state's invariants",
        run: targets::vote,
    },
    Target {
        name: "charter",
        what: "Signed<Charter>, then verify_charter and the state it founds",
        run: targets::charter,
    },
    Target {
        name: "ticket",
        what: "join ticket text (`init --join`, `mesh join`)",
        run: targets::ticket,
    },
    Target {
        name: "join_claim",
        what: "Signed<JoinClaim> checked against an invitation (check_claim)",
        run: targets::join_claim,
    },
    Target {
        name: "join_reply",
        what: "the inviter's JoinReply: charter verification and state restore",
        run: targets::join_reply,
    },
    Target {
        name: "text_ids",
        what: "ids typed or read from files: agreement id, key hex, storage key",
        run: targets::text_ids,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
