//! A seeded mutation soak of [`ingest_file`](super::ingest_file).
//!
//! Valid inputs of every format are built in memory (Arrow IPC files and streams with many
//! column types, uncompressed, LZ4 and ZSTD; Parquet with nested types, dictionaries, several
//! row groups and pages, with and without a page index; CSV with quotes, nulls and long
//! fields), then mutated by a deterministic mutator: bit flips, "interesting" integers written
//! over bytes (biased towards the flatbuffer headers, compressed-length prefixes, Thrift footer
//! and page headers), truncation, duplicated, spliced, inserted and deleted ranges. Every
//! mutant goes through the real ingest entry point, which must return an error with a message
//! and leave no output, or an output that arrow's `FileReader` reads back completely. A panic
//! escaping ingest is a failure (`catch_unwind` here only names the case).
//!
//! The fixed run ([`SHORT_CASES`] mutants per format) is part of `cargo test`. A long run:
//!
//! ```text
//! MESHNODE_SOAK_CASES=20000 MESHNODE_SOAK_SEED=7 \
//!   prlimit --as=$((3*1024*1024*1024)) -- target/debug/deps/mesh_node-HASH \
//!   --test-threads 1 --nocapture ingest::soak
//! ```
//!
//! writes each mutant to `target/soak/current.<ext>` before ingesting it, so that if the
//! process aborts (a failed allocation) the culprit is on disk. `MESHNODE_SOAK_FORMATS`
//! (`arrow,arrows,parquet,csv`) limits the formats, `MESHNODE_SOAK_CASE=N` runs one case and
//! keeps its input there, `MESHNODE_SOAK_VERBOSE=1` prints every refusal, and
//! `MESHNODE_SOAK_FILE=PATH` ingests one kept input (`replay_a_kept_input`).

use std::fs;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::builder::Int64Builder as MapValues;
use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Decimal128Array, DictionaryArray, Float64Array,
    Int32Array, Int64Array, LargeStringArray, ListArray, MapBuilder, StringArray, StringBuilder,
    StringViewArray, StructArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Fields, Int32Type, Schema, TimeUnit};
use arrow::ipc::CompressionType;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use super::{IngestError, ingest_file};

/// Mutants per format in the fixed run.
const SHORT_CASES: u64 = 250;

/// Seed of the fixed run.
const SHORT_SEED: u64 = 0x5eed_0001;

/// A case slower than this is reported in the long run.
const SLOW_CASE: Duration = Duration::from_secs(5);

/// The kinds of input, by the extension they are written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ArrowFile,
    ArrowStream,
    Parquet,
    Csv,
}

const KINDS: [Kind; 4] = [Kind::ArrowFile, Kind::ArrowStream, Kind::Parquet, Kind::Csv];

impl Kind {
    fn ext(self) -> &'static str {
        match self {
            Kind::ArrowFile => "arrow",
            Kind::ArrowStream => "arrows",
            Kind::Parquet => "parquet",
            Kind::Csv => "csv",
        }
    }
}

/// A valid input and where its metadata lies (where mutations are most often aimed).
#[derive(Debug, Clone)]
struct Seed {
    /// What it is, in reports.
    name: String,
    /// The input's bytes.
    bytes: Vec<u8>,
    /// Byte ranges of headers, footers and length prefixes.
    regions: Vec<Range<usize>>,
    /// Scalars of the metadata (flatbuffer fields, Thrift integers), each rewritten whole
    /// by the mutator so that the metadata still decodes but declares something else.
    fields: Vec<(Range<usize>, Enc)>,
    /// Where each group of `fields` starts (a message, a footer, a page header, a page's
    /// levels): the mutator picks a group first, so that a file's many footer statistics do
    /// not drown its few page headers.
    groups: Vec<usize>,
}

impl Seed {
    fn new(name: &str) -> Seed {
        Seed {
            name: name.into(),
            bytes: Vec::new(),
            regions: Vec::new(),
            fields: Vec::new(),
            groups: Vec::new(),
        }
    }

    /// Starts a group of fields.
    fn group(&mut self) {
        if self.groups.last() != Some(&self.fields.len()) {
            self.groups.push(self.fields.len());
        }
    }

    /// A field of a group picked first.
    fn pick_field(&self, rng: &mut ChaCha8Rng) -> Option<(Range<usize>, Enc)> {
        if self.fields.is_empty() {
            return None;
        }
        let starts: Vec<usize> = if self.groups.first() == Some(&0) {
            self.groups.clone()
        } else {
            std::iter::once(0)
                .chain(self.groups.iter().copied())
                .collect()
        };
        let g = rng.random_range(0..starts.len());
        let end = starts.get(g + 1).copied().unwrap_or(self.fields.len());
        if starts[g] >= end {
            return None;
        }
        Some(self.fields[rng.random_range(starts[g]..end)].clone())
    }
}

/// How a recorded scalar is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    /// Little-endian, this many bytes (flatbuffers).
    Le(usize),
    /// A varint (Thrift compact: integers, lengths, counts).
    Varint,
}

// ---- Seeds ----

/// Batches of many column types (rows per batch as given), sharing one dictionary.
fn arrow_batches(rows: &[usize], view: bool) -> Vec<RecordBatch> {
    let tz: Arc<str> = Arc::from("+02:00");
    let point = Fields::from(vec![
        Field::new("x", DataType::Int32, true),
        Field::new("label", DataType::Utf8, true),
    ]);
    let mut fields = vec![
        Field::new("i32", DataType::Int32, true),
        Field::new("i64", DataType::Int64, false),
        Field::new("f64", DataType::Float64, true),
        Field::new("flag", DataType::Boolean, true),
        Field::new("text", DataType::Utf8, true),
        Field::new("large", DataType::LargeUtf8, true),
        Field::new("bin", DataType::Binary, true),
        Field::new("list", DataType::new_list(DataType::Int32, true), true),
        Field::new("point", DataType::Struct(point.clone()), true),
        Field::new(
            "dict",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        ),
        Field::new("dec", DataType::Decimal128(20, 3), true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some(tz.clone())),
            true,
        ),
    ];
    let map_type = {
        let mut b = MapBuilder::new(None, StringBuilder::new(), MapValues::new());
        b.append(true).unwrap();
        b.finish().data_type().clone()
    };
    fields.push(Field::new("map", map_type, true));
    if view {
        fields.push(Field::new("view", DataType::Utf8View, true));
    }
    let schema = Arc::new(Schema::new(fields));
    let dictionary_values: ArrayRef = Arc::new(StringArray::from(vec!["red", "green", "blue"]));
    let mut start = 0usize;
    rows.iter()
        .map(|&n| {
            let idx: Vec<usize> = (start..start + n).collect();
            start += n;
            let opt = |i: usize, every: usize| i % every != every - 1;
            let long = |i: usize| "x".repeat(i % 7 * 13);
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(Int32Array::from_iter(
                    idx.iter().map(|&i| opt(i, 5).then_some(i as i32 - 20)),
                )),
                Arc::new(Int64Array::from_iter_values(
                    idx.iter().map(|&i| (i as i64) << 33),
                )),
                Arc::new(Float64Array::from_iter(
                    idx.iter().map(|&i| opt(i, 4).then_some(i as f64 / 3.0)),
                )),
                Arc::new(BooleanArray::from_iter(
                    idx.iter().map(|&i| opt(i, 3).then_some(i % 2 == 0)),
                )),
                Arc::new(StringArray::from_iter(
                    idx.iter()
                        .map(|&i| opt(i, 6).then(|| format!("t{i}é{}", long(i)))),
                )),
                Arc::new(LargeStringArray::from_iter(
                    idx.iter()
                        .map(|&i| opt(i, 4).then(|| format!("L{}", long(i + 3)))),
                )),
                Arc::new(BinaryArray::from_iter(
                    idx.iter().map(|&i| opt(i, 3).then(|| vec![i as u8; i % 9])),
                )),
                Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(
                    idx.iter().map(|&i| {
                        opt(i, 5).then(|| (0..i % 4).map(|j| opt(j, 3).then_some(j as i32)))
                    }),
                )),
                Arc::new(StructArray::new(
                    point.clone(),
                    vec![
                        Arc::new(Int32Array::from_iter_values(idx.iter().map(|&i| i as i32))),
                        Arc::new(StringArray::from_iter(
                            idx.iter().map(|&i| opt(i, 2).then(|| format!("p{i}"))),
                        )),
                    ],
                    Some(idx.iter().map(|&i| opt(i, 7)).collect()),
                )),
                Arc::new(
                    DictionaryArray::<Int32Type>::try_new(
                        Int32Array::from_iter(
                            idx.iter().map(|&i| opt(i, 4).then_some((i % 3) as i32)),
                        ),
                        dictionary_values.clone(),
                    )
                    .unwrap(),
                ),
                Arc::new(
                    Decimal128Array::from_iter(
                        idx.iter()
                            .map(|&i| opt(i, 3).then_some(i as i128 * 1_000_003 - 7)),
                    )
                    .with_precision_and_scale(20, 3)
                    .unwrap(),
                ),
                Arc::new(
                    TimestampMicrosecondArray::from_iter(
                        idx.iter()
                            .map(|&i| opt(i, 6).then_some(1_700_000_000_000_000 + i as i64)),
                    )
                    .with_timezone(tz.clone()),
                ),
                {
                    let mut b = MapBuilder::new(None, StringBuilder::new(), MapValues::new());
                    for &i in &idx {
                        for j in 0..i % 3 {
                            b.keys().append_value(format!("k{j}"));
                            b.values().append_value((i * j) as i64);
                        }
                        b.append(opt(i, 5)).unwrap();
                    }
                    Arc::new(b.finish())
                },
            ];
            if view {
                columns
                    .push(Arc::new(StringViewArray::from_iter(idx.iter().map(|&i| {
                        opt(i, 4).then(|| format!("view {i} {}", long(i + 1)))
                    }))));
            }
            RecordBatch::try_new(schema.clone(), columns).unwrap()
        })
        .collect()
}

/// Batches of types the wide seeds lack: Null, fixed-size binary and lists, dates, times,
/// durations, 256-bit decimals, lists of structs of lists, small integers; `parquet` leaves
/// out what Parquet cannot hold (Null, intervals).
fn exotic_batches(rows: &[usize], parquet: bool) -> Vec<RecordBatch> {
    use arrow::array::{
        Date32Array, Decimal256Array, DurationMillisecondArray, FixedSizeBinaryArray,
        FixedSizeListArray, IntervalMonthDayNanoArray, NullArray, Time64MicrosecondArray,
        UInt8Array,
    };
    use arrow::datatypes::{IntervalMonthDayNano, i256};
    let inner = Fields::from(vec![
        Field::new("a", DataType::new_list(DataType::Int64, true), true),
        Field::new("b", DataType::Utf8, true),
    ]);
    let item = Arc::new(Field::new("item", DataType::Struct(inner.clone()), true));
    let mut start = 0usize;
    rows.iter()
        .map(|&n| {
            let idx: Vec<usize> = (start..start + n).collect();
            start += n;
            let opt = |i: usize, every: usize| i % every != every - 1;
            let mut columns: Vec<(&str, ArrayRef)> = vec![
                (
                    "fsb",
                    Arc::new(
                        FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                            idx.iter().map(|&i| opt(i, 3).then_some([i as u8; 16])),
                            16,
                        )
                        .unwrap(),
                    ),
                ),
                (
                    "fsl",
                    Arc::new(FixedSizeListArray::from_iter_primitive::<Int32Type, _, _>(
                        idx.iter().map(|&i| {
                            opt(i, 4)
                                .then(|| (0..3).map(move |j| opt(i + j, 5).then_some(j as i32)))
                        }),
                        3,
                    )),
                ),
                (
                    "date",
                    Arc::new(Date32Array::from_iter(
                        idx.iter().map(|&i| opt(i, 6).then_some(19_000 + i as i32)),
                    )),
                ),
                (
                    "time",
                    Arc::new(Time64MicrosecondArray::from_iter_values(
                        idx.iter().map(|&i| i as i64 * 1_000_003),
                    )),
                ),
                (
                    "dur",
                    Arc::new(DurationMillisecondArray::from_iter(
                        idx.iter().map(|&i| opt(i, 2).then_some(i as i64 - 9)),
                    )),
                ),
                (
                    "d256",
                    Arc::new(
                        Decimal256Array::from_iter(
                            idx.iter()
                                .map(|&i| opt(i, 3).then(|| i256::from_i128(i as i128 * 77))),
                        )
                        .with_precision_and_scale(40, 5)
                        .unwrap(),
                    ),
                ),
                (
                    "u8",
                    Arc::new(UInt8Array::from_iter_values(idx.iter().map(|&i| i as u8))),
                ),
                ("nested", {
                    let values: Vec<ArrayRef> = vec![
                        Arc::new(ListArray::from_iter_primitive::<
                            arrow::datatypes::Int64Type,
                            _,
                            _,
                        >(
                            (0..n * 2)
                                .map(|j| opt(j, 3).then(|| (0..j % 5).map(|k| Some(k as i64)))),
                        )),
                        Arc::new(StringArray::from_iter(
                            (0..n * 2).map(|j| opt(j, 4).then(|| format!("s{j}"))),
                        )),
                    ];
                    let structs = StructArray::new(inner.clone(), values, None);
                    let offsets = arrow::buffer::OffsetBuffer::from_lengths(vec![2; n]);
                    Arc::new(ListArray::new(
                        item.clone(),
                        offsets,
                        Arc::new(structs),
                        None,
                    ))
                }),
            ];
            if !parquet {
                columns.push(("null", Arc::new(NullArray::new(n))));
                columns.push((
                    "interval",
                    Arc::new(IntervalMonthDayNanoArray::from_iter_values(
                        idx.iter()
                            .map(|&i| IntervalMonthDayNano::new(i as i32, 1, i as i64 * 7)),
                    )),
                ));
            }
            RecordBatch::try_from_iter(columns).unwrap()
        })
        .collect()
}

/// Batches of a dictionary column whose dictionary grows from batch to batch: written as
/// delta dictionaries in a stream.
fn growing_dictionary_batches() -> Vec<RecordBatch> {
    let values: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "c", "d", "e", "f"]));
    [2usize, 4, 6]
        .iter()
        .map(|&used| {
            let keys = Int32Array::from_iter_values((0..10).map(|i| (i % used) as i32));
            let dictionary =
                DictionaryArray::<Int32Type>::try_new(keys, values.slice(0, used)).unwrap();
            RecordBatch::try_from_iter([("d", Arc::new(dictionary) as ArrayRef)]).unwrap()
        })
        .collect()
}

/// One Int64 column of zeros: small seeds, so mutations hit headers more often.
fn small_batches() -> Vec<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![Field::new("z", DataType::Int64, true)]));
    [3usize, 1000]
        .iter()
        .map(|&n| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from(vec![0i64; n]))],
            )
            .unwrap()
        })
        .collect()
}

fn ipc_options(compression: Option<CompressionType>) -> IpcWriteOptions {
    IpcWriteOptions::default()
        .try_with_compression(compression)
        .unwrap()
}

fn ipc_file_bytes(batches: &[RecordBatch], options: IpcWriteOptions) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer =
        FileWriter::try_new_with_options(&mut out, &batches[0].schema(), options).unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.finish().unwrap();
    drop(writer);
    out
}

fn ipc_stream_bytes(batches: &[RecordBatch], options: IpcWriteOptions) -> Vec<u8> {
    crate::arrow_guard::tests::ipc_stream(batches, options)
}

/// Where slice `part` of `buf` starts, as a byte offset of the file where `buf` starts at
/// `base`.
fn offset_in(part: &[u8], buf: &[u8], base: usize) -> usize {
    base + (part.as_ptr() as usize - buf.as_ptr() as usize)
}

/// The scalar in slot `slot` (`width` bytes) of a flatbuffer `table` whose buffer starts at
/// byte `base` of the file, when present.
fn fb_scalar(
    table: &flatbuffers::Table<'_>,
    slot: u16,
    width: usize,
    base: usize,
    fields: &mut Vec<(Range<usize>, Enc)>,
) {
    let offset = table.vtable().get(slot) as usize;
    if offset != 0 {
        let at = base + table.loc() + offset;
        fields.push((at..at + width, Enc::Le(width)));
    }
}

/// Each `width`-byte scalar of a vector of structs (`bytes`, at byte `at` of the file).
fn fb_struct_scalars(
    bytes: &[u8],
    at: usize,
    widths: &[(usize, usize)],
    size: usize,
    fields: &mut Vec<(Range<usize>, Enc)>,
) {
    for start in (0..bytes.len()).step_by(size) {
        for &(offset, width) in widths {
            let from = at + start + offset;
            fields.push((from..from + width, Enc::Le(width)));
        }
    }
}

/// The scalars of a flatbuffer schema's fields (type, nullability, type parameters,
/// dictionary encoding), children included.
fn fb_schema_scalars(
    schema: arrow::ipc::Schema<'_>,
    base: usize,
    fields: &mut Vec<(Range<usize>, Enc)>,
) {
    use arrow::ipc::{Field as FbField, Type};
    let mut todo: Vec<FbField<'_>> = schema.fields().into_iter().flatten().collect();
    while let Some(field) = todo.pop() {
        fb_scalar(&field._tab, FbField::VT_TYPE_TYPE, 1, base, fields);
        fb_scalar(&field._tab, FbField::VT_NULLABLE, 1, base, fields);
        if let Some(table) = field.type_() {
            let slots: &[(u16, usize)] = match field.type_type() {
                Type::Int => &[(4, 4), (6, 1)],
                Type::Decimal => &[(4, 4), (6, 4), (8, 4)],
                Type::Time => &[(4, 2), (6, 4)],
                Type::FixedSizeBinary | Type::FixedSizeList => &[(4, 4)],
                Type::FloatingPoint
                | Type::Date
                | Type::Timestamp
                | Type::Interval
                | Type::Duration
                | Type::Union => &[(4, 2)],
                Type::Map => &[(4, 1)],
                _ => &[],
            };
            for &(slot, width) in slots {
                fb_scalar(&table, slot, width, base, fields);
            }
        }
        if let Some(dictionary) = field.dictionary() {
            fb_scalar(&dictionary._tab, 4, 8, base, fields);
            fb_scalar(&dictionary._tab, 8, 1, base, fields);
            if let Some(index) = dictionary.indexType() {
                fb_scalar(&index._tab, 4, 4, base, fields);
                fb_scalar(&index._tab, 6, 1, base, fields);
            }
        }
        todo.extend(field.children().into_iter().flatten());
    }
}

/// The scalars of one IPC message whose flatbuffer starts at byte `base`: its header type,
/// version and body length; a batch's length, field nodes, buffers, codec and variadic
/// counts; a dictionary batch's id; a schema's fields.
fn fb_message_scalars(
    message: &arrow::ipc::Message<'_>,
    buf: &[u8],
    base: usize,
    fields: &mut Vec<(Range<usize>, Enc)>,
) {
    use arrow::ipc::Message as Fb;
    fb_scalar(&message._tab, Fb::VT_VERSION, 2, base, fields);
    fb_scalar(&message._tab, Fb::VT_HEADER_TYPE, 1, base, fields);
    fb_scalar(&message._tab, Fb::VT_BODYLENGTH, 8, base, fields);
    if let Some(schema) = message.header_as_schema() {
        fb_schema_scalars(schema, base, fields);
    }
    let mut batch = message.header_as_record_batch();
    if let Some(dictionary) = message.header_as_dictionary_batch() {
        fb_scalar(&dictionary._tab, 4, 8, base, fields);
        fb_scalar(&dictionary._tab, 8, 1, base, fields);
        batch = dictionary.data();
    }
    if let Some(batch) = batch {
        fb_scalar(&batch._tab, 4, 8, base, fields);
        if let Some(nodes) = batch.nodes() {
            let at = offset_in(nodes.bytes(), buf, base);
            fb_struct_scalars(nodes.bytes(), at, &[(0, 8), (8, 8)], 16, fields);
        }
        if let Some(buffers) = batch.buffers() {
            let at = offset_in(buffers.bytes(), buf, base);
            fb_struct_scalars(buffers.bytes(), at, &[(0, 8), (8, 8)], 16, fields);
        }
        if let Some(counts) = batch.variadicBufferCounts() {
            let at = offset_in(counts.bytes(), buf, base);
            fb_struct_scalars(counts.bytes(), at, &[(0, 8)], 8, fields);
        }
        if let Some(compression) = batch.compression() {
            fb_scalar(&compression._tab, 4, 1, base, fields);
        }
    }
}

/// The metadata of each IPC message from `start` (prefix and flatbuffer header) and the
/// 8-byte length prefix of each buffer of a compressed batch, as regions and as scalars.
fn ipc_messages(bytes: &[u8], start: usize, seed: &mut Seed) {
    let mut at = start;
    while at + 8 <= bytes.len() {
        let word = |i: usize| i32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
        let (prefix, len) = if bytes[at..at + 4] == [0xff; 4] {
            (8, word(at + 4))
        } else {
            (4, word(at))
        };
        seed.group();
        seed.fields.push((at + prefix - 4..at + prefix, Enc::Le(4)));
        if len <= 0 {
            seed.regions.push(at..at + prefix);
            break;
        }
        let meta_end = at + prefix + len as usize;
        if meta_end > bytes.len() {
            break;
        }
        seed.regions.push(at..meta_end);
        let meta = &bytes[at + prefix..meta_end];
        let Ok(message) = arrow::ipc::root_as_message(meta) else {
            break;
        };
        fb_message_scalars(&message, meta, at + prefix, &mut seed.fields);
        let body = meta_end;
        let batch = message
            .header_as_record_batch()
            .or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()));
        if let Some(batch) = batch
            && batch.compression().is_some()
        {
            for buffer in batch.buffers().into_iter().flatten() {
                let offset = body + buffer.offset() as usize;
                if buffer.length() >= 8 {
                    seed.regions.push(offset..offset + 8);
                    seed.fields.push((offset..offset + 8, Enc::Le(8)));
                }
            }
        }
        at = body + message.bodyLength() as usize;
    }
}

fn arrow_file_seed(name: &str, bytes: Vec<u8>) -> Seed {
    let n = bytes.len();
    let footer_len = i32::from_le_bytes(bytes[n - 10..n - 6].try_into().unwrap()) as usize;
    let footer_at = n - 10 - footer_len;
    let mut seed = Seed::new(name);
    seed.regions = vec![0..8, footer_at..n];
    seed.fields.push((n - 10..n - 6, Enc::Le(4)));
    ipc_messages(&bytes, 8, &mut seed);
    seed.group();
    let buf = &bytes[footer_at..n - 10];
    let footer = arrow::ipc::root_as_footer(buf).unwrap();
    if let Some(schema) = footer.schema() {
        fb_schema_scalars(schema, footer_at, &mut seed.fields);
    }
    for blocks in [footer.dictionaries(), footer.recordBatches()]
        .into_iter()
        .flatten()
    {
        let at = offset_in(blocks.bytes(), buf, footer_at);
        fb_struct_scalars(
            blocks.bytes(),
            at,
            &[(0, 8), (8, 4), (16, 8)],
            24,
            &mut seed.fields,
        );
    }
    seed.bytes = bytes;
    seed
}

fn arrow_stream_seed(name: &str, bytes: Vec<u8>) -> Seed {
    let mut seed = Seed::new(name);
    ipc_messages(&bytes, 0, &mut seed);
    seed.bytes = bytes;
    seed
}

fn arrow_seeds(kind: Kind) -> Vec<Seed> {
    let wide = arrow_batches(&[5, 17, 40], true);
    let small = small_batches();
    let compressions = [
        ("plain", None),
        ("lz4", Some(CompressionType::LZ4_FRAME)),
        ("zstd", Some(CompressionType::ZSTD)),
    ];
    let exotic = exotic_batches(&[7, 50], false);
    let mut seeds = Vec::new();
    for (batches, what) in [(&wide, "wide"), (&small, "small"), (&exotic, "exotic")] {
        for (codec, compression) in compressions {
            let name = format!("{what} {codec}");
            let options = ipc_options(compression);
            seeds.push(match kind {
                Kind::ArrowFile => arrow_file_seed(&name, ipc_file_bytes(batches, options)),
                _ => arrow_stream_seed(&name, ipc_stream_bytes(batches, options)),
            });
        }
    }
    if kind == Kind::ArrowStream {
        let options = ipc_options(None)
            .with_dictionary_handling(arrow::ipc::writer::DictionaryHandling::Delta);
        let batches = growing_dictionary_batches();
        seeds.push(arrow_stream_seed(
            "delta dictionaries",
            ipc_stream_bytes(&batches, options),
        ));
    }
    // A schema and no batch.
    let empty = wide[0].slice(0, 0);
    seeds.push(match kind {
        Kind::ArrowFile => arrow_file_seed(
            "no batches",
            ipc_file_bytes(std::slice::from_ref(&empty), ipc_options(None)),
        ),
        _ => arrow_stream_seed(
            "no batches",
            ipc_stream_bytes(std::slice::from_ref(&empty), ipc_options(None)),
        ),
    });
    seeds
}

fn parquet_bytes(batches: &[RecordBatch], properties: WriterProperties) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batches[0].schema(), Some(properties)).unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.close().unwrap();
    out
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Walks one Thrift compact value of type `ty` at `*at`, recording every varint (integers,
/// lengths, counts) in `fields`.
fn thrift_value(
    bytes: &[u8],
    at: &mut usize,
    ty: u8,
    fields: &mut Vec<(Range<usize>, Enc)>,
    depth: usize,
) -> Option<()> {
    if depth > 32 {
        return None;
    }
    let varint_field = |at: &mut usize, fields: &mut Vec<(Range<usize>, Enc)>| {
        let start = *at;
        let value = read_varint(bytes, at)?;
        fields.push((start..*at, Enc::Varint));
        Some(value)
    };
    match ty {
        1 | 2 => {}
        3 => *at += 1,
        4..=6 => {
            varint_field(at, fields)?;
        }
        7 => *at += 8,
        8 => {
            let len = varint_field(at, fields)?;
            *at = at.checked_add(usize::try_from(len).ok()?)?;
        }
        9 | 10 => {
            let header = *bytes.get(*at)?;
            *at += 1;
            let mut size = u64::from(header >> 4);
            if size == 15 {
                size = varint_field(at, fields)?;
            }
            for _ in 0..size.min(bytes.len() as u64) {
                match header & 0x0f {
                    // A bool element is a byte.
                    1 | 2 => *at += 1,
                    elem => thrift_value(bytes, at, elem, fields, depth + 1)?,
                }
            }
        }
        11 => {
            let size = varint_field(at, fields)?;
            if size > 0 {
                let types = *bytes.get(*at)?;
                *at += 1;
                for _ in 0..size.min(bytes.len() as u64) {
                    thrift_value(bytes, at, types >> 4, fields, depth + 1)?;
                    thrift_value(bytes, at, types & 0x0f, fields, depth + 1)?;
                }
            }
        }
        12 => {
            thrift_struct(bytes, at, fields, depth + 1)?;
        }
        _ => return None,
    }
    (*at <= bytes.len()).then_some(())
}

/// Walks a Thrift compact struct at `*at`; its top-level integer fields by id.
fn thrift_struct(
    bytes: &[u8],
    at: &mut usize,
    fields: &mut Vec<(Range<usize>, Enc)>,
    depth: usize,
) -> Option<Vec<(i16, i64)>> {
    let mut last = 0i16;
    let mut ints = Vec::new();
    loop {
        let header = *bytes.get(*at)?;
        *at += 1;
        if header == 0 {
            return Some(ints);
        }
        let ty = header & 0x0f;
        let id = match header >> 4 {
            0 => {
                let v = read_varint(bytes, at)?;
                ((v >> 1) as i64 ^ -((v & 1) as i64)) as i16
            }
            delta => last.checked_add(i16::from(delta))?,
        };
        last = id;
        if matches!(ty, 4..=6) {
            let start = *at;
            let v = read_varint(bytes, at)?;
            fields.push((start..*at, Enc::Varint));
            ints.push((id, (v >> 1) as i64 ^ -((v & 1) as i64)));
        } else {
            thrift_value(bytes, at, ty, fields, depth)?;
        }
    }
}

/// The footer and every page header (walked from the start of each column chunk), as
/// regions and their integers as scalars; the start of every page the offset index lists;
/// the page index itself.
fn parquet_seed(name: &str, bytes: Vec<u8>) -> Seed {
    let n = bytes.len();
    let footer_len = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
    let footer_at = n - 8 - footer_len;
    let mut seed = Seed::new(name);
    seed.regions = vec![0..4, footer_at..n];
    seed.fields.push((n - 8..n - 4, Enc::Le(4)));
    thrift_struct(&bytes, &mut footer_at.clone(), &mut seed.fields, 0).unwrap();
    let metadata = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Optional)
        .parse_and_finish(&bytes::Bytes::from(bytes.clone()))
        .unwrap();
    let head = |at: i64| at as usize..(at as usize + 48).min(n);
    for group in metadata.row_groups() {
        for column in group.columns() {
            let start = column
                .dictionary_page_offset()
                .unwrap_or(column.data_page_offset()) as usize;
            let end = start + column.compressed_size() as usize;
            let mut at = start;
            while at < end {
                let header_at = at;
                seed.group();
                let ints = thrift_struct(&bytes, &mut at, &mut seed.fields, 0).unwrap();
                seed.regions.push(header_at..at);
                let compressed = ints.iter().find(|(id, _)| *id == 3).unwrap().1;
                at += compressed as usize;
            }
            for (at, len) in [
                (column.offset_index_offset(), column.offset_index_length()),
                (column.column_index_offset(), column.column_index_length()),
            ] {
                if let (Some(at), Some(len)) = (at, len) {
                    seed.group();
                    let (at, len) = (at as usize, len as usize);
                    seed.regions.push(at..at + len);
                    thrift_struct(&bytes, &mut at.clone(), &mut seed.fields, 0).unwrap();
                }
            }
        }
    }
    page_data_fields(&bytes, &metadata, &mut seed);
    for group in metadata.offset_index().into_iter().flatten() {
        for column in group {
            for page in column.page_locations() {
                seed.regions.push(head(page.offset));
            }
        }
    }
    seed.bytes = bytes;
    seed
}

/// Delta encodings for the integer and text columns, without dictionaries.
fn delta(
    builder: parquet::file::properties::WriterPropertiesBuilder,
) -> parquet::file::properties::WriterPropertiesBuilder {
    builder
        .set_dictionary_enabled(false)
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_column_encoding(ColumnPath::from("i64"), Encoding::DELTA_BINARY_PACKED)
        .set_column_encoding(ColumnPath::from("i32"), Encoding::DELTA_BINARY_PACKED)
        .set_column_encoding(ColumnPath::from("text"), Encoding::DELTA_LENGTH_BYTE_ARRAY)
        .set_column_encoding(ColumnPath::from("large"), Encoding::DELTA_BYTE_ARRAY)
        .set_column_encoding(ColumnPath::from("bin"), Encoding::DELTA_BYTE_ARRAY)
}

/// The run headers of the levels and the header of delta-encoded values in the data pages
/// of uncompressed column chunks (read through parquet's page reader, whose buffers are
/// slices of the file), as scalars: what turns a few bytes into billions of levels or
/// lengths.
fn page_data_fields(
    bytes: &[u8],
    metadata: &parquet::file::metadata::ParquetMetaData,
    seed: &mut Seed,
) {
    use parquet::column::page::{Page, PageReader};
    use parquet::file::serialized_reader::SerializedPageReader;
    let file = bytes::Bytes::from(bytes.to_vec());
    for group in metadata.row_groups() {
        for column in group.columns() {
            if column.compression() != Compression::UNCOMPRESSED {
                continue;
            }
            let descr = column.column_descr();
            let width = |max: i16| (u16::BITS - (max as u16).leading_zeros()) as usize;
            let mut reader =
                SerializedPageReader::new(Arc::new(file.clone()), column, 0, None).unwrap();
            while let Ok(Some(page)) = reader.get_next_page() {
                let (buf, encoding, sections) = match &page {
                    Page::DataPage { buf, encoding, .. } => {
                        let mut at = 0;
                        let mut sections = Vec::new();
                        for max in [descr.max_rep_level(), descr.max_def_level()] {
                            if max > 0 && at + 4 <= buf.len() {
                                let len = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap());
                                sections.push((at, 4, at + 4..at + 4 + len as usize, width(max)));
                                at += 4 + len as usize;
                            }
                        }
                        (buf, *encoding, (sections, at))
                    }
                    Page::DataPageV2 {
                        buf,
                        encoding,
                        rep_levels_byte_len,
                        def_levels_byte_len,
                        ..
                    } => {
                        let rep = *rep_levels_byte_len as usize;
                        let def = rep + *def_levels_byte_len as usize;
                        let sections = vec![
                            (0, 0, 0..rep, width(descr.max_rep_level())),
                            (rep, 0, rep..def, width(descr.max_def_level())),
                        ];
                        (buf, *encoding, (sections, def))
                    }
                    Page::DictionaryPage { .. } => continue,
                };
                let base = offset_in(buf, &file, 0);
                seed.group();
                let (sections, values) = sections;
                for (length_at, length, runs, bit_width) in sections {
                    if length == 4 {
                        seed.fields
                            .push((base + length_at..base + length_at + 4, Enc::Le(4)));
                    }
                    let mut at = runs.start;
                    while at < runs.end.min(buf.len()) {
                        let start = at;
                        let Some(header) = read_varint(buf, &mut at) else {
                            break;
                        };
                        seed.fields.push((base + start..base + at, Enc::Varint));
                        at += if header & 1 == 0 {
                            bit_width.div_ceil(8)
                        } else {
                            (header >> 1) as usize * bit_width
                        };
                    }
                }
                if matches!(
                    encoding,
                    Encoding::DELTA_BINARY_PACKED
                        | Encoding::DELTA_LENGTH_BYTE_ARRAY
                        | Encoding::DELTA_BYTE_ARRAY
                ) {
                    let mut at = values;
                    for _ in 0..4 {
                        let start = at;
                        if read_varint(buf, &mut at).is_none() {
                            break;
                        }
                        seed.fields.push((base + start..base + at, Enc::Varint));
                    }
                    seed.regions
                        .push(base + values..base + (values + 32).min(buf.len()));
                }
            }
        }
    }
}

fn parquet_seeds() -> Vec<Seed> {
    let batches = arrow_batches(&[30, 60, 90], false);
    let base = || {
        WriterProperties::builder()
            .set_max_row_group_row_count(Some(64))
            .set_write_batch_size(16)
            .set_data_page_row_count_limit(16)
    };
    let variants = [
        (
            "snappy, dictionaries, page index",
            base()
                .set_compression(Compression::SNAPPY)
                .set_statistics_enabled(EnabledStatistics::Page)
                .build(),
        ),
        (
            "zstd, v2 pages, no page index",
            base()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .set_writer_version(WriterVersion::PARQUET_2_0)
                .set_statistics_enabled(EnabledStatistics::Chunk)
                .set_offset_index_disabled(true)
                .build(),
        ),
        (
            "plain, no dictionaries, no statistics",
            base()
                .set_dictionary_enabled(false)
                .set_statistics_enabled(EnabledStatistics::None)
                .build(),
        ),
        ("delta encodings, uncompressed", delta(base()).build()),
        (
            "delta encodings, gzip",
            delta(base())
                .set_compression(Compression::GZIP(Default::default()))
                .build(),
        ),
        (
            "lz4 and lz4_raw, byte stream split",
            base()
                .set_compression(Compression::LZ4)
                .set_column_compression(ColumnPath::from("text"), Compression::LZ4_RAW)
                .set_column_encoding(ColumnPath::from("f64"), Encoding::BYTE_STREAM_SPLIT)
                .set_column_dictionary_enabled(ColumnPath::from("f64"), false)
                .build(),
        ),
    ];
    let mut seeds: Vec<Seed> = variants
        .into_iter()
        .map(|(name, properties)| parquet_seed(name, parquet_bytes(&batches, properties)))
        .collect();
    seeds.push(parquet_seed(
        "small, one column",
        parquet_bytes(&small_batches(), WriterProperties::builder().build()),
    ));
    seeds.push(parquet_seed(
        "exotic types, v1 pages",
        parquet_bytes(
            &exotic_batches(&[40, 80], true),
            base().set_compression(Compression::SNAPPY).build(),
        ),
    ));
    seeds
}

fn csv_seeds() -> Vec<Seed> {
    // Mutations aim at the start of the first lines.
    let plain = |name: &str, text: String| Seed {
        regions: text
            .match_indices('\n')
            .take(40)
            .map(|(at, _)| at + 1..at + 9)
            .collect(),
        bytes: text.into_bytes(),
        ..Seed::new(name)
    };
    let mut typed = String::from("id,score,day,when,flag,note\n");
    for i in 0..300 {
        let note = match i % 5 {
            0 => format!("\"quoted, {i} \"\"twice\"\"\""),
            1 => String::new(),
            2 => "NA".into(),
            3 => format!("\"multi\nline {i}\""),
            _ => format!("plain{i}"),
        };
        let score = if i % 7 == 0 {
            String::new()
        } else {
            format!("{}", i as f64 / 4.0)
        };
        typed.push_str(&format!(
            "{i},{score},2024-{:02}-{:02},2024-01-01T{:02}:{:02}:00Z,{},{note}\n",
            i % 12 + 1,
            i % 28 + 1,
            i % 24,
            i % 60,
            i % 2 == 0,
        ));
    }
    let long = format!(
        "a,b\n1,\"{}\"\n2,{}\n3,\"\"\n",
        "q\"\"".repeat(2000),
        "y".repeat(9000)
    );
    vec![
        plain(
            "tricky",
            concat!(
                "\u{feff}id,name,score,qty,flag,note\r\n",
                "1,\"Smith, John\",1.5,10,true,\"He said \"\"hi\"\"\"\r\n",
                "2,José,2,,false,\"line one\nline two\"\r\n",
                "3,中文,,7,,😀 emoji\r\n",
                ",\"\",3.25,-4,TRUE,\r\n",
            )
            .into(),
        ),
        plain("typed", typed),
        plain("long fields", long),
    ]
}

fn seeds(kind: Kind) -> Vec<Seed> {
    match kind {
        Kind::ArrowFile | Kind::ArrowStream => arrow_seeds(kind),
        Kind::Parquet => parquet_seeds(),
        Kind::Csv => csv_seeds(),
    }
}

// ---- Mutator ----

/// Integers readers take as lengths, counts and offsets, and their edges.
const INTERESTING: [i64; 24] = [
    0,
    1,
    -1,
    -2,
    -8,
    7,
    8,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    1 << 20,
    0x7fff_ffff,
    -0x8000_0000,
    0xffff_ffff,
    1 << 31,
    1 << 32,
    (1 << 32) + 1,
    1 << 40,
    i64::MAX,
    i64::MIN,
    i64::MAX - 7,
    1 << 62,
];

/// A byte offset of `bytes`: most often inside one of `regions`.
fn pick(rng: &mut ChaCha8Rng, len: usize, regions: &[Range<usize>]) -> usize {
    if len == 0 {
        return 0;
    }
    let live: Vec<&Range<usize>> = regions.iter().filter(|r| r.start < len).collect();
    if !live.is_empty() && rng.random_bool(0.7) {
        let r = live[rng.random_range(0..live.len())];
        let end = r.end.min(len).max(r.start + 1);
        return rng.random_range(r.start..end);
    }
    rng.random_range(0..len)
}

fn interesting(rng: &mut ChaCha8Rng, len: usize) -> i64 {
    match rng.random_range(0..6) {
        0 => len as i64 + rng.random_range(-2..=2),
        1 => rng.random_range(-16..=16),
        _ => INTERESTING[rng.random_range(0..INTERESTING.len())],
    }
}

/// Overwrites `value` at `at` (growing nothing: cut at the end).
fn overwrite(bytes: &mut [u8], at: usize, value: &[u8]) {
    for (i, b) in value.iter().enumerate() {
        if let Some(slot) = bytes.get_mut(at + i) {
            *slot = *b;
        }
    }
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// `value` as a varint of at least `min_len` bytes (parquet reads padded varints, so the
/// bytes after it stay where they were).
fn padded_varint(value: u64, min_len: usize) -> Vec<u8> {
    let mut out = varint(value);
    if out.len() < min_len {
        *out.last_mut().unwrap() |= 0x80;
        while out.len() < min_len - 1 {
            out.push(0x80);
        }
        out.push(0);
    }
    out
}

/// Rewrites one recorded scalar with an interesting value. A longer varint in a Parquet
/// footer gets the footer's length fixed, so that the footer still parses.
fn rewrite_field(
    rng: &mut ChaCha8Rng,
    kind: Kind,
    bytes: &mut Vec<u8>,
    range: Range<usize>,
    enc: Enc,
) {
    let len = bytes.len();
    if range.end > len {
        return;
    }
    let value = interesting(rng, len);
    match enc {
        Enc::Le(width) => overwrite(bytes, range.start, &value.to_le_bytes()[..width]),
        Enc::Varint => {
            let raw = if rng.random_bool(0.5) {
                value as u64
            } else {
                ((value << 1) ^ (value >> 63)) as u64
            };
            let encoded = padded_varint(raw, range.len());
            let grown = encoded.len() - range.len();
            let in_footer = kind == Kind::Parquet && len >= 8 && bytes[len - 4..] == *b"PAR1" && {
                let footer = u32::from_le_bytes(bytes[len - 8..len - 4].try_into().unwrap());
                (footer as usize + 8) <= len && range.start >= len - 8 - footer as usize
            };
            bytes.splice(range, encoded);
            if in_footer && grown > 0 {
                let n = bytes.len();
                let footer = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap());
                let fixed = footer.wrapping_add(grown as u32);
                bytes[n - 8..n - 4].copy_from_slice(&fixed.to_le_bytes());
            }
        }
    }
}

/// CSV fragments that change how a record splits or what a field holds.
const CSV_TOKENS: [&[u8]; 14] = [
    b"\"",
    b",",
    b"\n",
    b"\r\n",
    b"\"\"",
    b"\0",
    b"\xef\xbb\xbf",
    b"\xc3",
    b"NaN",
    b"-",
    b"99999999999999999999999",
    b"2024-13-45",
    b"2024-01-01T00:00:00+99:99",
    b",,,,,,,,",
];

/// One mutant of a seed of `kind`, from `rng`: one to four mutations.
fn mutant(rng: &mut ChaCha8Rng, kind: Kind, seeds: &[Seed]) -> (usize, Vec<u8>) {
    let which = rng.random_range(0..seeds.len());
    let seed = &seeds[which];
    let mut bytes = seed.bytes.clone();
    let mutations = rng.random_range(1..=4);
    for _ in 0..mutations {
        let len = bytes.len();
        if !seed.fields.is_empty() && rng.random_bool(0.4) {
            if let Some((range, enc)) = seed.pick_field(rng) {
                rewrite_field(rng, kind, &mut bytes, range, enc);
            }
            continue;
        }
        let at = pick(rng, len, &seed.regions);
        let ops = if kind == Kind::Csv { 12 } else { 11 };
        match rng.random_range(0..ops) {
            0 => {
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= 1 << rng.random_range(0..8);
                }
            }
            1 | 2 => {
                let value = interesting(rng, len).to_le_bytes();
                let width = [1, 2, 4, 8][rng.random_range(0..4)];
                overwrite(&mut bytes, at, &value[..width]);
            }
            3 => {
                // Thrift: a varint or a zigzag varint.
                let value = interesting(rng, len);
                let encoded = if rng.random_bool(0.5) {
                    varint(value as u64)
                } else {
                    varint(((value << 1) ^ (value >> 63)) as u64)
                };
                overwrite(&mut bytes, at, &encoded);
            }
            4 => {
                if let Some(b) = bytes.get_mut(at) {
                    *b = rng.random();
                }
            }
            5 => bytes.truncate(rng.random_range(0..=len)),
            6 => {
                // Duplicate a range somewhere else.
                let start = pick(rng, len, &seed.regions).min(len);
                let end = (start + rng.random_range(1..=64)).min(len);
                let copy = bytes[start..end].to_vec();
                let to = rng.random_range(0..=len);
                bytes.splice(to..to, copy);
            }
            7 => {
                // Splice a range of another seed over or into this one.
                let donor = &seeds[rng.random_range(0..seeds.len())];
                let from = pick(rng, donor.bytes.len(), &donor.regions);
                let end = (from + rng.random_range(1..=256)).min(donor.bytes.len());
                let piece = donor.bytes[from..end].to_vec();
                if rng.random_bool(0.5) {
                    overwrite(&mut bytes, at, &piece);
                } else {
                    let at = at.min(len);
                    bytes.splice(at..at, piece);
                }
            }
            8 => {
                let at = at.min(len);
                let count = rng.random_range(1..=16);
                let insert: Vec<u8> = (0..count).map(|_| rng.random()).collect();
                bytes.splice(at..at, insert);
            }
            9 => {
                let at = at.min(len);
                let end = (at + rng.random_range(1..=32)).min(len);
                bytes.drain(at..end);
            }
            10 => {
                // A 4-byte little-endian length set to what is left of the file, or a
                // little more: the shape of a plausible lie.
                let left = len.saturating_sub(at) as i64 + rng.random_range(-8..=8);
                overwrite(&mut bytes, at, &(left as i32).to_le_bytes());
            }
            _ => {
                let token = CSV_TOKENS[rng.random_range(0..CSV_TOKENS.len())];
                let at = at.min(len);
                bytes.splice(at..at, token.iter().copied());
            }
        }
    }
    (which, bytes)
}

/// The RNG of case `case` of `kind` in the run seeded `seed`: any case can be replayed alone.
fn case_rng(seed: u64, kind: Kind, case: u64) -> ChaCha8Rng {
    let kind = KINDS.iter().position(|k| *k == kind).unwrap() as u64;
    let mut mixed = seed ^ 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(case + 1);
    mixed = (mixed ^ (mixed >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (kind << 56);
    ChaCha8Rng::seed_from_u64(mixed)
}

// ---- Running cases ----

/// What one case did, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Refused with this message, no output left.
    Refused(String),
    /// Ingested; the output reads back.
    Ingested,
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no detail".into())
}

/// Reads an output file back completely; its row count.
fn read_back(path: &Path) -> Result<u64, String> {
    let file = fs::File::open(path).map_err(|e| e.to_string())?;
    let reader = FileReader::try_new_buffered(file, None).map_err(|e| e.to_string())?;
    let mut rows = 0;
    for batch in reader {
        rows += batch.map_err(|e| e.to_string())?.num_rows() as u64;
    }
    Ok(rows)
}

/// Ingests `input` into `output` and judges the result.
fn run_case(input: &Path, output: &Path) -> Result<Verdict, String> {
    let _ = fs::remove_file(output);
    let result = catch_unwind(AssertUnwindSafe(|| ingest_file(input, output)))
        .map_err(|panic| format!("ingest panicked: {}", panic_text(&*panic)))?;
    match result {
        Err(error) => {
            let message = error.to_string();
            if output.exists() {
                return Err(format!("an error left the output behind: {message}"));
            }
            if message.trim().is_empty() {
                return Err(format!("an error without a message: {error:?}"));
            }
            if let IngestError::Io { action, .. } = &error
                && *action != "read"
            {
                return Err(format!("an I/O error on the output: {message}"));
            }
            Ok(Verdict::Refused(message))
        }
        Ok(outcome) => {
            let rows = catch_unwind(AssertUnwindSafe(|| read_back(output)))
                .map_err(|panic| format!("reading the output panicked: {}", panic_text(&*panic)))?
                .map_err(|e| format!("the output does not read back: {e}"))?;
            fs::remove_file(output).map_err(|e| e.to_string())?;
            if rows != outcome.rows {
                return Err(format!(
                    "the output holds {rows} rows, the outcome says {}",
                    outcome.rows
                ));
            }
            Ok(Verdict::Ingested)
        }
    }
}

/// Figures of a run of one format.
#[derive(Debug, Default)]
struct Tally {
    /// Cases run.
    cases: u64,
    /// Refused with an error.
    refused: u64,
    /// Ingested and read back.
    ingested: u64,
    /// The slowest case and its time.
    slowest: (u64, Duration),
    /// Failures: case, seed input, problem.
    failures: Vec<(u64, String, String)>,
}

/// Where a long run keeps the mutant being ingested: `target/soak`.
fn soak_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("soak")
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not `{value}`")),
    )
}

/// Runs cases `cases` of `kind` with run seed `seed`; `keep` writes each mutant to
/// `target/soak/current.<ext>` first.
fn soak(kind: Kind, seed: u64, cases: Range<u64>, keep: bool) -> Tally {
    let seeds = seeds(kind);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join(format!("case.{}", kind.ext()));
    let output = dir.path().join("out.arrow.partial");
    let current = soak_dir().join(format!("current.{}", kind.ext()));
    if keep {
        fs::create_dir_all(soak_dir()).unwrap();
    }
    let verbose = std::env::var_os("MESHNODE_SOAK_VERBOSE").is_some();
    let mut tally = Tally::default();
    for case in cases {
        let mut rng = case_rng(seed, kind, case);
        let (which, bytes) = mutant(&mut rng, kind, &seeds);
        if keep {
            fs::write(&current, &bytes).unwrap();
        }
        fs::write(&input, &bytes).unwrap();
        let started = Instant::now();
        let verdict = run_case(&input, &output);
        let took = started.elapsed();
        tally.cases += 1;
        if took > tally.slowest.1 {
            tally.slowest = (case, took);
        }
        if keep && took > SLOW_CASE {
            eprintln!("soak {}: case {case} took {took:?}", kind.ext());
        }
        match verdict {
            Ok(Verdict::Refused(message)) => {
                tally.refused += 1;
                if verbose {
                    eprintln!("{} {case}: {message}", kind.ext());
                }
            }
            Ok(Verdict::Ingested) => tally.ingested += 1,
            Err(problem) => {
                if keep {
                    eprintln!("soak {} seed {seed} case {case}: {problem}", kind.ext());
                    let kept = soak_dir().join(format!("fail-{seed}-{case}.{}", kind.ext()));
                    fs::write(kept, &bytes).unwrap();
                }
                tally
                    .failures
                    .push((case, seeds[which].name.clone(), problem));
            }
        }
    }
    tally
}

#[test]
fn every_seed_is_ingested() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.arrow.partial");
    for kind in KINDS {
        for seed in seeds(kind) {
            let input = dir.path().join(format!("seed.{}", kind.ext()));
            fs::write(&input, &seed.bytes).unwrap();
            let verdict = run_case(&input, &output);
            if seed.name == "delta dictionaries" {
                // An IPC file holds one dictionary per column: refused by design, read
                // first.
                assert!(
                    matches!(&verdict, Ok(Verdict::Refused(m)) if m.contains("Dictionary replacement")),
                    "{verdict:?}"
                );
                continue;
            }
            assert_eq!(
                verdict,
                Ok(Verdict::Ingested),
                "{} seed `{}`",
                kind.ext(),
                seed.name
            );
        }
    }
}

/// Ingests the file `MESHNODE_SOAK_FILE` (a kept mutant) when set: what it does is printed.
#[test]
fn replay_a_kept_input() {
    let Some(path) = std::env::var_os("MESHNODE_SOAK_FILE") else {
        return;
    };
    let path = PathBuf::from(path);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join(path.file_name().unwrap());
    fs::copy(&path, &input).unwrap();
    let started = Instant::now();
    let verdict = run_case(&input, &dir.path().join("out.arrow.partial"));
    eprintln!("{}: {verdict:?} in {:?}", path.display(), started.elapsed());
    assert!(verdict.is_ok(), "{verdict:?}");
}

/// The fixed run; a long one with `MESHNODE_SOAK_CASES` (see the module's documentation).
#[test]
fn mutants_are_refused_or_read_back() {
    let long = env_u64("MESHNODE_SOAK_CASES");
    let seed = env_u64("MESHNODE_SOAK_SEED").unwrap_or(SHORT_SEED);
    let one = env_u64("MESHNODE_SOAK_CASE");
    let formats = std::env::var("MESHNODE_SOAK_FORMATS").ok();
    let keep = long.is_some() || one.is_some();
    if keep {
        // Contained panics are expected; only the summary matters.
        std::panic::set_hook(Box::new(|_| {}));
    }
    let mut report = Vec::new();
    let mut failed = 0;
    for kind in KINDS {
        if formats
            .as_deref()
            .is_some_and(|f| !f.split(',').any(|f| f == kind.ext()))
        {
            continue;
        }
        let cases = match (one, long) {
            (Some(case), _) => case..case + 1,
            (None, Some(n)) => 0..n,
            (None, None) => 0..SHORT_CASES,
        };
        let started = Instant::now();
        let tally = soak(kind, seed, cases, keep);
        report.push(format!(
            "{}: seed {seed}, {} cases in {:?}: {} refused, {} ingested, slowest case {} \
             ({:?}), {} failures",
            kind.ext(),
            tally.cases,
            started.elapsed(),
            tally.refused,
            tally.ingested,
            tally.slowest.0,
            tally.slowest.1,
            tally.failures.len()
        ));
        for (case, name, problem) in tally.failures.iter().take(20) {
            report.push(format!("  case {case} (from `{name}`): {problem}"));
        }
        failed += tally.failures.len();
    }
    if keep {
        let _ = std::panic::take_hook();
        eprintln!("{}", report.join("\n"));
    }
    assert!(
        failed == 0,
        "{failed} mutants failed (replay one with MESHNODE_SOAK_SEED=S MESHNODE_SOAK_CASE=N \
         MESHNODE_SOAK_FORMATS=ext):\n{}",
        report.join("\n")
    );
}
