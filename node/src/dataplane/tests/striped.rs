//! Whole-product fetches striped over several connections: the stream's order, the signed
//! digest and resumption survive the striping; what the provider re-encodes is not striped;
//! a provider that allows fewer transfers than stripes gets a refusal that says so.

use super::*;

/// Which stripes the provider's `TransferServed` audit records name, once there are
/// `count` of them (a stream is audited when the consumer has acknowledged all of it,
/// which may be just after the fetch returned).
async fn served_stripes(provider: &Side, count: usize) -> Vec<(u8, u8)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stripes = audited_stripes(provider);
        if stripes.len() >= count || tokio::time::Instant::now() > deadline {
            return stripes;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn audited_stripes(provider: &Side) -> Vec<(u8, u8)> {
    let mut stripes: Vec<(u8, u8)> = provider
        .store
        .audit_raw()
        .unwrap()
        .iter()
        .map(|b| mesh_protocol::audit::AuditEntry::from_bytes(b).unwrap())
        .filter(|e| e.kind == AuditKind::TransferServed)
        .map(|e| {
            let detail: serde_json::Value = serde_json::from_str(&e.detail).unwrap();
            serde_json::from_value(detail["stripe"].clone()).unwrap()
        })
        .collect();
    stripes.sort_unstable();
    stripes
}

/// `orders` (six batches: seven frames with the schema) agreed whole, for a consumer that
/// stripes over `connections`; the provider serves `max_transfers` at once and pauses as
/// `hooks` say. Also returns the agreement.
fn striped_agreed(
    connections: u8,
    hooks: Hooks,
    max_transfers: u32,
) -> (Side, Side, ProductId, Agreement) {
    let provider = Side::start_with(provider_id(), hooks, max_transfers);
    let consumer = Side::start_striped(
        consumer_id(),
        Hooks::default(),
        tls::Transport::streams(4),
        connections,
    );
    let (product, agreement) = agree_whole(&provider, &consumer, &[]);
    (provider, consumer, product, agreement)
}

#[tokio::test]
async fn a_whole_product_striped_over_three_connections_arrives_whole_and_in_order() {
    let (provider, consumer, product, agreement) = striped_agreed(3, Hooks::default(), 4);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("striped.arrow");
    let outcome = consumer.plane.fetch(options(&out, &product)).await.unwrap();
    assert_eq!(outcome.rows, (BATCHES * ROWS_PER_BATCH) as u64);
    assert_eq!(outcome.batches, 1 + BATCHES as u64);
    assert_eq!(outcome.connections, 3);
    let (names, batches) = read_arrow(&out);
    assert_eq!(names, ["order_id", "region", "amount", "email", "day"]);
    let expected: Vec<RecordBatch> = (0..BATCHES).map(sales_batch).collect();
    assert_eq!(batches, expected, "every batch, in the owner's order");
    assert_eq!(served_stripes(&provider, 3).await, [(0, 3), (1, 3), (2, 3)]);
    if let Some(py) = pyarrow_check(&out) {
        assert_eq!(py["rows"], BATCHES * ROWS_PER_BATCH);
    }

    // The provider's signed digest is that of the whole stream: an unstriped fetch of the
    // same product (here by a consumer that asks for one connection) signs the same one.
    let single = Side::start(consumer_id());
    replicate_catalog(&provider, &single, &product);
    single
        .store
        .put_agreement(&agreement.id(), &record(Role::Consumer, &agreement))
        .unwrap();
    let whole = out_dir.path().join("whole.arrow");
    let reference = single.plane.fetch(options(&whole, &product)).await.unwrap();
    assert_eq!(reference.digest, outcome.digest);
    assert_eq!(std::fs::read(&whole).unwrap(), std::fs::read(&out).unwrap());
}

#[tokio::test]
async fn a_striped_fetch_broken_off_resumes_to_an_identical_file() {
    // Stripe 0 of 3 carries frames 0, 3 and 6 and stalls before 6; stripes 1 and 2 send all
    // of theirs (1, 4; 2, 5) and end. The consumer holds 0..=5 when the provider disappears.
    let (mut provider, consumer, product, _) = striped_agreed(
        3,
        Hooks {
            pause_after_frames: Some(2),
            ..Hooks::default()
        },
        4,
    );
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("resumed.arrow");
    let partials = PartialPaths::new(out.clone());
    let fetch = {
        let plane = consumer.plane.clone();
        let o = options(&out, &product);
        tokio::spawn(async move { plane.fetch(o).await })
    };
    tokio::time::timeout(
        Duration::from_secs(10),
        provider.plane.shared.hooks.paused.notified(),
    )
    .await
    .expect("stripe 0 paused");
    provider.plane.close();
    provider.task.abort();
    let err = fetch.await.unwrap().unwrap_err();
    match &err {
        FetchError::Interrupted { batches, .. } => assert_eq!(*batches, 6, "{err}"),
        other => panic!("expected an interruption, got {other}"),
    }
    assert!(!out.exists() && partials.partial.exists() && partials.state.exists());

    // Resumed over two connections instead of three: from frame 6 (6 mod 2 = 0, stripe 0
    // of 2 carries it), the other stripe sends just the trailer.
    provider.restart(Hooks::default());
    let mut o = options_via(&out, &product, &provider);
    o.connections = Some(2);
    let outcome = consumer.plane.fetch(o).await.unwrap();
    assert_eq!((outcome.resumed_from_batch, outcome.connections), (6, 2));
    assert!(!partials.partial.exists() && !partials.state.exists());
    let (_, batches) = read_arrow(&out);
    let expected: Vec<RecordBatch> = (0..BATCHES).map(sales_batch).collect();
    assert_eq!(batches, expected);

    let whole = out_dir.path().join("whole.arrow");
    let mut o = options_via(&whole, &product, &provider);
    o.connections = Some(1);
    let reference = consumer.plane.fetch(o).await.unwrap();
    assert_eq!(reference.connections, 1);
    assert_eq!(reference.digest, outcome.digest);
    assert_eq!(std::fs::read(&whole).unwrap(), std::fs::read(&out).unwrap());
}

#[tokio::test]
async fn a_fetch_the_provider_re_encodes_goes_whole_on_one_connection() {
    // Every column granted, no filter: the consumer opens three connections, but `email`
    // is restricted, so the provider re-encodes and sends everything on the first.
    let provider = Side::start(provider_id());
    let consumer = Side::start_striped(
        consumer_id(),
        Hooks::default(),
        tls::Transport::streams(4),
        3,
    );
    let (product, _) = agree_whole(&provider, &consumer, &["email"]);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("reencoded.arrow");
    let outcome = consumer.plane.fetch(options(&out, &product)).await.unwrap();
    assert_eq!(outcome.rows, (BATCHES * ROWS_PER_BATCH) as u64);
    assert_eq!(outcome.connections, 1, "sent whole on the first stream");
    let (names, _) = read_arrow(&out);
    assert_eq!(names, ["order_id", "region", "amount", "day"]);
    assert_eq!(served_stripes(&provider, 1).await, [(0, 1)]);
}

#[tokio::test]
async fn more_stripes_than_the_provider_serves_at_once_is_refused_with_what_to_change() {
    let (provider, consumer, product, _) = striped_agreed(3, Hooks::default(), 2);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("busy.arrow");
    let err = consumer
        .plane
        .fetch(options(&out, &product))
        .await
        .unwrap_err();
    match &err {
        FetchError::Refused(r) => {
            assert_eq!(r.code, FetchRefusal::Busy, "{err}");
            assert!(r.message.contains("data_link.connections"), "{err}");
        }
        other => panic!("expected busy, got {other}"),
    }
    no_output(&out);
    assert_eq!(audited_stripes(&provider), []);
}
