//! The benchmark's product and the provider and consumer stores around it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::ipc::writer::FileWriter;
use bytes::Bytes;
use mesh_node::agreements::{AgreementRecord, Role};
use mesh_node::store::Store;
use mesh_protocol::contract::{Columns, ContractRequest, ContractState, ContractTerms, DAY_MS};
use mesh_protocol::descriptor::{
    ContentDigest, Policy, ProductDescriptor, Sla, Status, columns_from_arrow,
};
use mesh_protocol::{Agreement, Identity, ProductId, Signed};

use crate::{CONSUMER_SECRET, PRODUCT, PROVIDER_SECRET, RAW_CHUNK};

fn bench_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new(
            "ordered_at",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("amount", DataType::Float64, false),
        Field::new("quantity", DataType::Int32, false),
        Field::new("express", DataType::Boolean, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("note", DataType::Utf8, true),
    ]))
}

/// xorshift64*: fast, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Writes about `mib` MiB of Arrow data to `path`; returns (rows, bytes on disk).
pub(crate) fn generate(path: &Path, mib: u64, batch_rows: usize) -> anyhow::Result<(u64, u64)> {
    const REGIONS: [&str; 6] = ["EU", "US", "APAC", "LATAM", "MEA", "NA"];
    let schema = bench_schema();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let pool: String = (0..8192)
        .map(|_| (b'a' + (rng.next() % 26) as u8) as char)
        .collect();
    let mut writer = FileWriter::try_new(
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?),
        &schema,
    )?;
    let target = mib * 1024 * 1024;
    let mut written = 0u64;
    let mut rows = 0u64;
    while written < target {
        let n = batch_rows;
        let ids: Vec<i64> = (0..n as i64).map(|i| rows as i64 + i).collect();
        let notes: Vec<Option<&str>> = (0..n)
            .map(|_| {
                let r = rng.next();
                if r.is_multiple_of(17) {
                    return None;
                }
                let len = 8 + (r >> 8) as usize % 56;
                let start = (r >> 20) as usize % (pool.len() - len);
                Some(&pool[start..start + len])
            })
            .collect();
        let amounts: Vec<f64> = (0..n)
            .map(|_| (rng.next() % 1_000_000) as f64 / 100.0)
            .collect();
        let quantities: Vec<i32> = (0..n).map(|_| (rng.next() % 50) as i32 + 1).collect();
        let express: Vec<bool> = (0..n).map(|_| rng.next().is_multiple_of(3)).collect();
        let regions: Vec<&str> = (0..n).map(|_| REGIONS[(rng.next() % 6) as usize]).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    ids.iter().map(|i| 1_700_000_000_000_000 + i * 1_000),
                )),
                Arc::new(Float64Array::from(amounts)),
                Arc::new(Int32Array::from(quantities)),
                Arc::new(BooleanArray::from(express)),
                Arc::new(StringArray::from(regions)),
                Arc::new(StringArray::from(notes)),
            ],
        )?;
        written += batch
            .columns()
            .iter()
            .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) as u64)
            .sum::<u64>();
        rows += n as u64;
        writer.write(&batch)?;
    }
    writer.finish()?;
    drop(writer);
    Ok((rows, std::fs::metadata(path)?.len()))
}

/// The product file's IPC messages, framed exactly as the data plane frames them (for the
/// raw quinn baseline).
pub(crate) fn framed_stream(path: &Path) -> anyhow::Result<Vec<Bytes>> {
    let data = std::fs::read(path)?;
    // Skip the magic and its padding, stop at the end-of-stream marker.
    let mut pos = 8;
    while data[pos..pos + 4] != [0xff; 4] {
        pos += 8;
    }
    let mut out = Vec::new();
    let mut chunk = Vec::with_capacity(RAW_CHUNK + (1 << 20));
    loop {
        let meta = i32::from_le_bytes(data[pos + 4..pos + 8].try_into()?) as usize;
        if meta == 0 {
            break;
        }
        let message = arrow::ipc::root_as_message(&data[pos + 8..pos + 8 + meta])
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let len = 8 + meta + message.bodyLength() as usize;
        chunk.extend_from_slice(&mesh_protocol::encode_data_header(len)?);
        chunk.extend_from_slice(&data[pos..pos + len]);
        pos += len;
        if chunk.len() >= RAW_CHUNK {
            out.push(Bytes::from(std::mem::take(&mut chunk)));
        }
    }
    if !chunk.is_empty() {
        out.push(Bytes::from(chunk));
    }
    Ok(out)
}

// ------------------------------------------------------------------ setup

pub(crate) fn descriptor(
    owner: &Identity,
    path: &Path,
    rows: u64,
    addr: SocketAddr,
) -> ProductDescriptor {
    ProductDescriptor {
        owner: owner.public_key(),
        domain: "orders".into(),
        name: PRODUCT.into(),
        version: 1,
        title: "benchmark orders".into(),
        description: String::new(),
        tags: vec![],
        schema: columns_from_arrow(&bench_schema()),
        rows,
        bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
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
        data_addr: Some(addr.to_string()),
        status: Status::Active,
        stewardship: Default::default(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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

/// An agreement for the whole product, stored on both sides.
pub(crate) fn agree(product: &ProductId, provider: &Store, consumer: &Store) -> anyhow::Result<()> {
    let p = Identity::from_secret_bytes(PROVIDER_SECRET);
    let c = Identity::from_secret_bytes(CONSUMER_SECRET);
    let terms = ContractTerms {
        product: product.clone(),
        provider_domain: "orders".into(),
        consumer_domain: "bench".into(),
        provider: p.public_key(),
        consumer: c.public_key(),
        min_version: 1,
        max_version: None,
        purpose: "benchmark".into(),
        columns: Columns::AllCurrentAndFuture,
        filter: None,
        valid_from_ms: now_ms() - DAY_MS,
        valid_until_ms: now_ms() + DAY_MS,
        nonce: rand::random(),
    };
    let agreement = Agreement::countersign(&p, Signed::sign(&c, &ContractRequest { terms }))?;
    provider.put_agreement(&agreement.id(), &record(Role::Provider, &agreement))?;
    consumer.put_agreement(&agreement.id(), &record(Role::Consumer, &agreement))?;
    Ok(())
}
