//! A newcomer that claims its invitation again and again (its answer was lost, or it does so
//! on purpose within the grace) costs the inviting governor one admission vote, not one per
//! claim: its budgets stay free for the mesh's governance; and it gets a bounded number of
//! answers (each up to 4 MiB, flushed to disk first).

use std::time::Duration;

use mesh_node::views::{InviteRequest, ProposeRequest};
use mesh_protocol::Identity;
use mesh_protocol::Signed;
use mesh_protocol::governance::join::MAX_JOIN_ANSWERS;
use mesh_protocol::governance::{Action, AdmissionRule, Charter, Member, Policies, Ticket};

use crate::common::{start, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claiming_an_invitation_again_signs_no_second_admission() {
    let dir = tempfile::tempdir().unwrap();
    let governor = |secret: [u8; 32], domain: &str| Member {
        key: Identity::from_secret_bytes(secret).public_key(),
        domain: domain.into(),
    };
    // Two governors, both needed: one signature does not carry an admission.
    let charter = Signed::sign(
        &Identity::from_secret_bytes([1; 32]),
        &Charter {
            name: "two-of-two".into(),
            founded_at_ms: 1,
            governors: vec![governor([1; 32], "sales"), governor([2; 32], "customer")],
            quorum: 2,
            admission: AdmissionRule::Quorum,
            members: Vec::new(),
            policies: Policies::default(),
            nonce: [8; 16],
        },
    );
    let (a, a_task) = start(
        &dir.path().join("a"),
        "sales",
        [1; 32],
        &charter,
        vec![],
        |_| {},
    );
    wait_for("a listen address", || async {
        a.status().await.ok()?.listen_addrs.into_iter().next()
    })
    .await;
    let ticket = a
        .invite(InviteRequest {
            domain: "churn".into(),
            ttl_secs: None,
            reuse_name: false,
        })
        .await
        .unwrap();
    let ticket = Ticket::decode(&ticket.ticket).unwrap();
    let newcomer = Identity::from_secret_bytes([30; 32]);
    let claim = || {
        mesh_node::governance::join::join(
            &ticket,
            &newcomer,
            "churn",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64,
            Duration::from_secs(20),
        )
    };
    for n in 0..MAX_JOIN_ANSWERS {
        let welcome = claim().await.unwrap_or_else(|e| panic!("claim {n}: {e}"));
        assert!(!welcome.admitted, "one of two governors carries nothing");
    }
    // Past its answers the invitation gets a short refusal, not another welcome.
    let refused = claim().await.expect_err("one claim too many");
    assert!(refused.to_string().contains("new ticket"), "{refused}");
    let admissions: Vec<_> = a
        .motions()
        .await
        .unwrap()
        .into_iter()
        .filter(|m| matches!(&m.action, Action::Admit(m) if m.key == newcomer.public_key()))
        .collect();
    assert_eq!(admissions.len(), 1, "{admissions:?}");
    assert_eq!(admissions[0].signed_by, ["sales"]);
    // The governor can still propose: its open motions are not spent on one newcomer.
    a.propose(ProposeRequest {
        max_contract_days: Some(30),
        ..ProposeRequest::default()
    })
    .await
    .expect("the governor still proposes");

    let _ = a.shutdown().await;
    let _ = a_task.await;
}
