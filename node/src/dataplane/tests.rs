//! Data-plane tests: two real quinn endpoints on 127.0.0.1 with sled stores in tempdirs.

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use mesh_protocol::audit::AuditKind;
use mesh_protocol::contract::{ContractRequest, ContractState, ContractTerms, DAY_MS, Revocation};
use mesh_protocol::descriptor::{
    ContentDigest, Policy, ProductDescriptor, Sla, Status, columns_from_arrow,
};
use mesh_protocol::{
    Agreement, Compression, FetchRefusal, FetchRequest, Frame, FrameDecoder, Identity, ProductId,
    Signed, encode_frame,
};
use tempfile::TempDir;

use super::*;
use crate::agreements::{AgreementRecord, Role};
use crate::node::now_ms;

const REGIONS: [&str; 3] = ["EU", "US", "APAC"];
const BATCHES: usize = 6;
const ROWS_PER_BATCH: usize = 500;

fn provider_id() -> Identity {
    Identity::from_secret_bytes([1; 32])
}
fn consumer_id() -> Identity {
    Identity::from_secret_bytes([2; 32])
}
fn mallory_id() -> Identity {
    Identity::from_secret_bytes([3; 32])
}

/// One node's data plane with its own store and data directory.
struct Side {
    _dir: TempDir,
    identity: Identity,
    store: Store,
    data_dir: DataDir,
    plane: DataPlane,
    task: tokio::task::JoinHandle<()>,
}

impl Side {
    fn start(identity: Identity) -> Self {
        Self::start_with(identity, Hooks::default(), 4)
    }

    fn start_with(identity: Identity, hooks: Hooks, max_transfers: u32) -> Self {
        Self::start_full(identity, hooks, tls::Transport::streams(max_transfers))
    }

    /// A side whose connections use `transport` (`max_streams`: transfers served per peer).
    fn start_full(identity: Identity, hooks: Hooks, transport: tls::Transport) -> Self {
        Self::start_striped(identity, hooks, transport, 1)
    }

    /// [`Side::start_full`], striping its whole-product fetches over `connections`.
    fn start_striped(
        identity: Identity,
        hooks: Hooks,
        transport: tls::Transport,
        connections: u8,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = DataDir::new(dir.path());
        let store = Store::open(&data_dir.db()).unwrap();
        let (plane, task) =
            Self::plane(&identity, &store, &data_dir, hooks, transport, connections);
        Side {
            _dir: dir,
            identity,
            store,
            data_dir,
            plane,
            task,
        }
    }

    fn plane(
        identity: &Identity,
        store: &Store,
        data_dir: &DataDir,
        hooks: Hooks,
        transport: tls::Transport,
        connections: u8,
    ) -> (DataPlane, tokio::task::JoinHandle<()>) {
        DataPlane::start_with_hooks(
            DataPlaneConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                max_transfers_per_peer: transport.max_streams,
                max_transfers: crate::config::DEFAULT_MAX_TRANSFERS,
                clock_skew_ms: 0,
                members: Default::default(),
                congestion: transport.congestion,
                link: transport.link,
                connections,
                disk_reserve: Default::default(),
                fetch_rate: Default::default(),
            },
            identity.clone(),
            store.clone(),
            data_dir.clone(),
            hooks,
        )
        .unwrap()
    }

    /// Replaces the endpoint (a restarted provider), with `hooks`.
    fn restart(&mut self, hooks: Hooks) {
        self.plane.close();
        self.task.abort();
        let (plane, task) = Self::plane(
            &self.identity,
            &self.store,
            &self.data_dir,
            hooks,
            tls::Transport::streams(4),
            1,
        );
        self.plane = plane;
        self.task = task;
    }

    fn addr(&self) -> SocketAddr {
        self.plane.local_addr()
    }

    fn key(&self) -> mesh_protocol::PublicKey {
        self.identity.public_key()
    }
}

fn sales_schema() -> Schema {
    Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
        Field::new("email", DataType::Utf8, false),
        Field::new("day", DataType::Date32, false),
    ])
}

fn sales_batch(batch: usize) -> RecordBatch {
    let ids: Vec<i64> = (0..ROWS_PER_BATCH)
        .map(|i| (batch * ROWS_PER_BATCH + i) as i64)
        .collect();
    RecordBatch::try_new(
        Arc::new(sales_schema()),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| REGIONS[*i as usize % 3]),
            )),
            Arc::new(Float64Array::from_iter_values(
                ids.iter().map(|i| *i as f64 * 1.25),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("customer{i}@example.com")),
            )),
            Arc::new(Date32Array::from_iter_values(
                ids.iter().map(|i| 19_700 + (*i % 365) as i32),
            )),
        ],
    )
    .unwrap()
}

/// Writes version `version` of `sales` (with `email` restricted) and its descriptor.
fn publish(side: &Side, name: &str, version: u64, restricted: &[&str]) -> ProductId {
    let path = side.data_dir.product_file(name, version);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let schema = Arc::new(sales_schema());
    let mut writer = FileWriter::try_new(File::create(&path).unwrap(), &schema).unwrap();
    for b in 0..BATCHES {
        writer.write(&sales_batch(b)).unwrap();
    }
    writer.finish().unwrap();
    let descriptor = ProductDescriptor {
        owner: side.key(),
        domain: "sales".into(),
        name: name.into(),
        version,
        title: name.into(),
        description: String::new(),
        tags: vec![],
        schema: columns_from_arrow(&schema),
        rows: (BATCHES * ROWS_PER_BATCH) as u64,
        bytes: std::fs::metadata(&path).unwrap().len(),
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
            restricted_columns: restricted.iter().map(|s| s.to_string()).collect(),
        },
        lineage: vec![],
        data_addr: Some(side.addr().to_string()),
        status: Status::Active,
        stewardship: Default::default(),
    };
    let envelope = Signed::sign(&side.identity, &descriptor);
    side.store.put_descriptor(&descriptor, &envelope).unwrap();
    side.store.set_local_version(name, version).unwrap();
    descriptor.id()
}

/// Replaces the file of `name` version `version` with one of `batches` batches of the same
/// schema (the descriptor keeps its metadata; the provider serves what the file holds).
fn enlarge(side: &Side, name: &str, version: u64, batches: usize) {
    let path = side.data_dir.product_file(name, version);
    let schema = Arc::new(sales_schema());
    let mut writer = FileWriter::try_new(File::create(&path).unwrap(), &schema).unwrap();
    for b in 0..batches {
        writer.write(&sales_batch(b)).unwrap();
    }
    writer.finish().unwrap();
}

fn terms(product: &ProductId, consumer: &Identity) -> ContractTerms {
    let now = now_ms();
    ContractTerms {
        product: product.clone(),
        provider_domain: "sales".into(),
        consumer_domain: "churn".into(),
        provider: product.owner,
        consumer: consumer.public_key(),
        min_version: 1,
        max_version: None,
        purpose: "analytics".into(),
        columns: mesh_protocol::Columns::Listed(vec![
            "order_id".into(),
            "region".into(),
            "amount".into(),
        ]),
        filter: Some("region = 'EU'".into()),
        valid_from_ms: now - DAY_MS,
        valid_until_ms: now + 30 * DAY_MS,
        nonce: rand::random(),
    }
}

fn record(role: Role, agreement: &Agreement) -> AgreementRecord {
    AgreementRecord {
        role,
        request: agreement.request().clone(),
        agreement: Some(agreement.clone()),
        rejection: None,
        revocation: None,
        state: ContractState::Agreed,
        updated_ms: now_ms(),
    }
}

/// Co-signs `terms` and stores the agreement on both sides (as the real negotiation would).
/// A provider that published `sales` (version 1, `email` restricted), a consumer whose
/// catalog holds it, and an agreement between them with the default terms.
fn agreed_sales() -> (Side, Side, ProductId) {
    let provider = Side::start(provider_id());
    let consumer = Side::start(consumer_id());
    let product = publish(&provider, "sales", 1, &["email"]);
    replicate_catalog(&provider, &consumer, &product);
    agree(&provider, &consumer, terms(&product, &consumer.identity));
    (provider, consumer, product)
}

/// Records at `provider` its own revocation of `agreement` (the consumer has not heard);
/// the signed revocation.
fn revoke_at(provider: &Side, agreement: &Agreement) -> Signed<Revocation> {
    let revocation = Signed::sign(
        &provider.identity,
        &Revocation {
            agreement_id: agreement.id(),
            by: provider.key(),
            reason: "contract ended".into(),
            at_ms: now_ms(),
        },
    );
    provider
        .store
        .put_revocation(&agreement.id(), &revocation)
        .unwrap();
    revocation
}

fn agree(provider: &Side, consumer: &Side, terms: ContractTerms) -> Agreement {
    let consumer_identity = Identity::from_secret_bytes(match terms.consumer {
        k if k == consumer_id().public_key() => [2; 32],
        _ => [3; 32],
    });
    let request = Signed::sign(&consumer_identity, &ContractRequest { terms });
    let agreement = Agreement::countersign(&provider.identity, request).unwrap();
    let id = agreement.id();
    provider
        .store
        .put_agreement(&id, &record(Role::Provider, &agreement))
        .unwrap();
    consumer
        .store
        .put_agreement(&id, &record(Role::Consumer, &agreement))
        .unwrap();
    agreement
}

/// The provider's product as the consumer's catalog shows it.
fn replicate_catalog(provider: &Side, consumer: &Side, product: &ProductId) {
    let (_, envelope) = provider.store.descriptor(product).unwrap().unwrap();
    let descriptor = envelope.decode_trusted().unwrap();
    consumer
        .store
        .put_descriptor(&descriptor, &envelope)
        .unwrap();
}

/// [`options`], fetching from `provider`'s current address instead of the catalog's.
fn options_via(out: &Path, product: &ProductId, provider: &Side) -> FetchOptions {
    FetchOptions {
        provider_addr: Some(provider.addr()),
        ..options(out, product)
    }
}

fn options(out: &Path, product: &ProductId) -> FetchOptions {
    FetchOptions {
        product: product.clone(),
        out: out.to_owned(),
        agreement: None,
        version: None,
        compression: Compression::None,
        provider_addr: None,
        force: false,
        format: Default::default(),
        progress: None,
        narrowing: None,
        connections: None,
    }
}

fn read_arrow(path: &Path) -> (Vec<String>, Vec<RecordBatch>) {
    let reader = FileReader::try_new(File::open(path).unwrap(), None).unwrap();
    let names = reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let batches = reader.collect::<Result<Vec<_>, _>>().unwrap();
    (names, batches)
}

fn no_output(out: &Path) {
    let paths = PartialPaths::new(out.to_owned());
    assert!(!out.exists(), "{} must not exist", out.display());
    assert!(!paths.partial.exists(), "partial file left behind");
    assert!(!paths.state.exists(), "state file left behind");
}

/// Checks the file with pyarrow too, unless MESHNODE_SKIP_PYARROW=1.
fn pyarrow_check(path: &Path) -> Option<serde_json::Value> {
    let script = "import json, sys, pyarrow.ipc as ipc\n\
                  t = ipc.open_file(sys.argv[1]).read_all()\n\
                  print(json.dumps({'columns': t.column_names, 'rows': t.num_rows, \
                  'regions': sorted(set(t.column('region').to_pylist()))}))";
    let output = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output();
    let skip = std::env::var("MESHNODE_SKIP_PYARROW").is_ok_and(|v| v == "1");
    match output {
        Ok(o) if o.status.success() => Some(serde_json::from_slice(&o.stdout).unwrap()),
        Ok(o) if skip => {
            eprintln!(
                "pyarrow check skipped: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) if skip => {
            eprintln!("pyarrow check skipped: {e}");
            None
        }
        other => panic!(
            "pyarrow could not read {} (install pyarrow or set MESHNODE_SKIP_PYARROW=1): {other:?}",
            path.display()
        ),
    }
}

fn audit_kinds(store: &Store) -> Vec<AuditKind> {
    store
        .audit_raw()
        .unwrap()
        .iter()
        .map(|b| {
            mesh_protocol::audit::AuditEntry::from_bytes(b)
                .unwrap()
                .kind
        })
        .collect()
}

#[tokio::test]
async fn fetch_applies_projection_and_filter() {
    let provider = Side::start(provider_id());
    let consumer = Side::start(consumer_id());
    let product = publish(&provider, "sales", 1, &["email"]);
    replicate_catalog(&provider, &consumer, &product);
    let agreement = agree(&provider, &consumer, terms(&product, &consumer.identity));
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("eu.arrow");

    let outcome = consumer.plane.fetch(options(&out, &product)).await.unwrap();

    let (names, batches) = read_arrow(&out);
    assert_eq!(names, ["order_id", "region", "amount"]);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, BATCHES * ROWS_PER_BATCH / 3);
    assert_eq!(outcome.rows, rows as u64);
    assert_eq!(outcome.agreement, agreement.id().to_hex());
    assert_eq!(outcome.version, 1);
    assert_eq!(outcome.resumed_from_batch, 0);
    assert_eq!(outcome.file_bytes, std::fs::metadata(&out).unwrap().len());
    for batch in &batches {
        assert!(batch.schema().field_with_name("email").is_err());
        let region = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert!(region.iter().all(|r| r == Some("EU")));
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert!(ids.values().iter().all(|i| i % 3 == 0));
    }
    let bytes = std::fs::read(&out).unwrap();
    assert!(
        !bytes.windows(9).any(|w| w == b"customer0"),
        "restricted data leaked"
    );
    if let Some(py) = pyarrow_check(&out) {
        assert_eq!(
            py["columns"],
            serde_json::json!(["order_id", "region", "amount"])
        );
        assert_eq!(py["rows"], rows);
        assert_eq!(py["regions"], serde_json::json!(["EU"]));
    }
    no_output_partials(&out);
    assert!(audit_kinds(&consumer.store).contains(&AuditKind::TransferReceived));
    // The provider audits after the consumer closed; give it a moment.
    for _ in 0..50 {
        if audit_kinds(&provider.store).contains(&AuditKind::TransferServed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(audit_kinds(&provider.store).contains(&AuditKind::TransferServed));
    assert!(provider.store.audit_verify().unwrap().is_ok());
    assert!(consumer.store.audit_verify().unwrap().is_ok());
}

#[tokio::test]
async fn a_filter_that_drops_long_runs_still_sends_a_frame_every_run() {
    let provider = Side::start(provider_id());
    let consumer = Side::start(consumer_id());
    let product = publish(&provider, "sales", 1, &["email"]);
    // 2 runs and a half of batches the filter drops entirely, then one it keeps part of.
    let batches = super::produce::EMPTY_RUN * 5 / 2 + 1;
    enlarge(&provider, "sales", 1, batches);
    replicate_catalog(&provider, &consumer, &product);
    agree(&provider, &consumer, terms(&product, &consumer.identity));
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("late.arrow");
    let first_kept = ((batches - 1) * ROWS_PER_BATCH) as i64;
    let outcome = consumer
        .plane
        .fetch(FetchOptions {
            narrowing: Some(mesh_protocol::Narrowing {
                columns: None,
                filter: Some(format!("order_id >= {first_kept}")),
            }),
            ..options(&out, &product)
        })
        .await
        .unwrap();
    let (_, read) = read_arrow(&out);
    let rows: Vec<usize> = read.iter().map(RecordBatch::num_rows).collect();
    // One empty batch for each full run dropped, then the rows kept (the agreement's filter
    // keeps a third of them): the same rows as without the empty batches.
    assert_eq!(rows[..2], [0, 0], "{rows:?}");
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[2], ROWS_PER_BATCH / 3 + 1);
    assert_eq!(outcome.rows, rows.iter().sum::<usize>() as u64);
}

fn no_output_partials(out: &Path) {
    let paths = PartialPaths::new(out.to_owned());
    assert!(!paths.partial.exists() && !paths.state.exists());
}

/// `orders` version 1 with no restricted column, and an agreement for all of it (every
/// column, no filter: served as stored).
fn whole_product_agreed() -> (Side, Side, ProductId) {
    whole_product_agreed_with(Hooks::default())
}

/// [`whole_product_agreed`] with a consumer whose data plane has `hooks`.
/// Publishes `orders` version 1 at `provider` (with `restricted` columns), shows it to
/// `consumer` and agrees on the whole of it: every column, every row.
fn agree_whole(provider: &Side, consumer: &Side, restricted: &[&str]) -> (ProductId, Agreement) {
    let product = publish(provider, "orders", 1, restricted);
    replicate_catalog(provider, consumer, &product);
    let mut t = terms(&product, &consumer.identity);
    t.columns = mesh_protocol::Columns::AllCurrentAndFuture;
    t.filter = None;
    let agreement = agree(provider, consumer, t);
    (product, agreement)
}

fn whole_product_agreed_with(hooks: Hooks) -> (Side, Side, ProductId) {
    let provider = Side::start(provider_id());
    let consumer = Side::start_with(consumer_id(), hooks, 4);
    let (product, _) = agree_whole(&provider, &consumer, &[]);
    (provider, consumer, product)
}

#[tokio::test]
async fn a_stored_batch_over_the_frame_limit_is_served_in_slices_with_the_same_rows() {
    let (provider, consumer, product) = whole_product_agreed();
    // One batch of about 90 MiB, stored as it is: more than a data frame may carry (64 MiB),
    // so the provider does not stream the file's messages as they are but encodes the batch
    // again in slices.
    let rows = 1_500_000usize;
    let ids: Vec<i64> = (0..rows as i64).collect();
    let batch = RecordBatch::try_new(
        Arc::new(sales_schema()),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| REGIONS[*i as usize % 3]),
            )),
            Arc::new(Float64Array::from_iter_values(
                ids.iter().map(|i| *i as f64),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("customer{i:012}@example.com")),
            )),
            Arc::new(Date32Array::from_iter_values(ids.iter().map(|_| 19_700))),
        ],
    )
    .unwrap();
    let path = provider.data_dir.product_file("orders", 1);
    let mut writer =
        FileWriter::try_new(File::create(&path).unwrap(), &Arc::new(sales_schema())).unwrap();
    writer.write(&batch).unwrap();
    writer.finish().unwrap();
    drop(writer);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("orders.arrow");
    let outcome = consumer.plane.fetch(options(&out, &product)).await.unwrap();
    let (_, read) = read_arrow(&out);
    assert!(read.len() > 1, "one frame per slice");
    assert_eq!(outcome.rows, rows as u64);
    let got = arrow::compute::concat_batches(&read[0].schema(), &read).unwrap();
    assert_eq!(got, batch);
}

#[tokio::test]
async fn whole_product_passthrough_and_compressed_fetches_read_back() {
    let (_provider, consumer, product) = whole_product_agreed();
    let out_dir = tempfile::tempdir().unwrap();
    let expected: Vec<RecordBatch> = (0..BATCHES).map(sales_batch).collect();
    for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
        let out = out_dir.path().join(format!("{compression:?}.arrow"));
        let mut o = options(&out, &product);
        o.compression = compression;
        let outcome = consumer.plane.fetch(o).await.unwrap();
        assert_eq!(outcome.rows, (BATCHES * ROWS_PER_BATCH) as u64);
        let (names, batches) = read_arrow(&out);
        assert_eq!(names, ["order_id", "region", "amount", "email", "day"]);
        assert_eq!(batches, expected, "{compression:?}");
        if compression == Compression::None {
            // Passthrough: one frame per stored message (schema + batches).
            assert_eq!(outcome.batches, 1 + BATCHES as u64);
        }
        if let Some(py) = pyarrow_check(&out) {
            assert_eq!(py["rows"], BATCHES * ROWS_PER_BATCH);
        }
    }
}

#[tokio::test]
async fn a_whole_product_served_again_is_not_hashed_again_and_a_stale_summary_never_passes() {
    let (provider, consumer, product) = whole_product_agreed();
    let out_dir = tempfile::tempdir().unwrap();
    let out = |name: &str| out_dir.path().join(name);
    let hits = || provider.plane.shared.summaries().hits;

    let first = consumer
        .plane
        .fetch(options(&out("1.arrow"), &product))
        .await
        .unwrap();
    assert_eq!((hits(), provider.plane.shared.summaries().len()), (0, 1));
    let second = consumer
        .plane
        .fetch(options(&out("2.arrow"), &product))
        .await
        .unwrap();
    assert_eq!(
        hits(),
        1,
        "the second whole-product fetch reuses the summary"
    );
    assert_eq!(second.digest, first.digest);
    assert_eq!(
        std::fs::read(out("2.arrow")).unwrap(),
        std::fs::read(out("1.arrow")).unwrap()
    );

    // The stored file changed in place behind the same stamp (same inode, length and
    // modification time): the signed summary is stale and the consumer's own digest
    // refuses the transfer.
    let path = provider.data_dir.product_file("orders", 1);
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(10)
        .position(|w| w == b"customer5@")
        .expect("an email in the file");
    bytes[at] = b'C';
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.seek(SeekFrom::Start(at as u64)).unwrap();
        file.write_all(b"C").unwrap();
        file.set_modified(modified).unwrap();
    }
    let err = consumer
        .plane
        .fetch(options(&out("3.arrow"), &product))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Verification(_)), "{err}");
    assert!(err.to_string().contains("digest"), "{err}");
    no_output(&out("3.arrow"));
    assert_eq!(hits(), 2);

    // Replaced by a rename, as publishing does: a new file, hashed again and served.
    let next = path.with_extension("next");
    std::fs::write(&next, &bytes).unwrap();
    std::fs::rename(&next, &path).unwrap();
    let fourth = consumer
        .plane
        .fetch(options(&out("4.arrow"), &product))
        .await
        .unwrap();
    assert_eq!(hits(), 2);
    assert_ne!(fourth.digest, first.digest);
    let (_, batches) = read_arrow(&out("4.arrow"));
    let emails = batches[0]
        .column(3)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(emails.value(5), "Customer5@example.com");
}

#[tokio::test]
async fn windows_sized_for_a_slow_link_still_carry_a_product_many_times_larger() {
    // 8 Mbit/s at 10 ms: the smallest windows (1 MiB per stream), against a transfer of
    // several MiB, so it runs on many rounds of flow-control credit.
    let slow = tls::LongFatLink {
        bits_per_s: 8_000_000,
        rtt: Duration::from_millis(10),
    };
    assert_eq!(tls::Windows::fetching(slow).stream_receive, 1024 * 1024);
    let transport = tls::Transport {
        link: slow,
        ..tls::Transport::streams(4)
    };
    let provider = Side::start_full(provider_id(), Hooks::default(), transport);
    let consumer = Side::start_full(consumer_id(), Hooks::default(), transport);
    let product = publish(&provider, "orders", 1, &[]);
    let batches = 400;
    enlarge(&provider, "orders", 1, batches);
    let path = provider.data_dir.product_file("orders", 1);
    assert!(std::fs::metadata(&path).unwrap().len() > 8 * 1024 * 1024);
    replicate_catalog(&provider, &consumer, &product);
    let mut terms = terms(&product, &consumer.identity);
    terms.filter = None;
    agree(&provider, &consumer, terms);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("o.arrow");
    let outcome = consumer.plane.fetch(options(&out, &product)).await.unwrap();
    assert_eq!(outcome.rows, (batches * ROWS_PER_BATCH) as u64);
    assert!(
        outcome.bytes > 4 * 1024 * 1024,
        "{} bytes: not several windows",
        outcome.bytes
    );
    let (names, batches_read) = read_arrow(&out);
    assert_eq!(names, ["order_id", "region", "amount"]);
    let ids: Vec<i64> = batches_read
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(
        ids,
        (0..(batches * ROWS_PER_BATCH) as i64).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn every_congestion_controller_carries_a_verified_fetch() {
    for congestion in tls::Congestion::ALL {
        let transport = tls::Transport {
            congestion,
            ..tls::Transport::streams(4)
        };
        let provider = Side::start_full(provider_id(), Hooks::default(), transport);
        let consumer = Side::start_full(consumer_id(), Hooks::default(), transport);
        let product = publish(&provider, "orders", 1, &["email"]);
        replicate_catalog(&provider, &consumer, &product);
        agree(&provider, &consumer, terms(&product, &consumer.identity));
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("o.arrow");
        let outcome = consumer
            .plane
            .fetch(options(&out, &product))
            .await
            .unwrap_or_else(|e| panic!("{congestion:?}: {e}"));
        assert!(outcome.rows > 0, "{congestion:?}");
        let (names, _) = read_arrow(&out);
        assert!(!names.contains(&"email".to_string()), "{congestion:?}");
    }
}

#[tokio::test]
async fn refusals_are_clear_and_leave_no_file() {
    let provider = Side::start(provider_id());
    let consumer = Side::start(consumer_id());
    let product = publish(&provider, "sales", 1, &["email"]);
    replicate_catalog(&provider, &consumer, &product);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("x.arrow");

    // No agreement at all.
    let err = consumer
        .plane
        .fetch(options(&out, &product))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::NoAgreement(_)), "{err}");
    assert!(err.to_string().contains("meshnode share request"), "{err}");
    no_output(&out);

    // Revoked at the provider (the consumer has not heard yet).
    let agreement = agree(&provider, &consumer, terms(&product, &consumer.identity));
    let revocation = revoke_at(&provider, &agreement);
    let err = consumer
        .plane
        .fetch(options(&out, &product))
        .await
        .unwrap_err();
    match &err {
        FetchError::Refused(r) => assert_eq!(r.code, FetchRefusal::Revoked, "{err}"),
        other => panic!("expected a revoked refusal, got {other}"),
    }
    assert!(err.to_string().contains("was revoked"), "{err}");
    no_output(&out);
    // Once the consumer knows, it refuses locally.
    consumer
        .store
        .put_revocation(&agreement.id(), &revocation)
        .unwrap();
    let err = consumer
        .plane
        .fetch(options(&out, &product))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::NoAgreement(_)), "{err}");
    assert!(err.to_string().contains("revoked"), "{err}");
    no_output(&out);

    // Version not covered by the terms (consumer-side check and provider-side check).
    let mut t = terms(&product, &consumer.identity);
    t.max_version = Some(1);
    let limited = agree(&provider, &consumer, t);
    let mut o = options(&out, &product);
    o.version = Some(2);
    let err = consumer.plane.fetch(o).await.unwrap_err();
    assert!(
        err.to_string().contains("does not cover version 2"),
        "{err}"
    );
    no_output(&out);
    let frames = raw_fetch(&consumer, provider.addr(), &provider, &limited, Some(2)).await;
    assert_refusal(
        &frames,
        FetchRefusal::NotCovered,
        "covers versions 1..=1, not 2",
    );

    // A covered version the provider does not hold.
    let open = agree(&provider, &consumer, terms(&product, &consumer.identity));
    let mut o = options(&out, &product);
    o.version = Some(7);
    o.agreement = Some(open.id().short());
    let err = consumer.plane.fetch(o).await.unwrap_err();
    match &err {
        FetchError::Refused(r) => assert_eq!(r.code, FetchRefusal::UnknownVersion, "{err}"),
        other => panic!("expected unknown_version, got {other}"),
    }
    no_output(&out);

    // Expired: the provider refuses even if asked directly.
    let mut t = terms(&product, &consumer.identity);
    t.valid_from_ms = now_ms() - 10 * DAY_MS;
    t.valid_until_ms = now_ms() - DAY_MS;
    let expired = agree(&provider, &consumer, t);
    let frames = raw_fetch(&consumer, provider.addr(), &provider, &expired, None).await;
    assert_refusal(&frames, FetchRefusal::Expired, "expired at");
    let mut o = options(&out, &product);
    o.agreement = Some(expired.id().short());
    let err = consumer.plane.fetch(o).await.unwrap_err();
    assert!(err.to_string().contains("is expired"), "{err}");
    no_output(&out);
}

#[tokio::test]
async fn agreement_presented_by_another_key_is_refused() {
    let provider = Side::start(provider_id());
    let consumer = Side::start(consumer_id());
    let mallory = Side::start(mallory_id());
    let product = publish(&provider, "sales", 1, &["email"]);
    replicate_catalog(&provider, &mallory, &product);
    let agreement = agree(&provider, &consumer, terms(&product, &consumer.identity));
    // Mallory copied the consumer's agreement into her store.
    mallory
        .store
        .put_agreement(&agreement.id(), &record(Role::Consumer, &agreement))
        .unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("stolen.arrow");
    let err = mallory
        .plane
        .fetch(options(&out, &product))
        .await
        .unwrap_err();
    match &err {
        FetchError::Refused(r) => {
            assert_eq!(r.code, FetchRefusal::WrongConsumer);
            assert!(r.message.contains(&mallory.key().to_string()), "{err}");
        }
        other => panic!("expected wrong_consumer, got {other}"),
    }
    no_output(&out);

    // A product this provider does not have.
    let mut t = terms(&product, &consumer.identity);
    t.product.name = "nothing-here".into();
    let other = agree(&provider, &consumer, t);
    let frames = raw_fetch(&consumer, provider.addr(), &provider, &other, None).await;
    assert_refusal(
        &frames,
        FetchRefusal::UnknownProduct,
        "does not serve product",
    );

    // A provider that is not who the catalog says: the TLS pin fails.
    let impostor = Side::start(mallory_id());
    let o = options_via(&out, &product, &impostor);
    let err = consumer.plane.fetch(o).await.unwrap_err();
    assert!(matches!(err, FetchError::Connect { .. }), "{err}");
    no_output(&out);
}

#[tokio::test]
async fn tampered_trailers_and_data_are_rejected() {
    for tamper in [
        Tamper::TrailerDigest,
        Tamper::TrailerSigner,
        Tamper::DataByte,
    ] {
        let provider = Side::start_with(
            provider_id(),
            Hooks {
                tamper: Some(tamper),
                ..Hooks::default()
            },
            4,
        );
        let consumer = Side::start(consumer_id());
        let product = publish(&provider, "sales", 1, &["email"]);
        replicate_catalog(&provider, &consumer, &product);
        agree(&provider, &consumer, terms(&product, &consumer.identity));
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("t.arrow");
        let err = consumer
            .plane
            .fetch(options(&out, &product))
            .await
            .unwrap_err();
        assert!(
            matches!(err, FetchError::Verification(_)),
            "{tamper:?}: {err}"
        );
        let text = err.to_string();
        match tamper {
            Tamper::TrailerDigest | Tamper::DataByte => {
                assert!(text.contains("digest"), "{text}")
            }
            Tamper::TrailerSigner => assert!(text.contains("signed by"), "{text}"),
        }
        no_output(&out);
        assert!(!audit_kinds(&consumer.store).contains(&AuditKind::TransferReceived));
    }
}

#[tokio::test]
async fn interrupted_fetch_resumes_to_an_identical_file() {
    let mut provider = Side::start_with(
        provider_id(),
        Hooks {
            pause_after_frames: Some(3),
            ..Hooks::default()
        },
        4,
    );
    let consumer = Side::start(consumer_id());
    let product = publish(&provider, "orders", 1, &[]);
    replicate_catalog(&provider, &consumer, &product);
    let mut t = terms(&product, &consumer.identity);
    t.filter = Some("amount >= 100.0".into());
    agree(&provider, &consumer, t);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("resumed.arrow");
    let partials = PartialPaths::new(out.clone());

    let fetch = {
        let plane = consumer.plane.clone();
        let o = options(&out, &product);
        tokio::spawn(async move { plane.fetch(o).await })
    };
    // The provider stalls after three frames; then it disappears.
    tokio::time::timeout(
        Duration::from_secs(10),
        provider.plane.shared.hooks.paused.notified(),
    )
    .await
    .expect("the provider paused");
    provider.plane.close();
    provider.task.abort();
    let err = fetch.await.unwrap().unwrap_err();
    match &err {
        FetchError::Interrupted { batches, .. } => assert_eq!(*batches, 3, "{err}"),
        other => panic!("expected an interruption, got {other}"),
    }
    assert!(!out.exists());
    assert!(partials.partial.exists() && partials.state.exists());
    let state: ResumeState =
        serde_json::from_slice(&std::fs::read(&partials.state).unwrap()).unwrap();
    assert_eq!((state.batches, state.version), (3, 1));

    // Meanwhile a retry that cannot reach the right provider keeps the partial file.
    let impostor = Side::start(mallory_id());
    let o = options_via(&out, &product, &impostor);
    let err = consumer.plane.fetch(o).await.unwrap_err();
    assert!(matches!(err, FetchError::Connect { .. }), "{err}");
    assert!(partials.partial.exists() && partials.state.exists());

    // The provider comes back on a new port.
    provider.restart(Hooks::default());
    let o = options_via(&out, &product, &provider);
    let outcome = consumer.plane.fetch(o).await.unwrap();
    assert_eq!(outcome.resumed_from_batch, 3);
    assert!(!partials.partial.exists() && !partials.state.exists());

    // The same fetch without interruption gives the same bytes.
    let whole = out_dir.path().join("whole.arrow");
    let o = options_via(&whole, &product, &provider);
    let reference = consumer.plane.fetch(o).await.unwrap();
    assert_eq!(reference.resumed_from_batch, 0);
    assert_eq!(reference.digest, outcome.digest);
    assert_eq!(std::fs::read(&whole).unwrap(), std::fs::read(&out).unwrap());
    let (_, batches) = read_arrow(&out);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows as u64, outcome.rows);
    assert_eq!(rows, BATCHES * ROWS_PER_BATCH - 80);
}

/// A disk that has just the reserve free: any write eats into it.
fn full_disk(_: &Path) -> u64 {
    crate::diskroom::Reserve::default().bytes()
}

#[tokio::test]
async fn a_fetch_that_would_eat_into_the_disk_reserve_is_refused_before_it_starts() {
    let (provider, consumer, product) = whole_product_agreed_with(Hooks {
        disk_probe: crate::diskroom::Probe::With(full_disk),
        ..Hooks::default()
    });
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("orders.arrow");
    let err = consumer
        .plane
        .fetch(options(&out, &product))
        .await
        .unwrap_err();
    let FetchError::NoRoom(no_room) = &err else {
        panic!("expected a refusal for want of room, got {err}");
    };
    // The whole product's stored size was asked for, on the output's disk.
    let stored = std::fs::metadata(provider.data_dir.product_file("orders", 1))
        .unwrap()
        .len();
    assert_eq!(
        (no_room.dir.as_path(), no_room.more),
        (out_dir.path(), stored)
    );
    assert_eq!(err.code(), "no_room");
    assert!(err.to_string().contains("disk_reserve_mib"), "{err}");
    no_output(&out);
    // Converted, it is written twice over (the received file, then the conversion).
    let parquet = out_dir.path().join("orders.parquet");
    let o = FetchOptions {
        format: convert::OutputFormat::Parquet,
        ..options(&parquet, &product)
    };
    let Err(FetchError::NoRoom(no_room)) = consumer.plane.fetch(o).await else {
        panic!("a converted fetch was not refused for want of room");
    };
    assert_eq!(no_room.more, 2 * stored);
    no_output(&parquet);
    assert_eq!(active_transfers(&provider, &consumer.key()), 0);
}

#[tokio::test]
async fn a_fetch_stopped_by_the_disk_reserve_keeps_what_arrived_and_resumes_once_there_is_room() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    /// Room for the check before the fetch and for the first few MiB; then the disk is full.
    fn filling(dir: &Path) -> u64 {
        static LOOKS: AtomicUsize = AtomicUsize::new(0);
        match LOOKS.fetch_add(1, Ordering::SeqCst) {
            0 | 1 => 1 << 40,
            _ => full_disk(dir),
        }
    }
    // About 10 MiB in 400 batches: the writer looks at the disk again after 4 MiB.
    const MANY: usize = 400;
    let (provider, mut consumer, product) = whole_product_agreed_with(Hooks {
        disk_probe: crate::diskroom::Probe::With(filling),
        ..Hooks::default()
    });
    enlarge(&provider, "orders", 1, MANY);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("orders.arrow");
    let partials = PartialPaths::new(out.clone());

    let err = consumer
        .plane
        .fetch(options(&out, &product))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::NoRoom(_)), "{err}");
    assert!(err.to_string().contains("resumes"), "{err}");
    assert!(!out.exists());
    let state: ResumeState =
        serde_json::from_slice(&std::fs::read(&partials.state).unwrap()).unwrap();
    assert!(
        state.batches > 1 && state.batches < MANY as u64,
        "{state:?}"
    );

    // Space was freed: the same fetch goes on from there.
    consumer.restart(Hooks::default());
    let outcome = consumer.plane.fetch(options(&out, &product)).await.unwrap();
    assert_eq!(outcome.resumed_from_batch, state.batches);
    assert!(!partials.partial.exists() && !partials.state.exists());
    let (_, batches) = read_arrow(&out);
    let ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            ids.values().to_vec()
        })
        .collect();
    assert_eq!(ids, (0..(MANY * ROWS_PER_BATCH) as i64).collect::<Vec<_>>());
}

/// Polls `check` until it holds; panics with `what` after `limit`.
async fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Transfers the provider `side` serves to `peer` right now.
fn active_transfers(side: &Side, peer: &mesh_protocol::PublicKey) -> u32 {
    side.plane.shared.transfer_slots().active_of(peer)
}

#[tokio::test]
async fn a_provider_that_stops_sending_ends_the_fetch_as_interrupted_within_the_stall_bound() {
    // The provider parks after three frames and stays up: its QUIC stack answers keep-alives,
    // so the connection's idle timeout never fires and only the stall bound ends the fetch.
    let mut provider = Side::start_with(
        provider_id(),
        Hooks {
            pause_after_frames: Some(3),
            ..Hooks::default()
        },
        4,
    );
    let stall = Duration::from_secs(1);
    let consumer = Side::start_with(
        consumer_id(),
        Hooks {
            stall: Some(stall),
            ..Hooks::default()
        },
        4,
    );
    let product = publish(&provider, "orders", 1, &[]);
    replicate_catalog(&provider, &consumer, &product);
    let mut t = terms(&product, &consumer.identity);
    t.filter = Some("amount >= 100.0".into());
    agree(&provider, &consumer, t);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("stalled.arrow");
    let partials = PartialPaths::new(out.clone());

    let started = std::time::Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(15),
        consumer.plane.fetch(options(&out, &product)),
    )
    .await
    .expect("the fetch ends once the provider stopped sending")
    .unwrap_err();
    assert!(started.elapsed() >= stall);
    match &err {
        FetchError::Interrupted { batches, .. } => assert_eq!(*batches, 3, "{err}"),
        other => panic!("expected an interruption, got {other}"),
    }
    assert_eq!(err.code(), "interrupted");
    let text = err.to_string();
    assert!(
        text.contains("the provider stopped sending: nothing arrived for 1 s"),
        "{text}"
    );
    assert!(
        text.contains("run the same fetch again to resume"),
        "{text}"
    );
    assert!(!out.exists());
    assert!(partials.partial.exists() && partials.state.exists());

    // Run again against the provider, back on its feet: the fetch resumes.
    provider.restart(Hooks::default());
    let o = options_via(&out, &product, &provider);
    let outcome = consumer.plane.fetch(o).await.unwrap();
    assert_eq!(outcome.resumed_from_batch, 3);
    assert!(!partials.partial.exists() && !partials.state.exists());
    let (_, batches) = read_arrow(&out);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, BATCHES * ROWS_PER_BATCH - 80);
}

#[tokio::test]
async fn a_consumer_that_stops_reading_is_cut_off_and_gives_its_transfer_back() {
    let stall = Duration::from_secs(1);
    let provider = Side::start_with(
        provider_id(),
        Hooks {
            stall: Some(stall),
            ..Hooks::default()
        },
        4,
    );
    let consumer = Side::start(consumer_id());
    // A product of about 4 MiB, served as stored, against a consumer's stream window of 1 MiB.
    let product = publish(&provider, "orders", 1, &[]);
    enlarge(&provider, "orders", 1, 200);
    let mut t = terms(&product, &consumer.identity);
    t.columns = mesh_protocol::Columns::AllCurrentAndFuture;
    t.filter = None;
    let agreement = agree(&provider, &consumer, t);
    let slow = tls::Transport {
        link: tls::LongFatLink {
            bits_per_s: 8_000_000,
            rtt: Duration::from_millis(10),
        },
        ..tls::Transport::streams(4)
    };
    assert_eq!(
        tls::Windows::fetching(slow.link).stream_receive,
        1024 * 1024
    );

    // A raw client that sends a valid request and then never reads.
    let client = tls::client_config(&consumer.identity, &provider.key(), slow).unwrap();
    let connection = consumer
        .plane
        .endpoint
        .connect_with(client, provider.addr(), tls::SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let request = FetchRequest {
        agreement: agreement.clone(),
        product: product.clone(),
        version: None,
        resume_from_batch: 0,
        compression: Compression::None,
        narrowing: None,
        stripe: mesh_protocol::Stripe::WHOLE,
    };
    send.write_all(&encode_frame(&Frame::Request(Box::new(request))).unwrap())
        .await
        .unwrap();
    send.finish().unwrap();
    let peer = consumer.key();
    wait_until(
        "the provider takes the transfer",
        Duration::from_secs(10),
        || active_transfers(&provider, &peer) == 1,
    )
    .await;
    // The window fills, the provider's writes take nothing more, and after the stall bound
    // it resets the stream and gives the transfer back.
    wait_until(
        "the provider gives the stalled transfer back",
        Duration::from_secs(15),
        || active_transfers(&provider, &peer) == 0,
    )
    .await;
    match recv.read_to_end(64 << 20).await {
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
            assert_eq!(code, quinn::VarInt::from_u32(RESET_STALLED));
        }
        other => panic!("expected the stream reset as stalled, got {other:?}"),
    }
    connection.close(0u32.into(), b"");
}

/// The provider's node record, issued now, as the consumer would receive it.
fn announce_node_record(provider: &Side, consumer: &Side) {
    let record = mesh_protocol::catalog::NodeRecord {
        key: provider.key(),
        domain: "sales".into(),
        peer_id: tls::peer_id_of(&provider.key()).unwrap().to_string(),
        addrs: vec![],
        data_addr: Some(provider.addr().to_string()),
        issued_at_ms: now_ms(),
    };
    let envelope = Signed::sign(&provider.identity, &record);
    consumer.store.put_node_record(&record, &envelope).unwrap();
}

#[tokio::test]
async fn a_provider_restarted_on_another_port_is_found_through_its_node_record() {
    let mut provider = Side::start(provider_id());
    let consumer = Side::start(consumer_id());
    let (product, _) = agree_whole(&provider, &consumer, &[]);
    let out_dir = tempfile::tempdir().unwrap();
    let before = provider.addr();
    provider.restart(Hooks::default());
    assert_ne!(provider.addr(), before);
    // The descriptor still names the old port; a newer node record names the new one.
    tokio::time::sleep(Duration::from_millis(5)).await;
    announce_node_record(&provider, &consumer);
    let out = out_dir.path().join("after-restart.arrow");
    let outcome = consumer.plane.fetch(options(&out, &product)).await.unwrap();
    assert_eq!(outcome.rows, (BATCHES * ROWS_PER_BATCH) as u64);

    // A descriptor published after the record wins over it.
    let stale = provider.addr();
    provider.restart(Hooks::default());
    let republished = publish(&provider, "orders", 2, &[]);
    replicate_catalog(&provider, &consumer, &republished);
    assert_ne!(provider.addr(), stale);
    let out = out_dir.path().join("republished.arrow");
    let outcome = consumer.plane.fetch(options(&out, &product)).await.unwrap();
    assert_eq!(outcome.version, 2);
}

#[tokio::test]
async fn extra_transfers_per_peer_are_refused_as_busy() {
    let provider = Side::start_with(
        provider_id(),
        Hooks {
            pause_after_frames: Some(1),
            ..Hooks::default()
        },
        1,
    );
    let consumer = Side::start(consumer_id());
    let product = publish(&provider, "sales", 1, &["email"]);
    replicate_catalog(&provider, &consumer, &product);
    agree(&provider, &consumer, terms(&product, &consumer.identity));
    let out_dir = tempfile::tempdir().unwrap();
    let first = {
        let plane = consumer.plane.clone();
        let o = options(&out_dir.path().join("a.arrow"), &product);
        tokio::spawn(async move { plane.fetch(o).await })
    };
    provider.plane.shared.hooks.paused.notified().await;
    let out = out_dir.path().join("b.arrow");
    let err = consumer
        .plane
        .fetch(options(&out, &product))
        .await
        .unwrap_err();
    match &err {
        FetchError::Refused(r) => assert_eq!(r.code, FetchRefusal::Busy, "{err}"),
        other => panic!("expected busy, got {other}"),
    }
    no_output(&out);
    first.abort();
}

/// Sends one raw request as `from` and returns the frames the provider answers with.
async fn raw_fetch(
    from: &Side,
    addr: SocketAddr,
    provider: &Side,
    agreement: &Agreement,
    version: Option<u64>,
) -> Vec<Frame> {
    let client =
        tls::client_config(&from.identity, &provider.key(), tls::Transport::streams(4)).unwrap();
    let connection = from
        .plane
        .endpoint
        .connect_with(client, addr, tls::SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let request = FetchRequest {
        agreement: agreement.clone(),
        product: agreement.terms_trusted().unwrap().product,
        version,
        resume_from_batch: 0,
        compression: Compression::None,
        narrowing: None,
        stripe: mesh_protocol::Stripe::WHOLE,
    };
    send.write_all(&encode_frame(&Frame::Request(Box::new(request))).unwrap())
        .await
        .unwrap();
    send.finish().unwrap();
    let bytes = recv.read_to_end(64 << 20).await.unwrap();
    let mut decoder = FrameDecoder::new();
    decoder.push(&bytes);
    let mut frames = Vec::new();
    while let Some(f) = decoder.next_frame().unwrap() {
        frames.push(f);
    }
    connection.close(0u32.into(), b"");
    frames
}

fn assert_refusal(frames: &[Frame], code: FetchRefusal, text: &str) {
    match frames {
        [Frame::Error(r)] => {
            assert_eq!(r.code, code, "{r}");
            assert!(r.message.contains(text), "{r}");
        }
        other => panic!("expected one error frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_provider_under_load_makes_the_consumer_validate_its_address_and_still_serves_it() {
    // Every attempt counts as "under load": the consumer gets a Retry first.
    let provider = Side::start_with(
        provider_id(),
        Hooks {
            admission: Some(mesh_protocol::admission::AdmissionLimits {
                retry_threshold: 0,
                ..Default::default()
            }),
            ..Hooks::default()
        },
        4,
    );
    let consumer = Side::start(consumer_id());
    let product = publish(&provider, "sales", 1, &["email"]);
    replicate_catalog(&provider, &consumer, &product);
    agree(&provider, &consumer, terms(&product, &consumer.identity));
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("validated.arrow");
    let outcome = consumer.plane.fetch(options(&out, &product)).await.unwrap();
    assert_eq!(outcome.rows, (BATCHES * ROWS_PER_BATCH / 3) as u64);
    let stats = provider.plane.shared.admission().stats();
    assert!(stats.retried >= 1, "{stats:?}");
    assert_eq!(stats.accepted, 1, "{stats:?}");
    assert_eq!(stats.established, 1, "{stats:?}");
    let mut metrics = String::new();
    provider.plane.encode_metrics(&mut metrics);
    assert!(
        metrics.contains(&format!(
            "meshnode_dataplane_handshakes_retried_total {}",
            stats.retried
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("meshnode_dataplane_connections_established_total 1"),
        "{metrics}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn links_planted_beside_the_output_are_replaced_not_followed() {
    let (_provider, consumer, product) = agreed_sales();
    let shared_dir = tempfile::tempdir().unwrap();
    let victims = tempfile::tempdir().unwrap();
    let out = shared_dir.path().join("x.arrow");
    let paths = PartialPaths::new(out.clone());
    let mut planted = Vec::new();
    for (i, link) in [
        paths.partial.clone(),
        paths.state.clone(),
        paths.state.with_extension("state.tmp"),
    ]
    .into_iter()
    .enumerate()
    {
        let victim = victims.path().join(format!("victim-{i}"));
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        planted.push(victim);
    }
    // A dangling link at the lock: following it would create its target with the daemon's
    // rights (and then report the output as locked).
    let lock = out.with_file_name("x.arrow.partial.lock");
    let absent = victims.path().join("created-through-the-lock");
    std::os::unix::fs::symlink(&absent, &lock).unwrap();
    let outcome = consumer.plane.fetch(options(&out, &product)).await.unwrap();
    assert_eq!(outcome.rows, (BATCHES * ROWS_PER_BATCH / 3) as u64);
    for victim in planted {
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }
    assert!(
        std::fs::symlink_metadata(&absent).is_err(),
        "the lock's link was followed"
    );
    assert!(
        std::fs::symlink_metadata(&lock).is_err(),
        "the lock is left"
    );
    no_output_partials(&out);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_fifo_planted_as_the_state_file_does_not_hold_the_fetch() {
    let (_provider, consumer, product) = agreed_sales();
    let shared_dir = tempfile::tempdir().unwrap();
    let out = shared_dir.path().join("x.arrow");
    let state = PartialPaths::new(out.clone()).state;
    crate::localfile::tests::make_fifo(&state);
    let fetch = consumer.plane.fetch(options(&out, &product));
    let Ok(outcome) = tokio::time::timeout(Duration::from_secs(30), fetch).await else {
        // Let a reader blocked on the FIFO go, so that the runtime can shut down.
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(&state);
        panic!("the fetch waited on the FIFO planted as its state file");
    };
    assert_eq!(outcome.unwrap().rows, (BATCHES * ROWS_PER_BATCH / 3) as u64);
    no_output_partials(&out);
}

/// The Flight endpoint's stream (`crate::flight`, only with the `query` feature).
#[cfg(feature = "query")]
mod flight_stream;
mod ongoing;
mod soak;
mod striped;

/// A provider may send data frames of up to 64 MiB. A fetch whose writer is held back (here
/// by an observer that takes nothing) holds no more than its budget in frame buffers, plus
/// the frame its reader fills, however many large frames the provider sends; once the
/// writer moves again the fetch completes.
#[tokio::test]
async fn a_held_back_fetch_holds_its_frame_budget_and_one_frame_however_large_the_frames() {
    use arrow::array::BinaryArray;
    use arrow::ipc::writer::{
        DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions, write_message,
    };

    const FRAME: usize = 32 << 20;
    const FRAMES: u64 = 12;
    let consumer = Side::start(consumer_id());
    let provider = provider_id();
    let product = ProductId {
        owner: provider.public_key(),
        name: "blobs".into(),
    };
    let mut terms = terms(&product, &consumer.identity);
    terms.columns = mesh_protocol::Columns::Listed(vec!["blob".into()]);
    terms.filter = None;
    let request = Signed::sign(&consumer.identity, &ContractRequest { terms });
    let agreement = Agreement::countersign(&provider, request).unwrap();
    consumer
        .store
        .put_agreement(&agreement.id(), &record(Role::Consumer, &agreement))
        .unwrap();

    // A schema message, then one 32 MiB record batch of one binary value, sent again and again.
    let schema = Schema::new(vec![Field::new("blob", DataType::Binary, false)]);
    let options_ipc = IpcWriteOptions::default();
    let generator = IpcDataGenerator::default();
    let mut tracker = DictionaryTracker::new(false);
    let mut schema_frame = Vec::new();
    let message =
        generator.schema_to_bytes_with_dictionary_tracker(&schema, &mut tracker, &options_ipc);
    write_message(&mut schema_frame, message, &options_ipc).unwrap();
    let batch_frame = {
        let blob = vec![7u8; FRAME];
        let column = BinaryArray::from_vec(vec![&blob[..]]);
        let batch = RecordBatch::try_new(Arc::new(schema.clone()), vec![Arc::new(column)]).unwrap();
        let (dictionaries, message) = generator
            .encode(
                &batch,
                &mut tracker,
                &options_ipc,
                &mut IpcWriteContext::default(),
            )
            .unwrap();
        assert!(dictionaries.is_empty());
        let mut frame = Vec::new();
        write_message(&mut frame, message, &options_ipc).unwrap();
        bytes::Bytes::from(frame)
    };
    let frames: Vec<bytes::Bytes> = std::iter::once(bytes::Bytes::from(schema_frame))
        .chain(std::iter::repeat_n(batch_frame.clone(), FRAMES as usize))
        .collect();
    let mut tally = mesh_protocol::TransferTally::new();
    for (i, frame) in frames.iter().enumerate() {
        tally.add_batch(frame, u64::from(i > 0));
    }

    // The provider: header, frames as fast as the consumer takes them, signed trailer.
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server_config = tls::server_config(&provider, tls::Transport::streams(4)).unwrap();
    let server = tls::endpoint(any, Some(server_config)).unwrap();
    let addr = server.local_addr().unwrap();
    let header = mesh_protocol::TransferHeader {
        agreement_id: agreement.id(),
        version: 1,
        schema: columns_from_arrow(&schema),
        total_batches_hint: Some(frames.len() as u64),
        resume_from_batch: 0,
        compression: Compression::None,
        stripe: mesh_protocol::Stripe::WHOLE,
    };
    let trailer = Signed::sign(
        &provider,
        &tally.trailer(agreement.id(), product.clone(), 1, 0),
    );
    let serving = tokio::spawn(async move {
        let connection = server.accept().await?.await.ok()?;
        let (mut send, mut recv) = connection.accept_bi().await.ok()?;
        let mut decoder = FrameDecoder::new();
        decoder.push(&recv.read_to_end(2 << 20).await.ok()?);
        let Ok(Some(Frame::Request(_))) = decoder.next_frame() else {
            return None;
        };
        send.write_all(&encode_frame(&Frame::Header(header)).ok()?)
            .await
            .ok()?;
        for frame in frames {
            let head = mesh_protocol::encode_data_header(frame.len()).ok()?;
            send.write_all(&head).await.ok()?;
            send.write_chunk(frame).await.ok()?;
        }
        send.write_all(&encode_frame(&Frame::Trailer(trailer)).ok()?)
            .await
            .ok()?;
        send.finish().ok()?;
        connection.closed().await;
        Some(())
    });

    let out_dir = tempfile::tempdir().unwrap();
    let mut fetch_options = options(&out_dir.path().join("blobs.arrow"), &product);
    fetch_options.provider_addr = Some(addr);
    let (observer, mut observed) = tokio::sync::mpsc::channel(1);
    let gauge = Arc::new(framepool::gauge::Gauge::default());
    let fetch = framepool::gauge::GAUGE.scope(
        gauge.clone(),
        consumer::fetch_observed(
            &consumer.plane.endpoint,
            &consumer.plane.shared,
            fetch_options,
            Some(observer),
        ),
    );
    tokio::pin!(fetch);
    // Nobody reads the observer: the writer stops at the first record batch, and the reader
    // goes on until it waits for the writer.
    tokio::select! {
        () = gauge.waiting.notified() => {}
        result = &mut fetch => panic!("the fetch ended while held back: {result:?}"),
    }
    let buffer =
        (batch_frame.len() + appendfile::MAX_LEAD).div_ceil(framepool::GRAIN) * framepool::GRAIN;
    let peak = gauge.peak();
    assert!(
        peak <= framepool::FETCH_BUDGET + buffer,
        "the held-back fetch held {} MiB of frames, over its budget of {} MiB and one {} MiB frame",
        peak >> 20,
        framepool::FETCH_BUDGET >> 20,
        buffer >> 20
    );
    assert!(
        peak >= 2 * buffer,
        "the reader read on while the writer was held back: {} MiB",
        peak >> 20
    );

    // The observer reads again: the fetch moves on within its budget and completes.
    let reading = tokio::spawn(async move {
        let mut count = 0u64;
        while observed.recv().await.is_some() {
            count += 1;
        }
        count
    });
    let outcome = fetch.await.unwrap();
    assert_eq!(outcome.batches, FRAMES + 1);
    assert_eq!(outcome.rows, FRAMES);
    assert_eq!(reading.await.unwrap(), FRAMES + 1);
    assert!(gauge.peak() <= framepool::FETCH_BUDGET + buffer);
    assert_eq!(gauge.held(), 0, "every frame buffer was freed");
    serving.abort();
}

#[tokio::test]
async fn fetch_requests_past_the_consumers_rate_are_refused_busy_before_the_agreement_is_read() {
    let provider = Side::start_with(
        provider_id(),
        Hooks {
            fetch_rate: Some(super::FetchRate {
                burst: 2,
                refill_ms: 60_000,
            }),
            ..Hooks::default()
        },
        4,
    );
    let consumer = Side::start(consumer_id());
    let (product, _) = agree_whole(&provider, &consumer, &[]);
    let out_dir = tempfile::tempdir().unwrap();
    let fetch = |n: u32| {
        let out = out_dir.path().join(format!("orders-{n}.arrow"));
        consumer.plane.fetch(options(&out, &product))
    };
    fetch(1).await.unwrap();
    fetch(2).await.unwrap();
    let err = fetch(3).await.unwrap_err();
    let FetchError::Refused(refusal) = &err else {
        panic!("expected a busy refusal, got {err}");
    };
    assert_eq!(refusal.code, FetchRefusal::Busy, "{err}");
    assert!(refusal.message.contains("one every 60000 ms"), "{err}");
    assert!(refusal.message.contains("retry in"), "{err}");
    no_output(&out_dir.path().join("orders-3.arrow"));
    // Only what was served is audited (the provider audits after the consumer closed), and
    // no transfer slot is left taken.
    let served = || {
        audit_kinds(&provider.store)
            .iter()
            .filter(|k| **k == AuditKind::TransferServed)
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while (served() < 2 || active_transfers(&provider, &consumer.key()) > 0)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served(), 2);
    assert_eq!(active_transfers(&provider, &consumer.key()), 0);
}
