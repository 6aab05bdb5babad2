//! `meshnode demo --small --no-wait` end to end, judged from the data directories it leaves.

use mesh_node::agreements::Role;
use mesh_node::store::Store;
use mesh_protocol::contract::ContractState;
use mesh_tests::{meshnode, python, require_pyarrow};

const DOMAINS: [&str; 6] = [
    "product",
    "customer",
    "e-shop",
    "order-processing",
    "recommendation",
    "churn",
];

#[test]
fn demo_builds_a_governed_mesh() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("demo");
    let out = meshnode(&[
        "demo",
        "--dir",
        root.to_str().unwrap(),
        "--small",
        "--no-wait",
    ]);
    assert!(out.success, "demo failed:\n{}\n{}", out.stdout, out.stderr);

    // Six domains, each with its own key and store; every audit chain verifies.
    let mut keys = std::collections::BTreeSet::new();
    for domain in DOMAINS {
        let dir = root.join(domain);
        let key = std::fs::read_to_string(dir.join("identity.key")).unwrap();
        assert!(keys.insert(key), "{domain} shares a key");
        let store = Store::open(&dir.join("db")).unwrap();
        assert!(
            store.audit_verify().unwrap().is_ok(),
            "{domain} audit chain"
        );
    }

    // One mesh, founded by charter: the same id everywhere, three governors deciding by two,
    // six members, and the "pii must be restricted" amendment in force on every node.
    let mut mesh_ids = std::collections::BTreeSet::new();
    for domain in DOMAINS {
        let store = Store::open(&root.join(domain).join("db")).unwrap();
        let state = mesh_node::governance::load_state(&store)
            .unwrap()
            .unwrap_or_else(|| panic!("{domain} holds no mesh"));
        mesh_ids.insert(state.id());
        assert_eq!(state.charter().name, "e-commerce");
        assert_eq!(state.charter().governors.len(), 3);
        assert_eq!(state.charter().quorum, 2);
        assert_eq!(state.member_count(), DOMAINS.len(), "{domain}'s members");
        assert_eq!(state.policies().version, 1, "{domain}'s policies");
        assert_eq!(state.policies().restricted_tags, vec!["pii"]);
    }
    assert_eq!(mesh_ids.len(), 1, "every domain in one mesh");
    // The non-member's product never reached a member.
    let outsider = Store::open(&root.join("mallory").join("db")).unwrap();
    let outsider_mesh = mesh_node::governance::load_state(&outsider)
        .unwrap()
        .unwrap();
    assert!(!mesh_ids.contains(&outsider_mesh.id()));

    // The consumer's catalog replica holds the eight published products.
    let churn = Store::open(&root.join("churn/db")).unwrap();
    let mut products: Vec<String> = churn
        .catalog()
        .unwrap()
        .into_iter()
        .map(|(d, _)| d.display_name())
        .collect();
    products.sort();
    assert_eq!(
        products,
        vec![
            "customer/customer-data",
            "customer/customer-interactions",
            "customer/customer-segmentation",
            "e-shop/page-navigation",
            "e-shop/shopping-cart",
            "order-processing/order-processing-update",
            "product/product-sales",
            "recommendation/recommendation",
        ]
    );
    // Republished under the amendment: its pii column restricted, compliant everywhere.
    let (navigation, _) = churn
        .catalog()
        .unwrap()
        .into_iter()
        .find(|(d, _)| d.name == "page-navigation")
        .unwrap();
    assert_eq!(navigation.version, 2);
    assert_eq!(navigation.policy.restricted_columns, vec!["session_id"]);
    assert_eq!(navigation.stewardship.tags_of("session_id"), ["pii"]);

    // Three contracts: two agreed (one automatic, one by the operator), one rejected for its
    // purpose, with the reason kept.
    let records = churn.agreement_records().unwrap();
    assert_eq!(records.len(), 3, "{records:?}");
    let mut agreed = 0;
    let mut rejected = 0;
    for (_, record) in &records {
        assert_eq!(record.role, Role::Consumer);
        let terms = record.terms().unwrap();
        match record.state {
            ContractState::Agreed => {
                assert!(record.agreement.as_ref().unwrap().verify().is_ok());
                agreed += 1;
            }
            ContractState::Rejected => {
                assert_eq!(terms.purpose, "marketing");
                let rejection = record.rejection.as_ref().unwrap().verify().unwrap();
                assert!(
                    rejection.reason.contains("marketing"),
                    "{}",
                    rejection.reason
                );
                rejected += 1;
            }
            other => panic!("unexpected state {other:?}"),
        }
    }
    assert_eq!((agreed, rejected), (2, 1));
    // The provider that approved by hand holds the same agreement.
    let customer = Store::open(&root.join("customer/db")).unwrap();
    let provider_side: Vec<_> = customer
        .agreement_records()
        .unwrap()
        .into_iter()
        .filter(|(_, r)| r.state == ContractState::Agreed)
        .collect();
    assert_eq!(provider_side.len(), 1);
    assert_eq!(provider_side[0].1.role, Role::Provider);

    // The fetched order updates carry only the granted columns and the EU rows.
    let fetched = root.join("churn/received/order-processing-order-processing-update.arrow");
    assert!(fetched.exists(), "no fetched file at {}", fetched.display());
    if require_pyarrow() {
        let summary = python(
            "import sys, json, pyarrow.ipc as ipc\n\
             t = ipc.open_file(sys.argv[1]).read_all()\n\
             print(json.dumps({'columns': t.column_names, 'rows': t.num_rows,\n\
                               'regions': sorted(set(t.column('region').to_pylist()))}))",
            &[fetched.to_str().unwrap()],
        );
        let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
        assert_eq!(
            summary["columns"],
            serde_json::json!(["order_id", "customer_id", "region", "amount", "status"])
        );
        assert_eq!(summary["regions"], serde_json::json!(["EU"]));
        assert!(summary["rows"].as_u64().unwrap() > 100);
    }
}
