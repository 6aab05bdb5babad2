//! The Flight endpoint's stream of a product: batches while the fetch runs, and an error
//! (not a silent end) when the transfer breaks or fails verification.

use super::*;

/// A product read through the Flight endpoint's stream: batches while the fetch runs.
async fn flight_stream(
    consumer: &Side,
    product: &ProductId,
) -> std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<RecordBatch, arrow_flight::error::FlightError>> + Send>,
> {
    let permit = Arc::new(tokio::sync::Semaphore::new(1))
        .try_acquire_owned()
        .unwrap();
    let o = options(Path::new(""), product);
    let (_, envelope) = consumer.store.descriptor(product).unwrap().unwrap();
    let descriptor = envelope.decode_trusted().unwrap();
    let declared = crate::flight::stream::Declared {
        product: format!("sales/{}", product.name),
        schema: Arc::new(crate::sql::declared_schema(&descriptor.schema).unwrap()),
    };
    Box::pin(crate::flight::stream::product_batches(
        consumer.plane.clone(),
        o,
        Some(declared),
        permit,
    ))
}

fn flight_code(e: arrow_flight::error::FlightError) -> tonic::Code {
    tonic::Status::from(e).code()
}

#[tokio::test]
async fn flight_stream_delivers_batches_before_the_transfer_ends_and_fails_when_it_breaks() {
    use futures::StreamExt;
    let provider = Side::start_with(
        provider_id(),
        Hooks {
            pause_after_frames: Some(3),
            ..Hooks::default()
        },
        4,
    );
    let consumer = Side::start(consumer_id());
    let product = publish(&provider, "orders", 1, &["email"]);
    replicate_catalog(&provider, &consumer, &product);
    agree(&provider, &consumer, terms(&product, &consumer.identity));
    let mut stream = flight_stream(&consumer, &product).await;
    // The provider stops after the schema and two batches: those two reach the reader
    // while the transfer is still open.
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a batch before the transfer ended")
        .unwrap()
        .unwrap();
    assert_eq!(first.num_rows(), ROWS_PER_BATCH.div_ceil(3));
    let names: Vec<&str> = first
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["order_id", "region", "amount"]);
    tokio::time::timeout(
        Duration::from_secs(10),
        provider.plane.shared.hooks.paused.notified(),
    )
    .await
    .expect("the provider paused");
    let second = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the second batch before the transfer ended");
    assert!(second.unwrap().is_ok());
    // The transfer breaks off: the stream ends with an error, not as if complete.
    provider.plane.close();
    provider.task.abort();
    let end = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("the stream ends");
    let err = end.expect("an error, not a silent end").unwrap_err();
    assert_eq!(flight_code(err), tonic::Code::Unavailable);
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn flight_stream_of_a_transfer_that_fails_verification_ends_with_an_error() {
    use futures::StreamExt;
    let provider = Side::start_with(
        provider_id(),
        Hooks {
            tamper: Some(Tamper::TrailerDigest),
            ..Hooks::default()
        },
        4,
    );
    let consumer = Side::start(consumer_id());
    let product = publish(&provider, "orders", 1, &["email"]);
    replicate_catalog(&provider, &consumer, &product);
    agree(&provider, &consumer, terms(&product, &consumer.identity));
    let mut items: Vec<_> = flight_stream(&consumer, &product).await.collect().await;
    let last = items.pop().expect("some items");
    assert_eq!(
        items.len(),
        BATCHES,
        "every batch arrives before the trailer"
    );
    assert!(items.iter().all(Result::is_ok));
    let status = tonic::Status::from(last.expect_err("the stream must end with an error"));
    assert_eq!(status.code(), tonic::Code::DataLoss, "{status}");
    assert!(status.message().contains("verification"), "{status}");
    // The staging area is left empty.
    let staging = consumer
        .data_dir
        .received()
        .join(crate::dataplane::staged::STREAM_STAGING);
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// Replaces the provider's file of `name` version `version` with the same rows, `amount`
/// as text: data of other types than its catalog entry declares.
fn retype_amount(side: &Side, name: &str, version: u64) {
    let path = side.data_dir.product_file(name, version);
    let fields: Vec<Field> = sales_schema()
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "amount" => Field::new("amount", DataType::Utf8, false),
            _ => f.as_ref().clone(),
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let mut writer = FileWriter::try_new(File::create(&path).unwrap(), &schema).unwrap();
    for b in 0..BATCHES {
        let batch = sales_batch(b);
        let mut columns = batch.columns().to_vec();
        let at = batch.schema().index_of("amount").unwrap();
        columns[at] = arrow::compute::cast(&columns[at], &DataType::Utf8).unwrap();
        writer
            .write(&RecordBatch::try_new(schema.clone(), columns).unwrap())
            .unwrap();
    }
    writer.finish().unwrap();
}

#[tokio::test]
async fn flight_stream_of_other_types_than_the_catalog_declares_is_refused_before_any_batch() {
    use futures::StreamExt;
    let provider = Side::start(provider_id());
    let consumer = Side::start(consumer_id());
    let product = publish(&provider, "orders", 1, &["email"]);
    retype_amount(&provider, "orders", 1);
    replicate_catalog(&provider, &consumer, &product);
    agree(&provider, &consumer, terms(&product, &consumer.identity));
    let mut stream = flight_stream(&consumer, &product).await;
    let first = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("the stream answers")
        .expect("an error, not a silent end");
    let status = tonic::Status::from(first.expect_err("no batch of the wrong types is sent"));
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");
    for part in ["`amount`", "Utf8", "Float64", "sales/orders", "Fetch again"] {
        assert!(status.message().contains(part), "{part} in {status}");
    }
    assert!(stream.next().await.is_none());
}
