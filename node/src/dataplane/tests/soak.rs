//! A seeded mutation soak of what a hostile provider can send a consumer.
//!
//! Valid frame sequences are built in memory the way a provider sends them (one IPC message
//! per data frame: the schema, then dictionary and record batches), of every type family the
//! IPC format carries, plain and LZ4 or ZSTD compressed, with delta dictionaries. A small
//! deterministic mutator (bit flips, interesting integers written over the flatbuffer fields
//! that declare lengths, offsets, counts, ids, types and codecs, row counts and dictionary
//! ids changed consistently, frames cut, grown, dropped, duplicated, swapped, spliced or
//! taken from another stream) changes each, and the consumer's own code path runs
//! on the result without a network: `IpcFileBuilder` appends each frame as the writer thread
//! does and seals the file as `transfer::seal` does; the conversions, the query engine's
//! reader and the Flight endpoint's decoder read what was accepted.
//!
//! The invariant: **a file the consumer seals is a file Arrow reads**, completely, with the
//! rows the consumer counted (as an IPC file and as the IPC stream `--format arrows`
//! writes); a refusal is an error, and nothing anywhere panics out of the consumer's code.
//! The signed trailer is not part of this: a hostile provider signs whatever it sends.
//!
//! `cargo test -p mesh-node --lib soak` runs [`SHORT_CASES`] cases. A long run sets
//! `MESHNODE_SOAK_CASES=50000 MESHNODE_SOAK_SEED=7`, best under a memory limit so that an
//! allocation a bound should have stopped aborts the run (the binary is the one
//! `cargo test -p mesh-node --lib --no-run` names):
//! `prlimit --as=$((3*1024*1024*1024)) -- target/debug/deps/mesh_node-HASH --test-threads 1
//! --nocapture soak::a_file`; it prints its progress, each new failure and the most
//! frequent refusals.
//! Before each case of a long run its frames are written to `target/soak-frames/current.bin`
//! (each frame as a little-endian `u32` length and its bytes), so an abort leaves the culprit
//! on disk; `MESHNODE_SOAK_REPLAY=FILE` runs that one sequence and prints what became of it.

use std::io::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryViewArray, BooleanArray, Date32Array, Date64Array,
    Decimal128Array, Decimal256Array, DictionaryArray, DurationMillisecondArray,
    FixedSizeBinaryArray, FixedSizeListArray, Float32Array, Float64Array, Int8Array, Int16Array,
    Int32Array, Int64Array, IntervalDayTimeArray, IntervalMonthDayNanoArray,
    IntervalYearMonthArray, LargeBinaryArray, LargeListArray, LargeStringArray, ListArray,
    ListViewArray, MapBuilder, NullArray, RecordBatch, RunArray, StringArray, StringBuilder,
    StringViewArray, StructArray, Time32SecondArray, Time64MicrosecondArray,
    TimestampMillisecondArray, TimestampNanosecondArray, UInt16Array, UInt64Array, UnionArray,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{
    DataType, Field, Float32Type, Int8Type, Int16Type, Int32Type, IntervalDayTime,
    IntervalMonthDayNano, Schema, UnionFields, i256,
};
use arrow::ipc::writer::{DictionaryHandling, IpcWriteOptions};
use arrow::ipc::{CompressionType, MetadataVersion};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use crate::dataplane::convert::{self, OutputFormat};
use crate::dataplane::ipcfile::tests::frames_of;
use crate::dataplane::ipcfile::{AppendError, HEADER_LEN, IpcFileBuilder};

/// Cases of the run in the normal test suite.
const SHORT_CASES: u64 = 500;
/// Seed of the run in the normal test suite (and of a long run without `MESHNODE_SOAK_SEED`).
const DEFAULT_SEED: u64 = 0x6d65_7368;
/// Distinct failures a long run reports before it stops.
const MAX_FAILURES: usize = 20;

type Frames = Vec<Vec<u8>>;

// ---------------------------------------------------------------------------------------
// Valid streams
// ---------------------------------------------------------------------------------------

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).unwrap()
}

/// Fixed-width types: integers, floats, booleans, dates, times, durations, intervals,
/// timestamps with and without a zone, decimals.
fn primitives(b: i32) -> RecordBatch {
    let n = 24 + b;
    let opt = |i: i32| (i % 5 != 3).then_some(i);
    let f32s = Float32Array::from_iter((0..n).map(|i| opt(i).map(|v| v as f32 * 0.25)));
    let half = arrow::compute::cast(&f32s, &DataType::Float16).unwrap();
    let seconds = arrow::compute::cast(
        &Int64Array::from_iter_values((0..n).map(|i| i64::from(i) * 7_919)),
        &DataType::Timestamp(arrow::datatypes::TimeUnit::Second, Some("+05:30".into())),
    )
    .unwrap();
    batch(vec![
        ("f16", half),
        ("ts_s", seconds),
        (
            "dec32",
            Arc::new(
                arrow::array::Decimal32Array::from_iter((0..n).map(|i| opt(i).map(|v| v * 101)))
                    .with_precision_and_scale(7, 2)
                    .unwrap(),
            ),
        ),
        (
            "dec64",
            Arc::new(
                arrow::array::Decimal64Array::from_iter_values((0..n).map(|i| i64::from(i) << 20))
                    .with_precision_and_scale(15, -3)
                    .unwrap(),
            ),
        ),
        (
            "i8",
            Arc::new(Int8Array::from_iter(
                (0..n).map(|i| opt(i).map(|v| v as i8)),
            )),
        ),
        (
            "i16",
            Arc::new(Int16Array::from_iter_values((0..n).map(|i| i as i16 * -3))),
        ),
        ("i32", Arc::new(Int32Array::from_iter((0..n).map(opt)))),
        (
            "i64",
            Arc::new(Int64Array::from_iter_values(
                (0..n).map(|i| i64::from(i) << 40),
            )),
        ),
        (
            "u16",
            Arc::new(UInt16Array::from_iter_values((0..n).map(|i| i as u16))),
        ),
        (
            "u64",
            Arc::new(UInt64Array::from_iter(
                (0..n).map(|i| opt(i).map(|v| v as u64)),
            )),
        ),
        (
            "f32",
            Arc::new(Float32Array::from_iter_values(
                (0..n).map(|i| i as f32 / 3.0),
            )),
        ),
        (
            "f64",
            Arc::new(Float64Array::from_iter(
                (0..n).map(|i| opt(i).map(f64::from)),
            )),
        ),
        (
            "ok",
            Arc::new(BooleanArray::from_iter(
                (0..n).map(|i| opt(i).map(|v| v % 2 == 0)),
            )),
        ),
        (
            "d32",
            Arc::new(Date32Array::from_iter_values(19_000..19_000 + n)),
        ),
        (
            "d64",
            Arc::new(Date64Array::from_iter_values(
                (0..n).map(|i| i64::from(i) * 86_400_000),
            )),
        ),
        ("t32", Arc::new(Time32SecondArray::from_iter_values(0..n))),
        (
            "t64",
            Arc::new(Time64MicrosecondArray::from_iter(
                (0..n).map(|i| opt(i).map(i64::from)),
            )),
        ),
        (
            "dur",
            Arc::new(DurationMillisecondArray::from_iter_values(
                (0..n).map(i64::from),
            )),
        ),
        (
            "ym",
            Arc::new(IntervalYearMonthArray::from_iter_values(0..n)),
        ),
        (
            "dt",
            Arc::new(IntervalDayTimeArray::from_iter_values(
                (0..n).map(|i| IntervalDayTime::new(i, -i)),
            )),
        ),
        (
            "mdn",
            Arc::new(IntervalMonthDayNanoArray::from_iter_values(
                (0..n).map(|i| IntervalMonthDayNano::new(i, 1, i64::from(i))),
            )),
        ),
        (
            "at",
            Arc::new(
                TimestampMillisecondArray::from_iter((0..n).map(|i| opt(i).map(i64::from)))
                    .with_timezone("Europe/Paris"),
            ),
        ),
        (
            "ns",
            Arc::new(TimestampNanosecondArray::from_iter_values(
                (0..n).map(i64::from),
            )),
        ),
        (
            "dec",
            Arc::new(
                Decimal128Array::from_iter((0..n).map(|i| opt(i).map(|v| i128::from(v) * 10_001)))
                    .with_precision_and_scale(20, 4)
                    .unwrap(),
            ),
        ),
        (
            "dec256",
            Arc::new(
                Decimal256Array::from_iter_values((0..n).map(|i| i256::from_i128(i128::from(i))))
                    .with_precision_and_scale(40, 2)
                    .unwrap(),
            ),
        ),
    ])
}

/// Variable-width types: strings and binaries, large, fixed-size and views.
fn strings(b: i32) -> RecordBatch {
    let n = 20 + b;
    let text = |i: i32| format!("row {i} of batch {b}: {}", "é".repeat(i as usize % 4));
    let opt = |i: i32| (i % 4 != 1).then(|| text(i));
    batch(vec![
        ("s", Arc::new(StringArray::from_iter((0..n).map(opt)))),
        (
            "ls",
            Arc::new(LargeStringArray::from_iter_values((0..n).map(text))),
        ),
        (
            "bin",
            Arc::new(BinaryArray::from_iter(
                (0..n).map(|i| opt(i).map(String::into_bytes)),
            )),
        ),
        (
            "lbin",
            Arc::new(LargeBinaryArray::from_iter_values(
                (0..n).map(|i| text(i).into_bytes()),
            )),
        ),
        (
            "fsb",
            Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                    (0..n).map(|i| (i % 3 != 0).then(|| i.to_le_bytes())),
                    4,
                )
                .unwrap(),
            ),
        ),
        ("sv", Arc::new(StringViewArray::from_iter((0..n).map(opt)))),
        (
            "bv",
            Arc::new(BinaryViewArray::from_iter_values(
                (0..n).map(|i| text(i).into_bytes()),
            )),
        ),
    ])
}

/// Nested types: lists, large lists, fixed-size lists, structs, maps, a list of structs, a
/// null column, unions and a run-end encoded column.
fn nested(b: i32) -> RecordBatch {
    let n = 16 + b;
    let list = ListArray::from_iter_primitive::<Int32Type, _, _>(
        (0..n).map(|i| (i % 4 != 2).then(|| (0..i % 5).map(Some).collect::<Vec<_>>())),
    );
    let words = StringArray::from_iter_values((0..n * 2).map(|i| format!("w{i}")));
    let large = LargeListArray::new(
        Arc::new(Field::new("item", DataType::Utf8, false)),
        OffsetBuffer::<i64>::from_lengths((0..n).map(|_| 2)),
        Arc::new(words),
        None,
    );
    let fixed = FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(
        (0..n).map(|i| Some(vec![Some(i as f32), None, Some(-1.5)])),
        3,
    );
    let fields = vec![
        Arc::new(Field::new("a", DataType::Int32, true)),
        Arc::new(Field::new("b", DataType::Utf8, true)),
    ];
    let members = StructArray::new(
        fields.clone().into(),
        vec![
            Arc::new(Int32Array::from_iter(
                (0..n).map(|i| (i % 3 != 0).then_some(i)),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("m{i}")),
            )),
        ],
        Some((0..n).map(|i| i % 7 != 0).collect()),
    );
    let mut map = MapBuilder::new(
        None,
        StringBuilder::new(),
        arrow::array::Int64Builder::new(),
    );
    for i in 0..n {
        for k in 0..i % 3 {
            map.keys().append_value(format!("k{k}"));
            map.values().append_value(i64::from(i * k));
        }
        map.append(i % 5 != 4).unwrap();
    }
    let inner = StructArray::new(
        fields.clone().into(),
        vec![
            Arc::new(Int32Array::from_iter_values(0..n * 2)),
            Arc::new(StringArray::from_iter(
                (0..n * 2).map(|i| (i % 2 == 0).then_some("x")),
            )),
        ],
        None,
    );
    let of_structs = ListArray::new(
        Arc::new(Field::new("item", inner.data_type().clone(), true)),
        OffsetBuffer::<i32>::from_lengths((0..n).map(|_| 2)),
        Arc::new(inner),
        None,
    );
    let union_fields = UnionFields::try_new(
        [0, 1],
        [
            Field::new("int", DataType::Int32, true),
            Field::new("text", DataType::Utf8, true),
        ],
    )
    .unwrap();
    let type_ids: ScalarBuffer<i8> = (0..n).map(|i| (i % 2) as i8).collect();
    let sparse = UnionArray::try_new(
        union_fields.clone(),
        type_ids.clone(),
        None,
        vec![
            Arc::new(Int32Array::from_iter_values(0..n)),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("u{i}")),
            )),
        ],
    )
    .unwrap();
    let halves = (n + 1) / 2;
    let dense_offsets: ScalarBuffer<i32> = (0..n).map(|i| i / 2).collect();
    let dense = UnionArray::try_new(
        union_fields,
        type_ids,
        Some(dense_offsets),
        vec![
            Arc::new(Int32Array::from_iter_values(0..halves)),
            Arc::new(StringArray::from_iter_values(
                (0..n / 2).map(|i| format!("d{i}")),
            )),
        ],
    )
    .unwrap();
    let mut ends: Vec<i32> = (4..n).step_by(4).collect();
    ends.push(n);
    let runs = ends.len() as i32;
    let ree = RunArray::<Int32Type>::try_new(
        &Int32Array::from(ends),
        &StringArray::from_iter_values((0..runs).map(|i| format!("r{i}"))),
    )
    .unwrap();
    batch(vec![
        ("list", Arc::new(list)),
        ("large", Arc::new(large)),
        ("fixed", Arc::new(fixed)),
        ("members", Arc::new(members)),
        ("map", Arc::new(map.finish())),
        ("of_structs", Arc::new(of_structs)),
        ("nothing", Arc::new(NullArray::new(n as usize))),
        ("sparse", Arc::new(sparse)),
        ("dense", Arc::new(dense)),
        ("ree", Arc::new(ree)),
    ])
}

/// Dictionary columns whose dictionaries grow from batch to batch (sent as deltas), one
/// inside a list.
fn dictionaries(b: i32) -> RecordBatch {
    let n = 18 + b;
    let words = 3 + 2 * b;
    let values = StringArray::from_iter_values((0..words).map(|w| format!("word {w}")));
    let keys = Int32Array::from_iter((0..n).map(|i| (i % 6 != 5).then_some(i % words)));
    let dict = DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values.clone())).unwrap();
    let small = DictionaryArray::<Int8Type>::try_new(
        Int8Array::from_iter_values((0..n).map(|i| (i % words) as i8)),
        Arc::new(LargeStringArray::from_iter_values(
            (0..words).map(|w| format!("large {w}")),
        )),
    )
    .unwrap();
    let inner = DictionaryArray::<Int16Type>::try_new(
        arrow::array::Int16Array::from_iter_values((0..n * 2).map(|i| (i % words) as i16)),
        Arc::new(values),
    )
    .unwrap();
    let listed = ListArray::new(
        Arc::new(Field::new("item", inner.data_type().clone(), true)),
        OffsetBuffer::<i32>::from_lengths((0..n).map(|_| 2)),
        Arc::new(inner),
        None,
    );
    batch(vec![
        ("dict", Arc::new(dict)),
        ("small", Arc::new(small)),
        ("listed", Arc::new(listed)),
        (
            "id",
            Arc::new(Int64Array::from_iter_values((0..n).map(i64::from))),
        ),
    ])
}

/// Arrays whose length costs (almost) nothing on the wire: lists and fixed-size lists of
/// nulls, a list of empty structs, list views, a run-end encoded column inside a list.
fn free(b: i32) -> RecordBatch {
    let n = 12 + b;
    let nulls = ListArray::new(
        Arc::new(Field::new("item", DataType::Null, true)),
        OffsetBuffer::<i32>::from_lengths((0..n).map(|i| i as usize % 4)),
        Arc::new(NullArray::new((0..n).map(|i| i as usize % 4).sum())),
        None,
    );
    let fixed = FixedSizeListArray::new(
        Arc::new(Field::new("item", DataType::Null, true)),
        3,
        Arc::new(NullArray::new(3 * n as usize)),
        None,
    );
    let empty = ListArray::new(
        Arc::new(Field::new(
            "item",
            DataType::Struct(Default::default()),
            true,
        )),
        OffsetBuffer::<i32>::from_lengths((0..n).map(|_| 2)),
        Arc::new(StructArray::new_empty_fields(2 * n as usize, None)),
        None,
    );
    let view = ListViewArray::new(
        Arc::new(Field::new("item", DataType::Int64, true)),
        ScalarBuffer::from((0..n).map(|i| i % 3).collect::<Vec<i32>>()),
        ScalarBuffer::from((0..n).map(|i| i % 2).collect::<Vec<i32>>()),
        Arc::new(Int64Array::from_iter_values(0..4)),
        None,
    );
    let ree = RunArray::<Int32Type>::try_new(
        &Int32Array::from(vec![2 * n, 4 * n]),
        &StringArray::from(vec!["run", "other"]),
    )
    .unwrap();
    let runs = ListArray::new(
        Arc::new(Field::new("item", ree.data_type().clone(), true)),
        OffsetBuffer::<i32>::from_lengths((0..n).map(|_| 4)),
        Arc::new(ree),
        None,
    );
    batch(vec![
        ("nulls", Arc::new(nulls)),
        ("fixed", Arc::new(fixed)),
        ("empty", Arc::new(empty)),
        ("view", Arc::new(view)),
        ("runs", Arc::new(runs)),
    ])
}

/// Every valid stream the mutator starts from: each family in three batches, plain, LZ4
/// and ZSTD compressed, and one in metadata version 4.
fn corpus() -> Vec<Frames> {
    let families: [fn(i32) -> RecordBatch; 5] = [primitives, strings, nested, dictionaries, free];
    let delta = || IpcWriteOptions::default().with_dictionary_handling(DictionaryHandling::Delta);
    let mut streams = Vec::new();
    for family in families {
        let batches: Vec<RecordBatch> = (0..3).map(family).collect();
        for codec in [
            None,
            Some(CompressionType::LZ4_FRAME),
            Some(CompressionType::ZSTD),
        ] {
            let options = delta().try_with_compression(codec).unwrap();
            streams.push(frames_of(&batches, options));
        }
    }
    // Batches without columns: rows that cost nothing.
    let rows = |n: usize| {
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(n));
        RecordBatch::try_new_with_options(Arc::new(Schema::empty()), vec![], &options).unwrap()
    };
    streams.push(frames_of(&[rows(5), rows(0)], delta()));
    let v4 = IpcWriteOptions::try_new(8, false, MetadataVersion::V4)
        .unwrap()
        .with_dictionary_handling(DictionaryHandling::Delta);
    streams.push(frames_of(&(0..2).map(primitives).collect::<Vec<_>>(), v4));
    streams
}

// ---------------------------------------------------------------------------------------
// The mutator
// ---------------------------------------------------------------------------------------

/// A field of a frame's flatbuffer metadata: where it is in the frame and how wide.
#[derive(Clone, Copy, Debug)]
struct Slot {
    at: usize,
    width: usize,
}

/// The scalar `field` of `table` (an offset into `frame`, whose metadata starts at 8).
fn scalar(
    table: &flatbuffers::Table<'_>,
    field: flatbuffers::VOffsetT,
    width: usize,
) -> Option<Slot> {
    let offset = table.vtable().get(field);
    (offset != 0).then(|| Slot {
        at: 8 + table.loc() + offset as usize,
        width,
    })
}

/// Every element of a vector of structs `size` bytes wide, as 8-byte fields.
fn struct_fields(base: *const u8, bytes: &[u8], size: usize, slots: &mut Vec<Slot>) {
    let start = bytes.as_ptr() as usize - base as usize;
    for element in 0..bytes.len() / size {
        for word in 0..size / 8 {
            slots.push(Slot {
                at: 8 + start + element * size + word * 8,
                width: 8,
            });
        }
    }
}

/// The fields of a schema's `field` (and its children) that declare what a reader builds.
fn field_slots(field: arrow::ipc::Field<'_>, slots: &mut Vec<Slot>, depth: usize) {
    use arrow::ipc::{Decimal, DictionaryEncoding, FixedSizeBinary, FixedSizeList, Int, Union};
    use arrow::ipc::{Field as F, FloatingPoint, Timestamp};
    if depth > 16 {
        return;
    }
    slots.extend(scalar(&field._tab, F::VT_TYPE_TYPE, 1));
    slots.extend(scalar(&field._tab, F::VT_NULLABLE, 1));
    if let Some(dict) = field.dictionary() {
        slots.extend(scalar(&dict._tab, DictionaryEncoding::VT_ID, 8));
        if let Some(int) = dict.indexType() {
            slots.extend(scalar(&int._tab, Int::VT_BITWIDTH, 4));
            slots.extend(scalar(&int._tab, Int::VT_IS_SIGNED, 1));
        }
    }
    if let Some(int) = field.type_as_int() {
        slots.extend(scalar(&int._tab, Int::VT_BITWIDTH, 4));
    }
    if let Some(float) = field.type_as_floating_point() {
        slots.extend(scalar(&float._tab, FloatingPoint::VT_PRECISION, 2));
    }
    if let Some(decimal) = field.type_as_decimal() {
        slots.extend(scalar(&decimal._tab, Decimal::VT_PRECISION, 4));
        slots.extend(scalar(&decimal._tab, Decimal::VT_SCALE, 4));
        slots.extend(scalar(&decimal._tab, Decimal::VT_BITWIDTH, 4));
    }
    if let Some(ts) = field.type_as_timestamp() {
        slots.extend(scalar(&ts._tab, Timestamp::VT_UNIT, 2));
    }
    if let Some(fsb) = field.type_as_fixed_size_binary() {
        slots.extend(scalar(&fsb._tab, FixedSizeBinary::VT_BYTEWIDTH, 4));
    }
    if let Some(fsl) = field.type_as_fixed_size_list() {
        slots.extend(scalar(&fsl._tab, FixedSizeList::VT_LISTSIZE, 4));
    }
    if let Some(union) = field.type_as_union() {
        slots.extend(scalar(&union._tab, Union::VT_MODE, 2));
        if let Some(ids) = union.typeIds() {
            let base = field._tab.buf().as_ptr();
            let start = ids.bytes().as_ptr() as usize - base as usize;
            for i in 0..ids.len() {
                slots.push(Slot {
                    at: 8 + start + 4 * i,
                    width: 4,
                });
            }
        }
    }
    for child in field.children().into_iter().flatten() {
        field_slots(child, slots, depth + 1);
    }
}

/// The fields of `frame`'s metadata worth overwriting: lengths, offsets, counts, ids,
/// codecs, types. Empty when the metadata does not decode.
fn slots(frame: &[u8]) -> Vec<Slot> {
    use arrow::ipc::{BodyCompression, DictionaryBatch, Message, RecordBatch as Rb};
    let mut slots = Vec::new();
    let Some(meta) = frame
        .get(4..8)
        .and_then(|l| usize::try_from(i32::from_le_bytes(l.try_into().unwrap())).ok())
        .and_then(|m| frame.get(8..8 + m))
    else {
        return slots;
    };
    let Ok(message) = arrow::ipc::root_as_message(meta) else {
        return slots;
    };
    let base = meta.as_ptr();
    slots.push(Slot { at: 4, width: 4 });
    slots.extend(scalar(&message._tab, Message::VT_VERSION, 2));
    slots.extend(scalar(&message._tab, Message::VT_HEADER_TYPE, 1));
    slots.extend(scalar(&message._tab, Message::VT_BODYLENGTH, 8));
    let batch_slots = |batch: arrow::ipc::RecordBatch<'_>, slots: &mut Vec<Slot>| {
        slots.extend(scalar(&batch._tab, Rb::VT_LENGTH, 8));
        if let Some(nodes) = batch.nodes() {
            struct_fields(base, nodes.bytes(), 16, slots);
        }
        if let Some(buffers) = batch.buffers() {
            struct_fields(base, buffers.bytes(), 16, slots);
        }
        if let Some(counts) = batch.variadicBufferCounts() {
            struct_fields(base, counts.bytes(), 8, slots);
        }
        if let Some(compression) = batch.compression() {
            slots.extend(scalar(&compression._tab, BodyCompression::VT_CODEC, 1));
        }
    };
    if let Some(batch) = message.header_as_record_batch() {
        batch_slots(batch, &mut slots);
    }
    if let Some(dict) = message.header_as_dictionary_batch() {
        slots.extend(scalar(&dict._tab, DictionaryBatch::VT_ID, 8));
        slots.extend(scalar(&dict._tab, DictionaryBatch::VT_ISDELTA, 1));
        if let Some(batch) = dict.data() {
            batch_slots(batch, &mut slots);
        }
    }
    if let Some(schema) = message.header_as_schema() {
        for field in schema.fields().into_iter().flatten() {
            field_slots(field, &mut slots, 0);
        }
    }
    slots.retain(|s| s.at + s.width <= frame.len());
    slots
}

/// Integers worth trying in a field `width` bytes wide that held `was`: boundaries, small
/// negatives, powers of two, neighbours and multiples of the old value, and lengths of the
/// frame.
fn interesting(rng: &mut ChaCha8Rng, was: i64, frame_len: usize) -> i64 {
    const VALUES: [i64; 24] = [
        0,
        1,
        -1,
        -2,
        -8,
        -128,
        2,
        3,
        7,
        8,
        15,
        16,
        63,
        64,
        127,
        255,
        256,
        4096,
        1 << 20,
        i32::MAX as i64,
        i32::MIN as i64,
        u32::MAX as i64,
        i64::MAX,
        i64::MIN,
    ];
    match rng.random_range(0..6) {
        0 => was.wrapping_add(rng.random_range(-2..=2)),
        1 => was.wrapping_mul(2),
        2 => frame_len as i64 + rng.random_range(-16..=16),
        3 => 1i64 << rng.random_range(0..63),
        _ => VALUES[rng.random_range(0..VALUES.len())],
    }
}

fn read_int(frame: &[u8], slot: Slot) -> i64 {
    let mut bytes = [0u8; 8];
    bytes[..slot.width].copy_from_slice(&frame[slot.at..slot.at + slot.width]);
    let value = i64::from_le_bytes(bytes);
    let shift = 64 - 8 * slot.width as u32;
    (value << shift) >> shift
}

fn write_int(frame: &mut [u8], slot: Slot, value: i64) {
    frame[slot.at..slot.at + slot.width].copy_from_slice(&value.to_le_bytes()[..slot.width]);
}

/// Where the metadata of `frame` ends (its body starts), or the frame's length.
fn body_start(frame: &[u8]) -> usize {
    frame
        .get(4..8)
        .and_then(|l| usize::try_from(i32::from_le_bytes(l.try_into().unwrap())).ok())
        .map_or(frame.len(), |m| (8 + m).min(frame.len()))
}

/// One mutation of `frames` (other streams of `corpus` may lend a frame).
fn mutate(rng: &mut ChaCha8Rng, frames: &mut Frames, corpus: &[Frames]) {
    if frames.is_empty() {
        frames.push(corpus[0][0].clone());
    }
    let pick = rng.random_range(0..frames.len());
    match rng.random_range(0..110) {
        // A field of the metadata gets an interesting value.
        0..40 => {
            let frame = &mut frames[pick];
            let slots = slots(frame);
            if slots.is_empty() {
                return;
            }
            let slot = slots[rng.random_range(0..slots.len())];
            let was = read_int(frame, slot);
            let value = interesting(rng, was, frame.len());
            write_int(frame, slot, value);
        }
        // Bits flipped, mostly in the metadata.
        40..60 => {
            let frame = &mut frames[pick];
            let end = if rng.random_bool(0.7) {
                body_start(frame)
            } else {
                frame.len()
            };
            if end <= 8 {
                return;
            }
            for _ in 0..rng.random_range(1..=3) {
                let at = rng.random_range(8..end);
                frame[at] ^= 1 << rng.random_range(0..8);
            }
        }
        // Bytes anywhere overwritten with an interesting integer.
        60..70 => {
            let frame = &mut frames[pick];
            let width = [1, 2, 4, 8][rng.random_range(0..4)];
            if frame.len() < 8 + width {
                return;
            }
            let mut at = rng.random_range(8..=frame.len() - width);
            if rng.random_bool(0.5) {
                at &= !(width - 1);
            }
            let slot = Slot { at, width };
            let value = interesting(rng, read_int(frame, slot), frame.len());
            write_int(frame, slot, value);
        }
        // The body cut short, its declared length with it (or not).
        70..75 => {
            let frame = &mut frames[pick];
            let start = body_start(frame);
            if frame.len() <= start {
                return;
            }
            let cut = rng.random_range(start..frame.len());
            frame.truncate(cut);
            if rng.random_bool(0.8)
                && let Some(slot) = body_length_slot(frame)
            {
                write_int(frame, slot, (cut - start) as i64);
            }
        }
        // Bytes appended to the body, its declared length grown to match.
        75..78 => {
            let frame = &mut frames[pick];
            let extra = 8 * rng.random_range(1..64);
            frame.extend((0..extra).map(|_| rng.random::<u8>()));
            if let Some(slot) = body_length_slot(frame) {
                let start = body_start(frame);
                let len = frame.len();
                write_int(frame, slot, (len - start) as i64);
            }
        }
        78..82 => {
            frames.remove(pick);
        }
        82..86 => {
            let copy = frames[pick].clone();
            let to = rng.random_range(0..=frames.len());
            frames.insert(to, copy);
        }
        86..90 => {
            let other = rng.random_range(0..frames.len());
            frames.swap(pick, other);
        }
        // A frame of another stream (another schema, compression or dictionary).
        90..95 => {
            let stream = &corpus[rng.random_range(0..corpus.len())];
            let frame = stream[rng.random_range(0..stream.len())].clone();
            let to = rng.random_range(0..=frames.len());
            frames.insert(to, frame);
        }
        // The stream ends early.
        95..98 => frames.truncate(pick),
        // Two frames spliced into one.
        98..100 => {
            let other = frames[rng.random_range(0..frames.len())].clone();
            let frame = &mut frames[pick];
            let cut = rng.random_range(0..=frame.len());
            let from = rng.random_range(0..=other.len());
            frame.truncate(cut);
            frame.extend_from_slice(&other[from..]);
        }
        // A record batch declares another row count, in its header and in every field
        // node that had the old one: the buffers no longer match.
        100..105 => {
            let frame = &mut frames[pick];
            let Some((length, rows, nodes)) = row_slots(frame) else {
                return;
            };
            let value = interesting(rng, rows, frame.len());
            for slot in std::iter::once(length).chain(nodes) {
                write_int(frame, slot, value);
            }
        }
        // A dictionary renumbered consistently, in the schema and in its batches.
        _ => {
            let ids: Vec<(Slot, i64)> = dictionary_id_slots(&frames[0]);
            if ids.is_empty() {
                return;
            }
            let (slot, old) = ids[rng.random_range(0..ids.len())];
            let new = if rng.random_bool(0.7) {
                rng.random_range(0..8)
            } else {
                interesting(rng, old, 0)
            };
            write_int(&mut frames[0], slot, new);
            for frame in frames.iter_mut().skip(1) {
                let meta = &frame[8..body_start(frame)];
                let Some(at) = arrow::ipc::root_as_message(meta)
                    .ok()
                    .and_then(|m| m.header_as_dictionary_batch())
                    .filter(|d| d.id() == old)
                    .and_then(|d| scalar(&d._tab, arrow::ipc::DictionaryBatch::VT_ID, 8))
                else {
                    continue;
                };
                write_int(frame, at, new);
            }
        }
    }
}

/// The row count of the record batch in `frame` (its slot and value) and the field nodes
/// that have the same length.
fn row_slots(frame: &[u8]) -> Option<(Slot, i64, Vec<Slot>)> {
    let meta = frame.get(8..body_start(frame))?;
    let message = arrow::ipc::root_as_message(meta).ok()?;
    let batch = message.header_as_record_batch()?;
    let length = scalar(&batch._tab, arrow::ipc::RecordBatch::VT_LENGTH, 8)?;
    let nodes = batch.nodes()?;
    let start = nodes.bytes().as_ptr() as usize - meta.as_ptr() as usize;
    let same = (0..nodes.len())
        .filter(|i| nodes.get(*i).length() == batch.length())
        .map(|i| Slot {
            at: 8 + start + 16 * i,
            width: 8,
        })
        .collect();
    Some((length, batch.length(), same))
}

/// The dictionary ids the schema message in `frame` stores (ids left at their default, 0,
/// are not stored), with their values.
fn dictionary_id_slots(frame: &[u8]) -> Vec<(Slot, i64)> {
    fn walk(field: arrow::ipc::Field<'_>, ids: &mut Vec<(Slot, i64)>, depth: usize) {
        if depth > 16 {
            return;
        }
        if let Some(dict) = field.dictionary()
            && let Some(slot) = scalar(&dict._tab, arrow::ipc::DictionaryEncoding::VT_ID, 8)
        {
            ids.push((slot, dict.id()));
        }
        for child in field.children().into_iter().flatten() {
            walk(child, ids, depth + 1);
        }
    }
    let mut ids = Vec::new();
    let Some(meta) = frame.get(8..body_start(frame)) else {
        return ids;
    };
    let Some(schema) = arrow::ipc::root_as_message(meta)
        .ok()
        .and_then(|m| m.header_as_schema())
    else {
        return ids;
    };
    for field in schema.fields().into_iter().flatten() {
        walk(field, &mut ids, 0);
    }
    ids
}

/// The body length a frame's message declares, as a slot.
fn body_length_slot(frame: &[u8]) -> Option<Slot> {
    let meta = frame.get(8..body_start(frame))?;
    let message = arrow::ipc::root_as_message(meta).ok()?;
    scalar(&message._tab, arrow::ipc::Message::VT_BODYLENGTH, 8)
}

/// A mutated copy of one stream of `corpus`.
fn mutated(rng: &mut ChaCha8Rng, corpus: &[Frames]) -> Frames {
    let mut frames = corpus[rng.random_range(0..corpus.len())].clone();
    for _ in 0..rng.random_range(1..=3) {
        mutate(rng, &mut frames, corpus);
    }
    frames
}

// ---------------------------------------------------------------------------------------
// The consumer, without a network
// ---------------------------------------------------------------------------------------

/// What became of one sequence.
#[derive(Debug)]
enum Verdict {
    /// A frame or the seal was refused (the fetch fails, the partial file is removed).
    Refused(String),
    /// The file was sealed, holding `rows` rows in a stream of `stream_bytes`.
    Sealed { rows: u64, stream_bytes: u64 },
}

/// A failure of the invariant, with the stage where it happened.
#[derive(Debug)]
struct Failure {
    stage: &'static str,
    what: String,
}

fn failure(stage: &'static str, what: impl std::fmt::Display) -> Failure {
    Failure {
        stage,
        what: what.to_string(),
    }
}

/// `run`, with a panic out of it as a failure of `stage`.
fn guarded<T>(stage: &'static str, run: impl FnOnce() -> T) -> Result<T, Failure> {
    catch_unwind(AssertUnwindSafe(run)).map_err(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        failure(stage, format!("panicked: {what}"))
    })
}

/// Runs the consumer over `frames` in `dir` and checks everything that reads the result.
fn check(frames: &[Vec<u8>], dir: &Path) -> Result<Verdict, Failure> {
    let partial = dir.join("out.partial");
    let (verdict, accepted) = guarded("append and seal", || consume(frames, &partial))??;
    // The Flight endpoint decodes the frames the writer appended as they come, whether or
    // not the transfer later fails.
    #[cfg(feature = "query")]
    let flight_rows = guarded("flight decoding", || flight_rows(&frames[..accepted]))?;
    #[cfg(not(feature = "query"))]
    let _ = accepted;
    let Verdict::Sealed { rows, stream_bytes } = verdict else {
        return Ok(verdict);
    };
    #[cfg(feature = "query")]
    match flight_rows {
        Ok(decoded) if decoded == rows => {}
        other => {
            return Err(failure(
                "flight decoding",
                format!("{other:?}, sealed {rows} rows"),
            ));
        }
    }
    let read = guarded("file reader", || read_file(&partial))?
        .map_err(|e| failure("file reader", format!("a sealed file does not read: {e}")))?;
    if read.iter().map(|b| b.num_rows() as u64).sum::<u64>() != rows {
        return Err(failure(
            "file reader",
            "the file holds other rows than counted",
        ));
    }
    let arrows = dir.join("out.arrows");
    guarded("arrows", || {
        convert::convert(
            &partial,
            stream_bytes,
            OutputFormat::Arrows,
            &arrows,
            crate::diskroom::Room::keeping(crate::diskroom::Reserve::mib(0)),
        )
    })?
    .map_err(|e| failure("arrows", e))?;
    let streamed = guarded("stream reader", || read_stream(&arrows))?.map_err(|e| {
        failure(
            "stream reader",
            format!("a sealed stream does not read: {e}"),
        )
    })?;
    if streamed != rows {
        return Err(failure(
            "stream reader",
            "the stream holds other rows than counted",
        ));
    }
    let parquet = dir.join("out.parquet");
    let converted = guarded("parquet", || {
        convert::convert(
            &partial,
            stream_bytes,
            OutputFormat::Parquet,
            &parquet,
            crate::diskroom::Room::keeping(crate::diskroom::Reserve::mib(0)),
        )
    })?;
    if converted.is_err() && parquet.exists() {
        return Err(failure("parquet", "a failed conversion left its output"));
    }
    guarded("csv and json", || text_outputs(&read))?;
    #[cfg(feature = "query")]
    guarded("query reader", || query_read(&partial))?;
    Ok(verdict)
}

/// Appends `frames` as the writer thread does, and seals the file as `transfer::seal` does
/// (without the trailer, which a hostile provider signs anyway). Returns how many frames
/// were appended.
fn consume(frames: &[Vec<u8>], partial: &Path) -> Result<(Verdict, usize), Failure> {
    let mut builder = IpcFileBuilder::create(partial).map_err(|e| failure("create", e))?;
    for (n, frame) in frames.iter().enumerate() {
        let offset = builder.offset();
        match builder.append(frame) {
            Ok(()) => {}
            // The fetch then fails and removes the partial file (`PartialPaths::discard`).
            Err(AppendError::Protocol(_)) if builder.offset() != offset => {
                return Err(failure("append", "a refused frame was written"));
            }
            Err(AppendError::Protocol(why)) => return Ok((Verdict::Refused(why), n)),
            Err(AppendError::Io(e)) => return Err(failure("append", e)),
            Err(AppendError::NoRoom(e)) => return Err(failure("append", std::io::Error::other(e))),
        }
    }
    let (rows, stream_bytes) = (builder.rows(), builder.offset() - HEADER_LEN as u64);
    match builder.finish_with(false) {
        Ok(_) => Ok((Verdict::Sealed { rows, stream_bytes }, frames.len())),
        Err(why) => Ok((Verdict::Refused(why), frames.len())),
    }
}

fn read_file(path: &Path) -> Result<Vec<RecordBatch>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let reader = arrow::ipc::reader::FileReader::try_new(file, None).map_err(|e| e.to_string())?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

fn read_stream(path: &Path) -> Result<u64, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let reader =
        arrow::ipc::reader::StreamReader::try_new(file, None).map_err(|e| e.to_string())?;
    let mut rows = 0;
    for batch in reader {
        rows += batch.map_err(|e| e.to_string())?.num_rows() as u64;
    }
    Ok(rows)
}

/// What `meshnode sql` writes as CSV and JSON from batches like these (an error is fine).
fn text_outputs(batches: &[RecordBatch]) {
    let mut csv = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(std::io::sink());
    let mut json = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::JsonArray>(std::io::sink());
    for batch in batches {
        let _ = csv.write(batch);
        let _ = json.write(batch);
    }
    let _ = json.finish();
}

/// Rows the Flight endpoint's decoder gets out of `frames`, as `flight::stream` feeds them
/// to it (the end-of-stream marker once the transfer verified), or its refusal.
#[cfg(feature = "query")]
fn flight_rows(frames: &[Vec<u8>]) -> Result<u64, String> {
    use crate::flight::stream::END_OF_STREAM;
    let mut decoder = arrow::ipc::reader::StreamDecoder::new();
    let mut rows = 0;
    for frame in frames.iter().map(Vec::as_slice).chain([&END_OF_STREAM[..]]) {
        let mut pending = arrow::buffer::Buffer::from_slice_ref(frame);
        while !pending.is_empty() {
            if let Some(batch) = crate::flight::stream::decode(&mut decoder, &mut pending)
                .map_err(|s| s.to_string())?
            {
                rows += batch.num_rows() as u64;
            }
        }
    }
    decoder.finish().map_err(|e| e.to_string())?;
    Ok(rows)
}

/// What the query engine reads of the file (an error is fine).
#[cfg(feature = "query")]
fn query_read(path: &Path) {
    let Ok(schema) = read_schema(path) else {
        return;
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let path = path.to_owned();
    let reader =
        std::thread::spawn(move || crate::sql::read_received(path, schema, "t".into(), tx));
    while rx.blocking_recv().is_some() {}
    if let Err(panic) = reader.join() {
        std::panic::resume_unwind(panic);
    }
}

#[cfg(feature = "query")]
fn read_schema(path: &Path) -> Result<arrow::datatypes::SchemaRef, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let reader = arrow::ipc::reader::FileReader::try_new(file, None).map_err(|e| e.to_string())?;
    Ok(reader.schema())
}

// ---------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------

fn soak_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/soak-frames")
}

fn save(frames: &[Vec<u8>], path: &Path) {
    let mut bytes = Vec::new();
    for frame in frames {
        bytes.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        bytes.extend_from_slice(frame);
    }
    // In the page cache is enough: what an abort of this process must not lose.
    std::fs::File::create(path)
        .and_then(|mut file| file.write_all(&bytes))
        .unwrap();
}

fn load(path: &Path) -> Frames {
    let bytes = std::fs::read(path).unwrap();
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        frames.push(bytes[at + 4..at + 4 + len].to_vec());
        at += 4 + len;
    }
    frames
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs `cases` mutated sequences from `seed`; returns the distinct failures (by stage and
/// first words) with the case that found each, and the count of sealed and refused cases.
fn run(seed: u64, cases: u64, long: bool) -> (Vec<(u64, Failure)>, [u64; 2]) {
    let corpus = corpus();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = soak_dir();
    if long {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut failures: Vec<(u64, Failure)> = Vec::new();
    let mut counts = [0u64; 2];
    // Refusals by their first words: what the mutations reach.
    let mut reasons = std::collections::BTreeMap::<String, u64>::new();
    for case in 0..cases {
        let frames = mutated(&mut rng, &corpus);
        if long {
            save(&frames, &dir.join("current.bin"));
        }
        let case_dir = tmp.path().join(case.to_string());
        std::fs::create_dir(&case_dir).unwrap();
        match check(&frames, &case_dir) {
            Ok(Verdict::Sealed { .. }) => counts[0] += 1,
            Ok(Verdict::Refused(why)) => {
                counts[1] += 1;
                let why = why
                    .split_once(" is refused: ")
                    .map_or(why.as_str(), |(_, w)| w);
                let words: String = why.chars().take(72).collect();
                *reasons.entry(words).or_default() += 1;
            }
            Err(f) => {
                // The same failure with other numbers in it is not a new one.
                let key = |f: &Failure| {
                    let words: String = f.what.chars().filter(char::is_ascii_alphabetic).collect();
                    let words: String = words.chars().take(48).collect();
                    format!("{}: {words}", f.stage)
                };
                if !failures.iter().any(|(_, g)| key(g) == key(&f)) {
                    if long {
                        save(&frames, &dir.join(format!("fail-{seed}-{case}.bin")));
                        eprintln!("seed {seed} case {case}: {}: {}", f.stage, f.what);
                    }
                    failures.push((case, f));
                    if failures.len() >= MAX_FAILURES {
                        break;
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&case_dir);
        if long && case % 1000 == 999 {
            eprintln!(
                "seed {seed}: {} cases, {} sealed, {} refused, {} failures",
                case + 1,
                counts[0],
                counts[1],
                failures.len()
            );
        }
    }
    if long {
        let mut reasons: Vec<_> = reasons.into_iter().collect();
        reasons.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        for (why, n) in reasons.iter().take(40) {
            eprintln!("{n:>7}  {why}");
        }
    }
    (failures, counts)
}

/// Every sequence of frames a provider may send, mutated or not, is either refused or
/// sealed into a file that Arrow reads completely (file and stream), that converts or is
/// refused with an error, and that the query engine and the Flight endpoint decode without
/// a panic.
#[test]
fn a_file_the_consumer_seals_is_a_file_arrow_reads() {
    if let Ok(path) = std::env::var("MESHNODE_SOAK_REPLAY") {
        let tmp = tempfile::tempdir().unwrap();
        let frames = load(Path::new(&path));
        eprintln!("{} frames: {:?}", frames.len(), check(&frames, tmp.path()));
        return;
    }
    let long = env_u64("MESHNODE_SOAK_CASES");
    let seed = env_u64("MESHNODE_SOAK_SEED").unwrap_or(DEFAULT_SEED);
    if long.is_some() {
        // Panics contained on purpose would fill the log.
        std::panic::set_hook(Box::new(|_| {}));
    }
    let started = std::time::Instant::now();
    let (failures, [sealed, refused]) = run(seed, long.unwrap_or(SHORT_CASES), long.is_some());
    eprintln!(
        "soak seed {seed}: {sealed} sealed, {refused} refused, {} failures in {:?}",
        failures.len(),
        started.elapsed()
    );
    if long.is_some() {
        let _ = std::panic::take_hook();
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        sealed > 0 && refused > 0,
        "the mutations are too weak or too strong"
    );
}

/// The unmutated streams are all sealed and read back whole.
#[test]
fn every_valid_stream_is_sealed_and_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    for (n, frames) in corpus().iter().enumerate() {
        let dir = tmp.path().join(n.to_string());
        std::fs::create_dir(&dir).unwrap();
        match check(frames, &dir) {
            Ok(Verdict::Sealed { rows, .. }) => assert!(rows > 0),
            other => panic!("stream {n}: {other:?}"),
        }
    }
}
