//! Replays the checked-in corpus (`fuzz/corpus/<target>/*`) and the freshly built seeds
//! through the same target functions the fuzzer runs: every input that ever mattered stays a
//! regression test in `cargo test`.

use std::path::{Path, PathBuf};

use mesh_fuzz::seeds::{self, Seed};
use mesh_fuzz::{TARGETS, target};
use mesh_protocol::audit::AuditHead;
use mesh_protocol::catalog::NodeRecord;
use mesh_protocol::contract::{Agreement, ContractRequest, Rejection, Revocation};
use mesh_protocol::descriptor::ProductDescriptor;
use mesh_protocol::envelope::Signed;
use mesh_protocol::governance::{
    Charter, JoinClaim, JoinReply, Motion, Ticket, check_claim, verify_charter,
};
use mesh_protocol::transfer::TransferTrailer;
use mesh_protocol::wire::{GossipMessage, SyncRequest, SyncResponse};
use mesh_protocol::{ContractMessage, ContractReply, Filter};

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("corpus directory {} is missing: {e}", dir.display()))
        .map(|entry| entry.expect("readable corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Whether the target's first decoder accepts `bytes` (for seeds that are real messages).
fn accepts(seed: &Seed) -> bool {
    let b = seed.bytes.as_slice();
    let text = || std::str::from_utf8(b).ok();
    match seed.target {
        "gossip_message" => GossipMessage::from_bytes(b).is_ok(),
        "sync_request" => SyncRequest::from_bytes(b).is_ok(),
        "sync_response" => SyncResponse::from_bytes(b).is_ok(),
        "envelope_descriptor" => Signed::<ProductDescriptor>::from_bytes(b)
            .is_ok_and(|e| mesh_protocol::catalog::verify_descriptor(&e).is_ok()),
        "envelope_node_record" => Signed::<NodeRecord>::from_bytes(b)
            .is_ok_and(|e| mesh_protocol::catalog::merge_node_record(&e, None).is_ok()),
        "envelope_contract_request" => Signed::<ContractRequest>::from_bytes(b)
            .is_ok_and(|e| mesh_protocol::verify_request(&e).is_ok()),
        "envelope_rejection" => {
            Signed::<Rejection>::from_bytes(b).is_ok_and(|e| e.verify().is_ok())
        }
        "envelope_revocation" => {
            Signed::<Revocation>::from_bytes(b).is_ok_and(|e| e.verify().is_ok())
        }
        "envelope_transfer_trailer" => {
            Signed::<TransferTrailer>::from_bytes(b).is_ok_and(|e| e.verify().is_ok())
        }
        "envelope_audit_head" => {
            Signed::<AuditHead>::from_bytes(b).is_ok_and(|e| e.verify().is_ok())
        }
        "agreement" => Agreement::from_bytes(b).is_ok_and(|a| a.verify().is_ok()),
        "contract_message" => ContractMessage::from_bytes(b).is_ok(),
        "contract_reply" => ContractReply::from_bytes(b).is_ok(),
        "data_frames" => {
            let mut decoder = mesh_protocol::FrameDecoder::new();
            decoder.push(&b[1..]);
            let mut frames = 0;
            while let Ok(Some(_)) = decoder.next_frame() {
                frames += 1;
            }
            frames > 0 && decoder.finish().is_ok()
        }
        "filter" => text().is_some_and(|t| Filter::parse(t).is_ok()),
        "type_string" => text().is_some_and(|t| {
            let mut d = mesh_fuzz::fixtures::product().clone();
            d.schema[0].data_type = t.to_owned();
            d.validate().is_ok()
        }),
        "audit_entry" => {
            mesh_protocol::audit::verify_chain(mesh_fuzz::targets::audit_records(b)).is_ok()
        }
        "text_ids" => text().is_some_and(|t| {
            t.parse::<mesh_protocol::AgreementId>().is_ok()
                || mesh_protocol::ProductId::from_storage_key(t).is_some()
        }),
        "vote" => Signed::<Motion>::from_bytes(b).is_ok_and(|e| e.verify().is_ok()),
        "charter" => Signed::<Charter>::from_bytes(b).is_ok_and(|e| verify_charter(&e).is_ok()),
        "ticket" => text().is_some_and(|t| Ticket::decode(t).is_ok()),
        "join_claim" => Signed::<JoinClaim>::from_bytes(b).is_ok_and(|e| {
            let invitation = mesh_fuzz::fixtures::invitation();
            check_claim(
                mesh_fuzz::fixtures::mesh_id(),
                Some(&invitation),
                &e,
                &invitation.key,
                mesh_fuzz::fixtures::NOW_MS,
            )
            .is_ok()
        }),
        "join_reply" => JoinReply::from_bytes(b).is_ok(),
        other => panic!("no acceptance check for target {other}"),
    }
}

#[test]
fn every_target_has_a_corpus_with_seeds() {
    let seeds = seeds::all();
    for t in TARGETS {
        let dir = corpus_root().join(t.name);
        assert!(
            !files(&dir).is_empty(),
            "fuzz/corpus/{} is empty: run `cargo run -p mesh-fuzz --bin mesh-fuzz-seeds`",
            t.name
        );
        assert!(
            seeds.iter().any(|s| s.target == t.name),
            "target {} has no seed",
            t.name
        );
    }
    for seed in &seeds {
        assert!(
            target(seed.target).is_some(),
            "seed for unknown target {}",
            seed.target
        );
    }
}

#[test]
fn real_seeds_are_accepted_by_their_decoders() {
    for seed in seeds::all() {
        assert_eq!(
            accepts(&seed),
            seed.valid,
            "seed {}/{}: a real message must decode and verify, a hostile one must be refused",
            seed.target,
            seed.name
        );
    }
}

#[test]
fn fresh_seeds_run_clean() {
    for seed in seeds::all() {
        let t = target(seed.target).expect("known target");
        (t.run)(&seed.bytes);
    }
}

#[test]
fn checked_in_corpus_runs_clean() {
    let mut count = 0;
    for t in TARGETS {
        for path in files(&corpus_root().join(t.name)) {
            let bytes = std::fs::read(&path).expect("readable corpus file");
            // A panic names the target; the file is in the test's output below.
            eprintln!("replaying {}", path.display());
            (t.run)(&bytes);
            count += 1;
        }
    }
    assert!(count >= TARGETS.len());
}

/// Every input also runs through every other target: a message of one kind is garbage to
/// the decoders of all the others, which is exactly what a peer can send.
#[test]
fn seeds_cross_targets_run_clean() {
    let seeds = seeds::all();
    for t in TARGETS {
        for seed in &seeds {
            (t.run)(&seed.bytes);
        }
    }
}

/// The engine crate has one binary per target, each calling the target of the same name.
#[test]
fn libfuzzer_binaries_match_the_targets() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("libfuzzer");
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("fuzz/libfuzzer");
    for t in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{}\"", t.name)),
            "fuzz/libfuzzer/Cargo.toml has no binary for {}",
            t.name
        );
        let source = std::fs::read_to_string(dir.join(format!("fuzz_targets/{}.rs", t.name)))
            .unwrap_or_else(|e| panic!("fuzz_targets/{}.rs: {e}", t.name));
        assert!(source.contains(&format!("mesh_fuzz::targets::{}(data)", t.name)));
    }
}
