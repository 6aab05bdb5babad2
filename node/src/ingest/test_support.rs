//! Helpers shared by the tests of the ingest modules.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::FileReader;
use tempfile::TempDir;

use super::{IngestError, IngestOutcome, InputFormat, ingest_file};

/// The CSV that exercises quoting, unicode, nulls and type inference.
pub(super) const TRICKY_CSV: &str = concat!(
    "id,name,score,qty,flag,note\n",
    "1,\"Smith, John\",1.5,10,true,\"He said \"\"hi\"\"\"\n",
    "2,José,2,,false,\"line one\nline two\"\n",
    "3,中文,,7,,😀 emoji\n",
    ",\"\",3.25,-4,TRUE,\n",
    "5,plain,-0.5,0,false,\"a,b,\"\"c\"\"\"\n",
);

pub(super) fn write_input(dir: &TempDir, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, contents).unwrap();
    path
}

/// Ingests `contents`, written to `dir` as `name`, expecting a refusal that leaves no output.
pub(super) fn refused(dir: &TempDir, name: &str, contents: &[u8]) -> IngestError {
    let input = write_input(dir, name, contents);
    let output = dir.path().join("out.arrow.partial");
    let error = ingest_file(&input, &output).unwrap_err();
    assert!(
        !output.exists(),
        "a refused input left {}",
        output.display()
    );
    error
}

/// The message of `error`, which must be an Arrow reader's refusal of a `format` input
/// ([`IngestError::Arrow`]).
pub(super) fn arrow_refusal(error: &IngestError, format: InputFormat) -> String {
    assert!(
        matches!(error, IngestError::Arrow { format: f, .. } if *f == format),
        "{error:?}"
    );
    error.to_string()
}

/// The message of `error`, which must be a size a `format` input declares and the walk
/// before the reader refused ([`IngestError::ArrowBounds`]).
pub(super) fn bounds_refusal(error: &IngestError, format: InputFormat) -> String {
    assert!(
        matches!(error, IngestError::ArrowBounds { format: f, .. } if *f == format),
        "{error:?}"
    );
    error.to_string()
}

/// Reads an Arrow IPC file back into one batch (tests use small files).
pub(super) fn read_back(path: &Path) -> (SchemaRef, RecordBatch, usize) {
    let reader = FileReader::try_new_buffered(File::open(path).unwrap(), None).unwrap();
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    let all = arrow::compute::concat_batches(&schema, &batches).unwrap();
    (schema, all, batches.len())
}

pub(super) fn ingest_ok(dir: &TempDir, input: &Path) -> (IngestOutcome, RecordBatch, PathBuf) {
    let output = dir.path().join("out.arrow.partial");
    let outcome = ingest_file(input, &output).unwrap();
    let (schema, batch, batches) = read_back(&output);
    assert_eq!(schema, outcome.schema);
    assert_eq!(batch.num_rows() as u64, outcome.rows);
    assert_eq!(batches as u64, outcome.batches);
    (outcome, batch, output)
}

pub(super) fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
    batch
        .column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref::<T>()
        .unwrap()
}

/// A schema with metadata and types CSV never produces, to see that it survives.
pub(super) fn sample_batch() -> RecordBatch {
    let schema = Schema::new_with_metadata(
        vec![
            Field::new("id", DataType::Int32, false)
                .with_metadata(HashMap::from([("unit".to_string(), "count".to_string())])),
            Field::new("name", DataType::Utf8, true),
            Field::new("price", DataType::Float64, true),
        ],
        HashMap::from([("origin".to_string(), "test".to_string())]),
    );
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(vec![1, 2, 3, 4])),
        Arc::new(StringArray::from(vec![
            Some("é"),
            None,
            Some("中文"),
            Some(""),
        ])),
        Arc::new(Float64Array::from(vec![
            Some(1.5),
            Some(2.0),
            None,
            Some(-3.0),
        ])),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

/// `List` nested `depth` levels around `Int32`.
pub(super) fn nested_list(depth: usize) -> DataType {
    let mut data_type = DataType::Int32;
    for _ in 0..depth {
        data_type = DataType::List(Arc::new(Field::new("item", data_type, true)));
    }
    data_type
}
