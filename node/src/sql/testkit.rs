//! Fixtures of the query engine's and the Flight endpoint's tests: a node's store on disk
//! with products it consumes, the provider-side records other members' requests leave, and
//! a data plane over it.

use mesh_protocol::contract::{
    AgreementId, Columns, ContractRequest, ContractTerms, DAY_MS, Rejection,
};
use mesh_protocol::descriptor::{
    ColumnSchema, ContentDigest, Policy, ProductDescriptor, Sla, Status,
};
use mesh_protocol::{Agreement, ContractState, Identity, ProductId, Signed};

use crate::agreements::{AgreementRecord, Role};
use crate::config::{DataDir, NodeConfig};
use crate::dataplane::{DataPlane, DataPlaneConfig};
use crate::node::now_ms;
use crate::store::Store;

/// This node's key.
pub(crate) fn us() -> Identity {
    Identity::from_secret_bytes([1; 32])
}

/// The `n`th provider of products this node consumes.
pub(crate) fn provider(n: u8) -> Identity {
    Identity::from_secret_bytes([20 + n; 32])
}

/// The `n`th other member, a consumer of this node's product.
pub(crate) fn member(n: u32) -> Identity {
    let mut secret = [7u8; 32];
    secret[..4].copy_from_slice(&n.to_be_bytes());
    Identity::from_secret_bytes(secret)
}

/// A column of `name` and Arrow type `data_type`.
fn column(name: &str, data_type: &str) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        data_type: data_type.into(),
        nullable: false,
    }
}

/// Stores `owner`'s descriptor of `domain/name` (columns `order_id`, `region`, `email`)
/// and returns the product.
pub(crate) fn publish(store: &Store, owner: &Identity, domain: &str, name: &str) -> ProductId {
    let columns = ["order_id", "region", "email"];
    let types = ["Int64", "Utf8", "Utf8"];
    let schema = columns
        .iter()
        .zip(types)
        .map(|(name, data_type)| column(name, data_type))
        .collect();
    publish_schema(store, owner, domain, name, schema)
}

/// Stores `owner`'s descriptor of `domain/name` with nullable `columns` (name, Arrow
/// type) and returns the product.
pub(crate) fn publish_columns(
    store: &Store,
    owner: &Identity,
    domain: &str,
    name: &str,
    columns: &[(&str, &str)],
) -> ProductId {
    let schema = columns
        .iter()
        .map(|(name, data_type)| ColumnSchema {
            nullable: true,
            ..column(name, data_type)
        })
        .collect();
    publish_schema(store, owner, domain, name, schema)
}

/// Stores `owner`'s descriptor of `domain/name` with `schema` and returns the product.
fn publish_schema(
    store: &Store,
    owner: &Identity,
    domain: &str,
    name: &str,
    schema: Vec<ColumnSchema>,
) -> ProductId {
    let descriptor = ProductDescriptor {
        owner: owner.public_key(),
        domain: domain.into(),
        name: name.into(),
        version: 1,
        title: name.into(),
        description: String::new(),
        tags: vec![],
        schema,
        rows: 0,
        bytes: 0,
        digest: ContentDigest([0; 32]),
        published_at_ms: now_ms(),
        sla: Sla {
            update_frequency: "daily".into(),
            freshness_hours: 24,
            availability_bp: 9990,
        },
        policy: Policy {
            approval: Default::default(),
            allowed_purposes: vec![],
            max_contract_days: 365,
            restricted_columns: vec![],
        },
        lineage: vec![],
        data_addr: None,
        status: Status::Active,
        stewardship: Default::default(),
    };
    store
        .put_descriptor(&descriptor, &Signed::sign(owner, &descriptor))
        .unwrap();
    descriptor.id()
}

/// `consumer`'s request for `product` of `provider`, granting `order_id` and `region`,
/// valid from a day ago until `until_ms`, with a purpose of `purpose_len` bytes.
pub(crate) fn request(
    provider: &Identity,
    consumer: &Identity,
    product: &ProductId,
    until_ms: u64,
    purpose_len: usize,
) -> Signed<ContractRequest> {
    request_columns(
        provider,
        consumer,
        product,
        until_ms,
        purpose_len,
        Columns::Listed(vec!["order_id".into(), "region".into()]),
    )
}

/// [`request`] granting `columns`.
pub(crate) fn request_columns(
    provider: &Identity,
    consumer: &Identity,
    product: &ProductId,
    until_ms: u64,
    purpose_len: usize,
    columns: Columns,
) -> Signed<ContractRequest> {
    let terms = ContractTerms {
        product: product.clone(),
        provider_domain: "sales".into(),
        consumer_domain: "churn".into(),
        provider: provider.public_key(),
        consumer: consumer.public_key(),
        min_version: 1,
        max_version: None,
        purpose: "p".repeat(purpose_len),
        columns,
        filter: None,
        valid_from_ms: now_ms() - DAY_MS,
        valid_until_ms: until_ms,
        nonce: rand::random(),
    };
    Signed::sign(consumer, &ContractRequest { terms })
}

/// Stores a record of `request` on our `role` in `state`, concluded at `at_ms` (co-signed
/// by `provider` when agreed, with its signed rejection when rejected); returns its id.
pub(crate) fn put(
    store: &Store,
    role: Role,
    provider: &Identity,
    request: Signed<ContractRequest>,
    state: ContractState,
    at_ms: u64,
) -> AgreementId {
    let id = request.decode_trusted().unwrap().terms.id();
    let agreement = (state == ContractState::Agreed)
        .then(|| Agreement::countersign(provider, request.clone()).unwrap());
    let rejection = (state == ContractState::Rejected).then(|| {
        Signed::sign(
            provider,
            &Rejection {
                agreement_id: id,
                provider: provider.public_key(),
                reason: "purpose not allowed".into(),
                at_ms,
            },
        )
    });
    let record = AgreementRecord {
        role,
        request,
        agreement,
        rejection,
        revocation: None,
        state,
        updated_ms: at_ms,
    };
    store.put_agreement(&id, &record).unwrap();
    id
}

/// An agreement of this node, as consumer, on `provider`'s `product`, valid for 30 days
/// and concluded at `at_ms`.
pub(crate) fn consume(
    store: &Store,
    provider: &Identity,
    product: &ProductId,
    at_ms: u64,
) -> AgreementId {
    let r = request(provider, &us(), product, now_ms() + 30 * DAY_MS, 9);
    put(
        store,
        Role::Consumer,
        provider,
        r,
        ContractState::Agreed,
        at_ms,
    )
}

/// An agreement of this node, as consumer, on every column of `provider`'s `product`,
/// valid for 30 days and concluded at `at_ms`.
pub(crate) fn consume_all(
    store: &Store,
    provider: &Identity,
    product: &ProductId,
    at_ms: u64,
) -> AgreementId {
    let until = now_ms() + 30 * DAY_MS;
    let r = request_columns(
        provider,
        &us(),
        product,
        until,
        9,
        Columns::AllCurrentAndFuture,
    );
    put(
        store,
        Role::Consumer,
        provider,
        r,
        ContractState::Agreed,
        at_ms,
    )
}

/// Stores the provider-side records `members` other members can make this node keep on
/// its product `ours/data` under the default contract budgets
/// (`mesh_protocol::budget`, `mesh_protocol::retention`): per member 256 agreements in
/// force, 32 undecided requests (1,024 in all) and 256 closed records (16,384 in all),
/// each request's purpose `purpose_len` bytes long. Returns how many.
pub(crate) fn fill_provider_side(store: &Store, members: u32, purpose_len: usize) -> usize {
    let ours = publish(store, &us(), "ours", "data");
    let until = now_ms() + 30 * DAY_MS;
    let (mut pending, mut closed, mut written) = (0, 0, 0);
    for m in 0..members {
        let consumer = member(m);
        let p = 32.min(1024 - pending);
        let c = 256.min(16_384 - closed);
        pending += p;
        closed += c;
        let mut states = vec![ContractState::Agreed; 256];
        states.extend(std::iter::repeat_n(ContractState::Pending, p));
        states.extend(std::iter::repeat_n(ContractState::Rejected, c));
        for state in states {
            let r = request(&us(), &consumer, &ours, until, purpose_len);
            put(store, Role::Provider, &us(), r, state, now_ms());
            written += 1;
        }
    }
    written
}

/// A node's store in a temporary directory and a data plane over it.
#[derive(Debug)]
pub(crate) struct Node {
    /// Keeps the directory.
    _dir: tempfile::TempDir,
    /// The store.
    pub(crate) store: Store,
    /// The data plane (the query engine reads the store and the members through it).
    pub(crate) plane: DataPlane,
    /// Its task.
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    /// An empty store and a data plane on 127.0.0.1 (in a runtime).
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = DataDir::new(dir.path());
        let store = Store::open(&data_dir.db()).unwrap();
        let mut config = DataPlaneConfig::from_node(&NodeConfig::new("ours"));
        config.listen = "127.0.0.1:0".parse().unwrap();
        let (plane, task) = DataPlane::start(config, us(), store.clone(), data_dir).unwrap();
        Self {
            _dir: dir,
            store,
            plane,
            task,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.plane.close();
        self.task.abort();
    }
}
