//! Tests of the mesh state: outcomes, bounds, and the state kept vote by vote.

use super::*;
use crate::governance::policy::Policies;
use crate::identity::Identity;

struct Mesh {
    governors: Vec<Identity>,
    state: MeshState,
}

fn id(seed: u8) -> Identity {
    Identity::from_secret_bytes([seed; 32])
}

fn member(identity: &Identity, domain: &str) -> Member {
    Member {
        key: identity.public_key(),
        domain: domain.into(),
    }
}

/// Three governors (product, customer, e-shop), 2 of 3, admission as given.
fn mesh(admission: AdmissionRule) -> Mesh {
    let governors = vec![id(1), id(2), id(3)];
    let names = ["product", "customer", "e-shop"];
    let charter = Charter {
        name: "shop".into(),
        founded_at_ms: 1,
        governors: governors
            .iter()
            .zip(names)
            .map(|(g, n)| member(g, n))
            .collect(),
        quorum: 2,
        admission,
        members: vec![],
        policies: Policies::default(),
        nonce: [0; 16],
    };
    let state = MeshState::new(Signed::sign(&governors[0], &charter)).unwrap();
    Mesh { governors, state }
}

fn motion(state: &MeshState, proposer: &Identity, action: Action) -> Motion {
    Motion {
        mesh: state.id(),
        action,
        proposer: proposer.public_key(),
        proposed_at_ms: 10,
    }
}

fn vote(state: &mut MeshState, signer: &Identity, m: &Motion) -> Result<Changes, VoteRefusal> {
    match state.offer(&Signed::sign(signer, m))? {
        VoteOutcome::Accepted(c) => Ok(c),
        VoteOutcome::Duplicate => Ok(Changes::default()),
    }
}

fn pii() -> Policies {
    Policies {
        version: 1,
        restricted_tags: vec!["pii".into()],
        ..Policies::default()
    }
}

#[test]
fn an_amendment_needs_the_quorum() {
    let Mesh {
        governors,
        mut state,
    } = mesh(AdmissionRule::AnyMember);
    let amend = motion(
        &state,
        &governors[0],
        Action::Amend {
            policies: pii(),
            summary: "pii restricted".into(),
        },
    );
    let first = vote(&mut state, &governors[0], &amend).unwrap();
    assert_eq!(first.policies, None, "one of three changes nothing");
    assert_eq!(state.policies().version, 0);
    let views = state.motions();
    assert_eq!(views[0].signers.len(), 1);
    assert!(!views[0].carried);
    let second = vote(&mut state, &governors[2], &amend).unwrap();
    assert_eq!(second.policies, Some(1));
    assert_eq!(state.policies(), &pii());
    // A second copy of a vote is a duplicate.
    assert_eq!(
        state.offer(&Signed::sign(&governors[2], &amend)),
        Ok(VoteOutcome::Duplicate)
    );
    // An amendment not newer than the one in force is stale, unless it is of the same
    // version and would win the tie (a lower motion id): then it is an open contender.
    let winner = MotionId::of_body(Signed::sign(&governors[0], &amend).body());
    for (n, summary) in ["again", "once more", "and again"].into_iter().enumerate() {
        let again = motion(
            &state,
            &governors[1],
            Action::Amend {
                policies: pii(),
                summary: summary.into(),
            },
        );
        let id = MotionId::of_body(Signed::sign(&governors[1], &again).body());
        let outcome = vote(&mut state, &governors[1], &again);
        if id > winner {
            assert!(matches!(outcome, Err(VoteRefusal::Stale(_))), "{n}");
        } else {
            assert_eq!(outcome.map(|c| c.policies), Ok(None), "{n}");
        }
    }
    assert_eq!(state.policies(), &pii());
    let older = motion(
        &state,
        &governors[1],
        Action::Amend {
            policies: Policies::default(),
            summary: "back to nothing".into(),
        },
    );
    assert!(matches!(
        vote(&mut state, &governors[1], &older),
        Err(VoteRefusal::Stale(_))
    ));
}

#[test]
fn votes_that_stop_counting_are_dropped_the_same_way_in_any_order() {
    let Mesh {
        governors,
        mut state,
    } = mesh(AdmissionRule::AnyMember);
    let charter = state.charter_envelope().clone();
    let (sales, churn) = (id(10), id(11));
    let mut votes = Vec::new();
    let mut give = |state: &mut MeshState, signer: &Identity, m: &Motion| {
        let v = Signed::sign(signer, m);
        votes.push(v.clone());
        let _ = state.offer(&v);
    };
    // Two members admit churn (two motions), one of them sales, who is then removed
    // twice over (two carried removals); two amendments of one version are carried.
    let admit_sales = motion(
        &state,
        &governors[0],
        Action::Admit(member(&sales, "sales")),
    );
    give(&mut state, &governors[0], &admit_sales);
    for admitter in [&governors[1], &sales] {
        let m = motion(&state, admitter, Action::Admit(member(&churn, "churn")));
        give(&mut state, admitter, &m);
    }
    for (n, g) in [(0, &governors[0]), (1, &governors[1])] {
        let remove = Motion {
            proposed_at_ms: 20 + n,
            ..motion(
                &state,
                g,
                Action::Remove {
                    key: sales.public_key(),
                    reason: format!("{n}"),
                },
            )
        };
        give(&mut state, &governors[0], &remove);
        give(&mut state, &governors[1], &remove);
    }
    for summary in ["a", "b"] {
        let amend = motion(
            &state,
            &governors[2],
            Action::Amend {
                policies: pii(),
                summary: summary.into(),
            },
        );
        give(&mut state, &governors[2], &amend);
        give(&mut state, &governors[1], &amend);
    }
    let forward = MeshState::restore(charter.clone(), votes.clone())
        .unwrap()
        .0;
    votes.reverse();
    let backward = MeshState::restore(charter, votes).unwrap().0;
    for s in [&forward, &backward] {
        assert!(
            s.is_member(&churn.public_key()),
            "a governor vouched for churn"
        );
        assert!(s.is_removed(&sales.public_key()));
    }
    assert_eq!(forward.policies(), backward.policies());
    assert_eq!(
        forward.vote_keys().collect::<Vec<_>>(),
        backward.vote_keys().collect::<Vec<_>>(),
        "the votes held do not depend on their order"
    );
    assert_eq!(
        forward.vote_keys().collect::<Vec<_>>(),
        state.vote_keys().collect::<Vec<_>>()
    );
}

#[test]
fn an_admission_of_a_key_removed_since_is_stale_not_invalid() {
    let Mesh {
        governors,
        mut state,
    } = mesh(AdmissionRule::AnyMember);
    let sales = id(9);
    let admit = motion(
        &state,
        &governors[0],
        Action::Admit(member(&sales, "sales")),
    );
    let admission = Signed::sign(&governors[0], &admit);
    vote(&mut state, &governors[0], &admit).unwrap();
    assert!(state.is_member(&sales.public_key()));
    let remove = motion(
        &state,
        &governors[1],
        Action::Remove {
            key: sales.public_key(),
            reason: "left".into(),
        },
    );
    vote(&mut state, &governors[1], &remove).unwrap();
    vote(&mut state, &governors[2], &remove).unwrap();
    assert!(state.is_removed(&sales.public_key()));
    // The admission vote, as a peer that missed the removal relays it: not news, and no
    // fault of the relay.
    assert!(
        matches!(state.offer(&admission), Err(VoteRefusal::Stale(_))),
        "{:?}",
        state.offer(&admission)
    );
    // A new motion to admit the removed key is refused with the reason, as before.
    let again = motion(
        &state,
        &governors[1],
        Action::Admit(member(&sales, "sales")),
    );
    assert!(matches!(
        state.check_vote(&again, &governors[1].public_key(), false),
        Err(VoteRefusal::Invalid(_))
    ));
}

#[test]
fn only_governors_vote_on_amendments_and_removals() {
    let Mesh {
        governors,
        mut state,
    } = mesh(AdmissionRule::AnyMember);
    let newcomer = id(9);
    let admit = motion(
        &state,
        &governors[0],
        Action::Admit(member(&newcomer, "sales")),
    );
    let changes = vote(&mut state, &governors[0], &admit).unwrap();
    assert_eq!(changes.admitted, vec![member(&newcomer, "sales")]);
    assert!(state.is_member(&newcomer.public_key()));
    let amend = motion(
        &state,
        &newcomer,
        Action::Amend {
            policies: pii(),
            summary: String::new(),
        },
    );
    assert!(matches!(
        vote(&mut state, &newcomer, &amend),
        Err(VoteRefusal::NotEligible(_))
    ));
    // A stranger cannot even admit.
    let stranger = id(42);
    let sneak = motion(&state, &stranger, Action::Admit(member(&id(43), "x")));
    assert!(matches!(
        vote(&mut state, &stranger, &sneak),
        Err(VoteRefusal::NotEligible(_))
    ));
}

#[test]
fn removal_cascades_to_admissions_nobody_else_signed() {
    let Mesh {
        governors,
        mut state,
    } = mesh(AdmissionRule::AnyMember);
    let (sales, churn, orders) = (id(10), id(11), id(12));
    let admit_sales = motion(
        &state,
        &governors[0],
        Action::Admit(member(&sales, "sales")),
    );
    vote(&mut state, &governors[0], &admit_sales).unwrap();
    let admit_churn = motion(&state, &sales, Action::Admit(member(&churn, "churn")));
    vote(&mut state, &sales, &admit_churn).unwrap();
    let admit_orders = motion(&state, &sales, Action::Admit(member(&orders, "orders")));
    vote(&mut state, &sales, &admit_orders).unwrap();
    // A governor vouches for orders too.
    vote(&mut state, &governors[1], &admit_orders).unwrap();
    assert_eq!(state.member_count(), 6);

    let remove = motion(
        &state,
        &governors[0],
        Action::Remove {
            key: sales.public_key(),
            reason: "leaked data".into(),
        },
    );
    vote(&mut state, &governors[0], &remove).unwrap();
    assert!(state.is_member(&sales.public_key()), "one of three");
    let changes = vote(&mut state, &governors[1], &remove).unwrap();
    let mut removed = changes.removed.clone();
    removed.sort();
    let mut expected = vec![sales.public_key(), churn.public_key()];
    expected.sort();
    assert_eq!(removed, expected, "churn had only sales' signature");
    assert!(state.is_member(&orders.public_key()), "a governor vouched");
    assert!(state.is_removed(&sales.public_key()));
    // The removed key's votes were dropped from the record.
    assert!(
        changes
            .pruned
            .iter()
            .any(|k| k.signer == sales.public_key())
    );
    assert!(state.votes().all(|v| v.signer() != sales.public_key()));
    // It cannot come back (refused as a proposal; as a vote from a peer, not news), and
    // it cannot vote.
    let back = Motion {
        proposed_at_ms: 11,
        ..motion(
            &state,
            &governors[0],
            Action::Admit(member(&sales, "sales")),
        )
    };
    assert!(matches!(
        state.check_vote(&back, &governors[0].public_key(), false),
        Err(VoteRefusal::Invalid(_))
    ));
    assert!(matches!(
        vote(&mut state, &governors[0], &back),
        Err(VoteRefusal::Stale(_))
    ));
    // Governors cannot be removed.
    let coup = motion(
        &state,
        &governors[1],
        Action::Remove {
            key: governors[0].public_key(),
            reason: String::new(),
        },
    );
    assert!(matches!(
        vote(&mut state, &governors[1], &coup),
        Err(VoteRefusal::Invalid(_))
    ));
}

#[test]
fn quorum_admission_waits_for_the_quorum() {
    let Mesh {
        governors,
        mut state,
    } = mesh(AdmissionRule::Quorum);
    let newcomer = id(9);
    let admit = motion(
        &state,
        &governors[0],
        Action::Admit(member(&newcomer, "sales")),
    );
    assert!(
        vote(&mut state, &governors[0], &admit)
            .unwrap()
            .admitted
            .is_empty()
    );
    assert!(!state.is_member(&newcomer.public_key()));
    let changes = vote(&mut state, &governors[1], &admit).unwrap();
    assert_eq!(changes.admitted.len(), 1);
}

#[test]
fn the_outcome_does_not_depend_on_arrival_order() {
    let Mesh { governors, state } = mesh(AdmissionRule::AnyMember);
    let mut scratch = state.clone();
    let (a, b) = (id(20), id(21));
    let mut votes = Vec::new();
    let admit_a = motion(&scratch, &governors[0], Action::Admit(member(&a, "a")));
    votes.push(Signed::sign(&governors[0], &admit_a));
    vote(&mut scratch, &governors[0], &admit_a).unwrap();
    // b is admitted by a: its vote only counts once a is a member.
    let admit_b = motion(&scratch, &a, Action::Admit(member(&b, "b")));
    votes.push(Signed::sign(&a, &admit_b));
    let amend = motion(
        &scratch,
        &governors[1],
        Action::Amend {
            policies: pii(),
            summary: String::new(),
        },
    );
    votes.push(Signed::sign(&governors[1], &amend));
    votes.push(Signed::sign(&governors[2], &amend));

    let charter = state.charter_envelope().clone();
    let (forward, refused) = MeshState::restore(charter.clone(), votes.clone()).unwrap();
    assert!(refused.is_empty());
    votes.reverse();
    let (backward, refused) = MeshState::restore(charter, votes).unwrap();
    assert!(
        refused.is_empty(),
        "b's admission waits for a's, then counts"
    );
    let keys = |s: &MeshState| s.members().map(|(k, _)| *k).collect::<Vec<_>>();
    assert_eq!(keys(&forward), keys(&backward));
    assert_eq!(forward.policies(), backward.policies());
    assert_eq!(
        forward.vote_keys().collect::<Vec<_>>(),
        backward.vote_keys().collect::<Vec<_>>()
    );
    assert_eq!(forward.member_count(), 5);
}

#[test]
fn the_highest_carried_amendment_wins_and_supersedes() {
    let Mesh {
        governors,
        mut state,
    } = mesh(AdmissionRule::AnyMember);
    let v1 = motion(
        &state,
        &governors[0],
        Action::Amend {
            policies: pii(),
            summary: String::new(),
        },
    );
    let v2 = motion(
        &state,
        &governors[0],
        Action::Amend {
            policies: Policies {
                version: 2,
                max_contract_days: Some(365),
                ..pii()
            },
            summary: String::new(),
        },
    );
    for g in &governors[..2] {
        vote(&mut state, g, &v2).unwrap();
    }
    assert_eq!(state.policies().version, 2);
    // v1 is stale now; its votes are refused.
    assert!(matches!(
        vote(&mut state, &governors[0], &v1),
        Err(VoteRefusal::Stale(_))
    ));
}

#[test]
fn a_long_chain_of_admissions_restores_in_any_order() {
    let Mesh { governors, state } = mesh(AdmissionRule::AnyMember);
    let charter = state.charter_envelope().clone();
    // g0 admits k0, k0 admits k1, ... : each admission counts only once its admitter is
    // a member.
    let chain: Vec<Identity> = (0..300u32)
        .map(|i| {
            let mut secret = [7u8; 32];
            secret[..4].copy_from_slice(&i.to_be_bytes());
            Identity::from_secret_bytes(secret)
        })
        .collect();
    let mut votes = Vec::new();
    let mut admitter = &governors[0];
    for (i, newcomer) in chain.iter().enumerate() {
        let m = motion(
            &state,
            admitter,
            Action::Admit(member(newcomer, &format!("d{i}"))),
        );
        votes.push(Signed::sign(admitter, &m));
        admitter = newcomer;
    }
    votes.reverse();
    // A forgery among them is refused, once.
    let forged = votes[0].with_claimed_signer(governors[1].public_key());
    votes.insert(100, forged.clone());
    let (restored, refused) = MeshState::restore(charter, votes).unwrap();
    assert!(
        matches!(refused.as_slice(), [(v, VoteRefusal::Envelope(_))] if *v == forged),
        "{refused:?}"
    );
    assert_eq!(restored.member_count(), 3 + chain.len());
    // Removing the head of the chain removes every link it alone carried.
    let mut state = restored;
    let remove = motion(
        &state,
        &governors[0],
        Action::Remove {
            key: chain[0].public_key(),
            reason: String::new(),
        },
    );
    vote(&mut state, &governors[0], &remove).unwrap();
    let changes = vote(&mut state, &governors[1], &remove).unwrap();
    assert_eq!(changes.removed.len(), chain.len());
    assert_eq!(state.member_count(), 3);
}

#[test]
fn open_motions_per_signer_are_bounded() {
    let Mesh {
        governors,
        mut state,
    } = mesh(AdmissionRule::Quorum);
    for n in 0..MAX_OPEN_PER_SIGNER {
        let m = motion(
            &state,
            &governors[0],
            Action::Remove {
                key: id(100).public_key(),
                reason: format!("{n}"),
            },
        );
        vote(&mut state, &governors[0], &m).unwrap();
    }
    let m = motion(
        &state,
        &governors[0],
        Action::Remove {
            key: id(100).public_key(),
            reason: "one more".into(),
        },
    );
    assert!(matches!(
        vote(&mut state, &governors[0], &m),
        Err(VoteRefusal::OverBudget(_))
    ));
}

#[test]
fn votes_of_another_mesh_and_forgeries_are_refused() {
    let Mesh {
        governors,
        mut state,
    } = mesh(AdmissionRule::AnyMember);
    let mut m = motion(&state, &governors[0], Action::Admit(member(&id(9), "x")));
    m.mesh = MeshId([7; 32]);
    assert_eq!(
        vote(&mut state, &governors[0], &m),
        Err(VoteRefusal::OtherMesh)
    );
    let good = Signed::sign(
        &governors[0],
        &motion(&state, &governors[0], Action::Admit(member(&id(9), "x"))),
    );
    let forged = good.with_claimed_signer(governors[1].public_key());
    assert!(matches!(
        state.offer(&forged),
        Err(VoteRefusal::Envelope(_))
    ));
}

/// `admitter` admits each of `keys`, as domains `m0`, `m1`, ...
fn admit_all(state: &mut MeshState, admitter: &Identity, keys: &[Identity]) {
    for (n, k) in keys.iter().enumerate() {
        let admit = motion(state, admitter, Action::Admit(member(k, &format!("m{n}"))));
        vote(state, admitter, &admit).unwrap();
    }
}

#[test]
fn a_domain_keeps_a_bounded_number_of_admitters_besides_the_governors() {
    let Mesh {
        governors,
        mut state,
    } = mesh(AdmissionRule::AnyMember);
    let members: Vec<Identity> = (20..30).map(id).collect();
    admit_all(&mut state, &governors[0], &members);
    let newcomer = id(40);
    // Each member co-signs, half of them on motions of their own: all count together.
    let mut given = Vec::new();
    for (n, m) in members.iter().enumerate() {
        let proposer = if n % 2 == 0 { &members[0] } else { m };
        let admit = motion(&state, proposer, Action::Admit(member(&newcomer, "orders")));
        given.push((m, vote(&mut state, m, &admit)));
    }
    let taken = given.iter().filter(|(_, r)| r.is_ok()).count();
    assert_eq!(taken, MAX_ADMITTERS);
    assert!(
        given[MAX_ADMITTERS..]
            .iter()
            .all(|(_, r)| matches!(r, Err(VoteRefusal::OverBudget(_)))),
        "{given:?}"
    );
    assert!(state.is_member(&newcomer.public_key()));
    // A governor's signature is always taken.
    let admit = motion(
        &state,
        &members[0],
        Action::Admit(member(&newcomer, "orders")),
    );
    vote(&mut state, &governors[1], &admit).unwrap();
    // Once an admitter is removed, its signature no longer counts and another is taken.
    let remove = motion(
        &state,
        &governors[0],
        Action::Remove {
            key: members[1].public_key(),
            reason: String::new(),
        },
    );
    vote(&mut state, &governors[0], &remove).unwrap();
    let changes = vote(&mut state, &governors[1], &remove).unwrap();
    assert_eq!(changes.removed, vec![members[1].public_key()]);
    assert!(!changes.pruned.is_empty());
    let late = &members[MAX_ADMITTERS];
    let admit = motion(&state, late, Action::Admit(member(&newcomer, "orders")));
    vote(&mut state, late, &admit).unwrap();
    assert!(state.is_member(&newcomer.public_key()));
}

#[test]
fn a_vote_refused_on_what_it_claims_is_refused_before_its_signature_is_checked() {
    let Mesh {
        governors,
        mut state,
    } = mesh(AdmissionRule::AnyMember);
    let members: Vec<Identity> = (20..20 + MAX_ADMITTERS as u8 + 1).map(id).collect();
    admit_all(&mut state, &governors[0], &members);
    let newcomer = id(40);
    for m in &members[..MAX_ADMITTERS] {
        let admit = motion(&state, m, Action::Admit(member(&newcomer, "orders")));
        vote(&mut state, m, &admit).unwrap();
    }
    let last = &members[MAX_ADMITTERS];
    let admit = motion(&state, last, Action::Admit(member(&newcomer, "orders")));
    let good = Signed::sign(last, &admit);
    // The same vote signed by another key: refused for the budget, as the genuine one is,
    // so no signature was checked.
    let forged = Signed::sign(&id(99), &admit).with_claimed_signer(last.public_key());
    assert!(matches!(
        state.offer(&forged),
        Err(VoteRefusal::OverBudget(_))
    ));
    assert!(matches!(
        state.offer(&good),
        Err(VoteRefusal::OverBudget(_))
    ));
    // A non-member's claimed vote likewise.
    let stranger = id(41);
    let admit = motion(&state, &stranger, Action::Admit(member(&id(42), "x")));
    let forged = Signed::sign(&id(99), &admit).with_claimed_signer(stranger.public_key());
    assert!(matches!(
        state.offer(&forged),
        Err(VoteRefusal::NotEligible(_))
    ));
    // A forgery of a vote that would be taken is refused as a forgery.
    let admit = motion(&state, &members[0], Action::Admit(member(&id(43), "y")));
    let forged = Signed::sign(&id(99), &admit).with_claimed_signer(members[0].public_key());
    assert!(matches!(
        state.offer(&forged),
        Err(VoteRefusal::Envelope(_))
    ));
    assert!(!state.is_member(&id(43).public_key()));
}

/// One step of a random history: who signs what.
#[derive(Clone, Debug)]
enum Step {
    Admit {
        signer: usize,
        key: usize,
        proposer: usize,
    },
    Remove {
        governor: usize,
        key: usize,
        reason: u8,
    },
    Amend {
        governor: usize,
        version: u32,
    },
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (0..12usize, 0..12usize, 0..12usize)
            .prop_map(|(signer, key, proposer)| Step::Admit { signer, key, proposer }),
        2 => (0..3usize, 0..12usize, 0..2u8)
            .prop_map(|(governor, key, reason)| Step::Remove { governor, key, reason }),
        1 => (0..3usize, 1..4u32).prop_map(|(governor, version)| Step::Amend { governor, version }),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
    /// The state kept vote by vote is the one derived from every vote held, and what each
    /// vote reports changed is the difference.
    #[test]
    fn each_vote_leaves_the_state_every_vote_derives(
        any_member in proptest::prelude::any::<bool>(),
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        let admission = if any_member { AdmissionRule::AnyMember } else { AdmissionRule::Quorum };
        let Mesh { governors, mut state } = mesh(admission);
        let keys: Vec<Identity> = (50..62).map(id).collect();
        // Signers 0-2 are the governors, the rest other keys.
        let signer = |n: usize| if n < 3 { &governors[n] } else { &keys[n] };
        for step in steps {
            let (who, action) = match step {
                Step::Admit { signer: s, key, proposer } => (
                    signer(s),
                    (Action::Admit(member(&keys[key], &format!("d{key}"))), proposer),
                ),
                Step::Remove { governor, key, reason } => (
                    &governors[governor],
                    (Action::Remove { key: keys[key].public_key(), reason: format!("{reason}") }, 0),
                ),
                Step::Amend { governor, version } => (
                    &governors[governor],
                    (Action::Amend { policies: Policies { version, ..Policies::default() }, summary: String::new() }, 0),
                ),
            };
            let (action, proposer) = action;
            let m = motion(&state, signer(proposer), action);
            let before: BTreeMap<PublicKey, String> = state.members.clone();
            let before_votes: BTreeSet<VoteKey> = state.vote_keys().collect();
            let Ok(VoteOutcome::Accepted(changes)) = state.offer(&Signed::sign(who, &m)) else {
                continue;
            };
            let mut derived = state.clone();
            derived.recompute();
            proptest::prop_assert_eq!(&state.members, &derived.members);
            proptest::prop_assert_eq!(&state.removed, &derived.removed);
            proptest::prop_assert_eq!(&state.policies, &derived.policies);
            let held: BTreeSet<VoteKey> = state.vote_keys().collect();
            proptest::prop_assert_eq!(&held, &derived.vote_keys().collect::<BTreeSet<_>>());
            let admitted: BTreeSet<PublicKey> = changes.admitted.iter().map(|m| m.key).collect();
            let expected: BTreeSet<PublicKey> = state.members.keys().filter(|k| !before.contains_key(k)).copied().collect();
            proptest::prop_assert_eq!(admitted, expected);
            let removed: BTreeSet<PublicKey> = changes.removed.iter().copied().collect();
            let expected: BTreeSet<PublicKey> = before.keys().filter(|k| !state.members.contains_key(k)).copied().collect();
            proptest::prop_assert_eq!(removed, expected);
            let pruned: BTreeSet<VoteKey> = changes.pruned.iter().copied().collect();
            let gone: BTreeSet<VoteKey> = before_votes.difference(&held).copied().collect();
            proptest::prop_assert_eq!(pruned, gone);
            for (signer, ids) in &derived.index.by_signer {
                proptest::prop_assert_eq!(state.index.given(signer), ids.len());
            }
            proptest::prop_assert_eq!(&state.index.admitters, &derived.index.admitters);
        }
    }
}

/// Prints what a vote and a restore cost as the votes held grow, in a mesh where every
/// member co-signs others' admissions as far as it may:
/// `cargo test -p mesh-protocol --release --lib vote_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a benchmark: prints figures"]
fn vote_cost_as_the_votes_held_grow() {
    use std::time::Instant;
    let Mesh { governors, state } = mesh(AdmissionRule::AnyMember);
    let charter = state.charter_envelope().clone();
    let mut state = state;
    let n = 3000usize;
    let keys: Vec<Identity> = (0..n as u32)
        .map(|i| {
            let mut secret = [9u8; 32];
            secret[..4].copy_from_slice(&i.to_be_bytes());
            Identity::from_secret_bytes(secret)
        })
        .collect();
    // Sign first, so the figures are the state's work alone.
    let admissions: Vec<Signed<Motion>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let g = &governors[i % 3];
            Signed::sign(
                g,
                &motion(&state, g, Action::Admit(member(k, &format!("d{i}")))),
            )
        })
        .collect();
    let cosign: Vec<Signed<Motion>> = keys
        .iter()
        .enumerate()
        .flat_map(|(i, signer)| {
            let state = &state;
            let keys = &keys;
            (1..=MAX_ADMITTERS + 2).map(move |d| {
                let j = (i + d) % n;
                Signed::sign(
                    signer,
                    &motion(
                        state,
                        signer,
                        Action::Admit(member(&keys[j], &format!("d{j}"))),
                    ),
                )
            })
        })
        .collect();
    let start = Instant::now();
    for v in &admissions {
        state.offer(v).unwrap();
    }
    let admitting = start.elapsed();
    let mut taken = 0;
    let mut times = Vec::new();
    for chunk in cosign.chunks(cosign.len() / 5) {
        let start = Instant::now();
        taken += chunk.iter().filter(|v| state.offer(v).is_ok()).count();
        times.push((state.votes().count(), start.elapsed() / chunk.len() as u32));
    }
    assert_eq!(taken, n * MAX_ADMITTERS);
    let held: Vec<Signed<Motion>> = state.votes().cloned().collect();
    assert_eq!(held.len(), n * (MAX_ADMITTERS + 1));
    let start = Instant::now();
    let (restored, refused) =
        MeshState::restore(charter.clone(), held.iter().rev().cloned()).unwrap();
    let restoring = start.elapsed();
    assert!(refused.is_empty());
    assert_eq!(restored.member_count(), n + 3);
    eprintln!("{n} admissions: {:?} per vote", admitting / n as u32);
    for (held, per) in times {
        eprintln!("co-signatures, up to {held} votes held: {per:?} per vote offered");
    }
    eprintln!(
        "restore of {} votes, newest first: {restoring:?}",
        held.len()
    );
    // A join answer: the votes that carry the state come first and fit, all of them do not.
    let budget = crate::governance::join::MAX_JOIN_REPLY - 64 * 1024;
    let size = |v: &Signed<Motion>| v.to_bytes().len() + 8;
    let all: usize = held.iter().map(size).sum();
    let mut used = 0;
    let answer: Vec<Signed<Motion>> = state
        .votes_for_newcomer()
        .into_iter()
        .take_while(|v| {
            used += size(v);
            used <= budget
        })
        .cloned()
        .collect();
    let (joined, _) = MeshState::restore(charter, answer.iter().cloned()).unwrap();
    eprintln!(
        "join answer: {} of {} votes ({} of {all} bytes), {} members of {}",
        answer.len(),
        held.len(),
        used.min(budget),
        joined.member_count(),
        state.member_count()
    );
    assert!(all > budget);
    assert_eq!(joined.member_count(), state.member_count());
}

/// A newcomer restoring only the first votes of [`MeshState::votes_for_newcomer`], as many as
/// the mesh's decisions need, derives the same members, removals and policies; the same
/// number of votes in the order they are held does not.
#[test]
fn the_votes_a_newcomer_needs_come_first() {
    for admission in [AdmissionRule::AnyMember, AdmissionRule::Quorum] {
        let Mesh {
            governors,
            mut state,
        } = mesh(admission);
        let any_member = admission == AdmissionRule::AnyMember;
        let keys: Vec<Identity> = (0..120u32)
            .map(|i| {
                let mut secret = [5u8; 32];
                secret[..4].copy_from_slice(&i.to_be_bytes());
                Identity::from_secret_bytes(secret)
            })
            .collect();
        // Under `any-member` a chain (g0 admits k0, k0 admits k1, ...) and then every key
        // co-signs the next ones' admissions as far as the bound allows; under `quorum`
        // two governors carry each admission and the third signs some too.
        for (i, k) in keys.iter().enumerate() {
            let admitter = if any_member && i > 0 {
                &keys[i - 1]
            } else {
                &governors[0]
            };
            let admit = motion(&state, admitter, Action::Admit(member(k, &format!("d{i}"))));
            vote(&mut state, admitter, &admit).unwrap();
            if !any_member {
                vote(&mut state, &governors[1], &admit).unwrap();
                if i % 3 == 0 {
                    vote(&mut state, &governors[2], &admit).unwrap();
                }
            }
        }
        if any_member {
            for (i, signer) in keys.iter().enumerate() {
                for d in 2..12 {
                    let j = (i + d) % keys.len();
                    let admit = motion(
                        &state,
                        signer,
                        Action::Admit(member(&keys[j], &format!("d{j}"))),
                    );
                    let _ = vote(&mut state, signer, &admit);
                }
            }
        }
        let remove = motion(
            &state,
            &governors[0],
            Action::Remove {
                key: keys[100].public_key(),
                reason: "gone".into(),
            },
        );
        vote(&mut state, &governors[0], &remove).unwrap();
        vote(&mut state, &governors[1], &remove).unwrap();
        let amend = motion(
            &state,
            &governors[1],
            Action::Amend {
                policies: pii(),
                summary: String::new(),
            },
        );
        vote(&mut state, &governors[1], &amend).unwrap();
        vote(&mut state, &governors[2], &amend).unwrap();
        // Removing k100 under `any-member` removes the chain after it unless co-signed: some
        // stay in by their co-signers.
        let admitted = state.member_count() - 3;
        let decisions = 2 + 2;
        let per_admission = if any_member { 1 } else { 2 };
        let needed = decisions + admitted * per_admission;
        assert!(state.vote_count() > needed, "{}", state.vote_count());
        let charter = state.charter_envelope().clone();
        let ordered: Vec<Signed<Motion>> = state
            .votes_for_newcomer()
            .into_iter()
            .take(needed)
            .cloned()
            .collect();
        let (restored, refused) = MeshState::restore(charter.clone(), ordered).unwrap();
        assert!(refused.is_empty(), "{admission:?}: {refused:?}");
        assert!(
            restored.members == state.members,
            "{admission:?}: {} members of {}",
            restored.member_count(),
            state.member_count()
        );
        assert_eq!(restored.removed, state.removed, "{admission:?}");
        assert_eq!(restored.policies, state.policies, "{admission:?}");
        // Every vote is in the order, once.
        assert_eq!(state.votes_for_newcomer().len(), state.vote_count());
        let unordered: Vec<Signed<Motion>> = state.votes().take(needed).cloned().collect();
        let (cut, _) = MeshState::restore(charter, unordered).unwrap();
        assert!(cut.members != state.members, "{admission:?}");
    }
}
