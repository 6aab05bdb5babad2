//! What may keep a transfer going once it started: a member removed from the mesh loses its
//! open connections and what runs on them, a revoked agreement ends the transfer running
//! under it, and held-back transfers of all consumers together take at most the provider's
//! `max_transfers`.

use mesh_protocol::{PublicKey, Stripe};

use super::*;

/// Batches of the product the tests serve: about 4 MiB, four times the stream window of a
/// [`slow_connection`], so that a consumer that does not read holds its transfer.
const LARGE_BATCHES: usize = 200;

/// `orders` version 1 at `provider`, about 4 MiB, served as stored.
fn publish_large(provider: &Side) -> ProductId {
    let product = publish(provider, "orders", 1, &[]);
    enlarge(provider, "orders", 1, LARGE_BATCHES);
    product
}

/// An agreement of `consumer` with `provider` for all of `product` (every column, no
/// filter), stored at the provider.
fn agree_as(provider: &Side, consumer: &Side, product: &ProductId) -> Agreement {
    agree_until(provider, consumer, product, now_ms() + 30 * DAY_MS)
}

/// [`agree_as`], valid until `valid_until_ms`.
fn agree_until(
    provider: &Side,
    consumer: &Side,
    product: &ProductId,
    valid_until_ms: u64,
) -> Agreement {
    let mut t = terms(product, &consumer.identity);
    t.columns = mesh_protocol::Columns::AllCurrentAndFuture;
    t.filter = None;
    t.valid_until_ms = valid_until_ms;
    let request = Signed::sign(&consumer.identity, &ContractRequest { terms: t });
    let agreement = Agreement::countersign(&provider.identity, request).unwrap();
    provider
        .store
        .put_agreement(&agreement.id(), &record(Role::Provider, &agreement))
        .unwrap();
    agreement
}

/// A raw connection of `from` to `provider` whose streams take about 1 MiB unread: a
/// transfer of a larger product is held back by flow control until the client reads.
async fn slow_connection(from: &Side, provider: &Side) -> quinn::Connection {
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
    let client = tls::client_config(&from.identity, &provider.key(), slow).unwrap();
    from.plane
        .endpoint
        .connect_with(client, provider.addr(), tls::SERVER_NAME)
        .unwrap()
        .await
        .unwrap()
}

/// The request frame for the whole product of `agreement`.
fn request_bytes(agreement: &Agreement) -> Vec<u8> {
    let request = FetchRequest {
        agreement: agreement.clone(),
        product: agreement.terms_trusted().unwrap().product,
        version: None,
        resume_from_batch: 0,
        compression: Compression::None,
        narrowing: None,
        stripe: Stripe::WHOLE,
    };
    encode_frame(&Frame::Request(Box::new(request))).unwrap()
}

/// Asks for the whole product of `agreement` on a new stream of `connection`; the stream
/// to read the answer from.
async fn request_on(connection: &quinn::Connection, agreement: &Agreement) -> quinn::RecvStream {
    let (mut send, recv) = connection.open_bi().await.unwrap();
    send.write_all(&request_bytes(agreement)).await.unwrap();
    send.finish().unwrap();
    recv
}

/// Reads the answer on `recv` to its end.
async fn frames_of(recv: &mut quinn::RecvStream) -> Vec<Frame> {
    let bytes = recv.read_to_end(64 << 20).await.unwrap();
    let mut decoder = FrameDecoder::new();
    decoder.push(&bytes);
    let mut frames = Vec::new();
    while let Some(f) = decoder.next_frame().unwrap() {
        frames.push(f);
    }
    frames
}

/// The kinds of `frames`, for a failure's message.
fn kinds(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(|f| f.kind().to_string()).collect()
}

/// `frames` are one refusal with `code` whose message contains `text`.
fn refused(frames: &[Frame], code: FetchRefusal, text: &str) {
    match frames {
        [Frame::Error(r)] => {
            assert_eq!(r.code, code, "{r}");
            assert!(r.message.contains(text), "{r}");
        }
        other => panic!(
            "expected one error frame, got {} frames: {:?}",
            other.len(),
            kinds(other)
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
        ),
    }
}

fn data_frames(frames: &[Frame]) -> usize {
    frames
        .iter()
        .filter(|f| matches!(f, Frame::Data(_)))
        .count()
}

/// A transfer that started (a header first) and was stopped before its end: a refusal of
/// `code` whose message holds each of `texts` last, no trailer, not every batch sent.
fn stopped_with(frames: &[Frame], code: FetchRefusal, texts: &[&str]) {
    assert!(matches!(frames.first(), Some(Frame::Header(_))));
    match frames.last() {
        Some(Frame::Error(r)) => {
            assert_eq!(r.code, code, "{r}");
            for text in texts {
                assert!(r.message.contains(text), "{text}: {r}");
            }
        }
        other => panic!(
            "expected a {code} refusal last, got {:?}",
            other.map(Frame::kind)
        ),
    }
    assert!(data_frames(frames) < 1 + LARGE_BATCHES);
}

/// Waits until `provider` serves `n` transfers to `peer`.
async fn serving(provider: &Side, peer: &PublicKey, n: u32, what: &str) {
    wait_until(what, Duration::from_secs(15), || {
        active_transfers(provider, peer) == n
    })
    .await;
}

#[tokio::test]
async fn a_member_removed_while_connected_loses_its_connection_and_the_transfer_on_it() {
    let provider = Side::start(provider_id());
    let consumer = Side::start(consumer_id());
    let members = provider.plane.shared.config.members.clone();
    members.replace([provider.key(), consumer.key()]);
    let product = publish_large(&provider);
    let agreement = agree_as(&provider, &consumer, &product);
    let peer = consumer.key();
    let connection = slow_connection(&consumer, &provider).await;

    // A member: served on the connection; a second transfer is held back by flow control.
    let frames = frames_of(&mut request_on(&connection, &agreement).await).await;
    assert!(matches!(frames.last(), Some(Frame::Trailer(_))));
    // The schema, then every batch.
    assert_eq!(data_frames(&frames), 1 + LARGE_BATCHES);
    let mut held = request_on(&connection, &agreement).await;
    serving(&provider, &peer, 1, "the provider takes the transfer").await;

    // Removed: its next request on the open connection gets nothing, and the provider
    // closes the connection as it refuses a non-member's handshake, which ends the running
    // transfer and gives its slot back.
    let refusals = members.refusals();
    members.replace([provider.key()]);
    let next = async {
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(&request_bytes(&agreement))
            .await
            .map_err(|e| e.to_string())?;
        recv.read_to_end(64 << 20).await.map_err(|e| e.to_string())
    };
    let next = tokio::time::timeout(Duration::from_secs(10), next)
        .await
        .expect("the next request ends");
    assert!(
        next.is_err(),
        "a removed member's request was answered: {} bytes",
        next.map_or(0, |b| b.len())
    );
    let closed = tokio::time::timeout(Duration::from_secs(10), connection.closed())
        .await
        .expect("the provider closes the removed member's connection");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(CLOSE_NOT_MEMBER));
            assert_eq!(&close.reason[..], b"not a member");
        }
        other => panic!("expected the connection closed as not a member, got {other:?}"),
    }
    assert!(members.refusals() > refusals);
    serving(&provider, &peer, 0, "the running transfer is given back").await;
    assert!(
        held.read_to_end(64 << 20).await.is_err(),
        "the held-back transfer does not complete"
    );
    // Nothing more goes over that connection.
    assert!(connection.open_bi().await.is_err());
}

#[tokio::test]
async fn a_transfer_running_when_its_agreement_is_revoked_ends_with_a_revoked_refusal() {
    let provider = Side::start(provider_id());
    let consumer = Side::start(consumer_id());
    let product = publish_large(&provider);
    let agreement = agree_as(&provider, &consumer, &product);
    let peer = consumer.key();
    let connection = slow_connection(&consumer, &provider).await;
    let mut held = request_on(&connection, &agreement).await;
    serving(&provider, &peer, 1, "the provider takes the transfer").await;

    revoke_at(&provider, &agreement);
    // What was already read or queued arrives; then the refusal, and no trailer.
    let frames = frames_of(&mut held).await;
    stopped_with(&frames, FetchRefusal::Revoked, &["was revoked"]);
    serving(&provider, &peer, 0, "the transfer is given back").await;
    // The next request on the same connection is refused.
    let frames = frames_of(&mut request_on(&connection, &agreement).await).await;
    refused(&frames, FetchRefusal::Revoked, "was revoked");
    connection.close(0u32.into(), b"");
}

#[tokio::test]
async fn a_transfer_running_when_its_agreement_expires_ends_with_an_expired_refusal() {
    let provider = Side::start(provider_id());
    let consumer = Side::start(consumer_id());
    let product = publish_large(&provider);
    // Long enough to be authorized on a busy machine; the providers of these tests tolerate
    // no clock skew.
    let until = now_ms() + 5_000;
    let agreement = agree_until(&provider, &consumer, &product, until);
    let peer = consumer.key();
    let connection = slow_connection(&consumer, &provider).await;
    let mut held = request_on(&connection, &agreement).await;
    serving(&provider, &peer, 1, "the provider takes the transfer").await;
    assert!(now_ms() < until, "the transfer was not authorized in time");

    // The consumer reads nothing until the agreement has ended.
    let wait = Duration::from_millis((until + 50).saturating_sub(now_ms()));
    tokio::time::sleep(wait).await;
    let frames = frames_of(&mut held).await;
    stopped_with(
        &frames,
        FetchRefusal::Expired,
        &["expired at", "while this transfer ran"],
    );
    serving(&provider, &peer, 0, "the transfer is given back").await;
    // A new request under the same agreement is refused from the start.
    let frames = frames_of(&mut request_on(&connection, &agreement).await).await;
    refused(&frames, FetchRefusal::Expired, "expired at");
    connection.close(0u32.into(), b"");
}

#[tokio::test]
async fn transfers_past_the_providers_cap_are_refused_busy_and_served_once_one_ends() {
    let provider = Side::start_with(
        provider_id(),
        Hooks {
            max_transfers: Some(2),
            ..Hooks::default()
        },
        4,
    );
    let consumers = [
        consumer_id(),
        mallory_id(),
        Identity::from_secret_bytes([4; 32]),
    ]
    .map(Side::start);
    let product = publish_large(&provider);
    let agreements: Vec<Agreement> = consumers
        .iter()
        .map(|c| agree_as(&provider, c, &product))
        .collect();
    let total = || provider.plane.shared.transfer_slots().active();

    // Two keys whose consumers do not read hold a transfer each: all there are.
    let mut held = Vec::new();
    for (consumer, agreement) in consumers[..2].iter().zip(&agreements) {
        let connection = slow_connection(consumer, &provider).await;
        let recv = request_on(&connection, agreement).await;
        serving(
            &provider,
            &consumer.key(),
            1,
            "the provider takes the transfer",
        )
        .await;
        held.push((connection, recv));
    }
    assert_eq!(total(), 2);

    // A third key, far under its own limit, is refused busy and takes nothing.
    let third = &consumers[2];
    let connection = slow_connection(third, &provider).await;
    let frames = frames_of(&mut request_on(&connection, &agreements[2]).await).await;
    refused(
        &frames,
        FetchRefusal::Busy,
        "already serves its maximum of 2 transfers to all consumers together; retry later",
    );
    assert_eq!(total(), 2);
    assert_eq!(active_transfers(&provider, &third.key()), 0);

    // One held-back consumer reads its transfer to the end; its slot serves the third.
    let (first, mut recv) = held.remove(0);
    let frames = frames_of(&mut recv).await;
    assert!(matches!(frames.last(), Some(Frame::Trailer(_))));
    serving(
        &provider,
        &consumers[0].key(),
        0,
        "the finished transfer gives its slot back",
    )
    .await;
    let frames = frames_of(&mut request_on(&connection, &agreements[2]).await).await;
    assert!(
        matches!(frames.last(), Some(Frame::Trailer(_))),
        "expected the transfer served, got {:?}",
        frames.last().map(Frame::kind)
    );
    assert_eq!(data_frames(&frames), 1 + LARGE_BATCHES);
    for c in [first, connection, held.remove(0).0] {
        c.close(0u32.into(), b"");
    }
}
