//! A consumer that floods a provider with contract requests, for end-to-end tests of the
//! provider's request budgets. It speaks `/meshnode/contract/1` directly over libp2p, so none
//! of the honest consumer's own checks apply: every request is well signed, by its own key,
//! for the named product, with a fresh nonce.
//!
//! With `--ticket TICKET` (from `meshnode mesh invite --domain flood` on the provider) it
//! first joins the provider's mesh, so the flood comes from a member; without, it is a
//! non-member whose connection the provider refuses before any request is read (the report
//! then says `"refused": true`).
//!
//! With `--kind status` it sends status batches instead: each asks for the largest number of
//! contracts a batch may name (ids nobody holds), which the provider reads one by one.
//!
//! With `--purpose P` its requests name that purpose (`analytics` by default): one the
//! product's policy does not allow makes every request a signed rejection the provider stores.
//!
//! Usage: `contract-flood --provider MULTIADDR/p2p/ID --provider-key HEX --product NAME
//! [--ticket TICKET] [--count N] [--in-flight N] [--kind request|status] [--purpose P]`. Prints one JSON
//! line with the tally of answers and the elapsed time, then exits.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, request_response};
use mesh_protocol::contract::{AgreementId, Columns, DAY_MS, MAX_STATUS_BATCH};
use mesh_protocol::{
    ContractMessage, ContractReply, ContractRequest, ContractTerms, Identity, ProductId, PublicKey,
    Signed,
};
use mesh_tests::raw::RawCodec;

/// Command-line arguments.
#[derive(Debug)]
struct Args {
    /// The provider's control-plane address, with `/p2p/`.
    provider: Multiaddr,
    /// The provider's key (owner of the product).
    provider_key: PublicKey,
    /// The product requested.
    product: String,
    /// Requests to send.
    count: usize,
    /// Requests in flight at once.
    in_flight: usize,
    /// A ticket to join the provider's mesh with first.
    ticket: Option<String>,
    /// Status batches instead of requests.
    status: bool,
    /// The purpose the requests name.
    purpose: String,
}

fn args() -> Args {
    let (mut provider, mut key, mut product, mut ticket) = (None, None, None, None);
    let (mut count, mut in_flight, mut status) = (2000, 64, false);
    let mut purpose = "analytics".to_owned();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let value = it.next();
        match a.as_str() {
            "--provider" => provider = value.and_then(|s| s.parse().ok()),
            "--provider-key" => key = value.and_then(|s| PublicKey::from_hex(&s).ok()),
            "--product" => product = value,
            "--ticket" => ticket = value,
            "--purpose" => purpose = value.expect("--purpose PURPOSE"),
            "--count" => count = value.and_then(|s| s.parse().ok()).unwrap_or(count),
            "--in-flight" => in_flight = value.and_then(|s| s.parse().ok()).unwrap_or(in_flight),
            "--kind" => match value.as_deref() {
                Some("request") => status = false,
                Some("status") => status = true,
                other => panic!("--kind request|status, not {other:?}"),
            },
            other => panic!("unknown argument {other}"),
        }
    }
    Args {
        provider: provider.expect("--provider MULTIADDR/p2p/ID"),
        provider_key: key.expect("--provider-key HEX"),
        product: product.expect("--product NAME"),
        count,
        in_flight: in_flight.max(1),
        ticket,
        status,
        purpose,
    }
}

fn request(me: &Identity, args: &Args, now_ms: u64) -> Vec<u8> {
    let terms = ContractTerms {
        product: ProductId {
            owner: args.provider_key,
            name: args.product.clone(),
        },
        provider_domain: "victim".into(),
        consumer_domain: "flood".into(),
        provider: args.provider_key,
        consumer: me.public_key(),
        min_version: 1,
        max_version: None,
        purpose: args.purpose.clone(),
        columns: Columns::Listed(vec!["order_id".into()]),
        filter: None,
        valid_from_ms: now_ms,
        valid_until_ms: now_ms + 7 * DAY_MS,
        nonce: rand::random(),
    };
    ContractMessage::Request(Signed::sign(me, &ContractRequest { terms })).to_bytes()
}

/// A status batch of the most ids a batch may name, none of them held by anyone.
fn status_batch() -> Vec<u8> {
    let ids = (0..MAX_STATUS_BATCH)
        .map(|_| AgreementId(rand::random()))
        .collect();
    ContractMessage::StatusBatch(ids).to_bytes()
}

fn label(reply: &ContractReply) -> String {
    match reply {
        ContractReply::Agreed(_) => "agreed".into(),
        ContractReply::Pending(_) => "pending".into(),
        ContractReply::Rejected(_) => "rejected".into(),
        ContractReply::Revoked(_) => "revoked".into(),
        ContractReply::Unknown(_) => "unknown".into(),
        ContractReply::Error(_) => "error".into(),
        ContractReply::Statuses(_) => "statuses".into(),
        ContractReply::Busy(refusal) => {
            use mesh_protocol::budget::BudgetRefusal as B;
            match refusal {
                B::TooManyOpen { .. } => "busy_too_many_open".into(),
                B::TooManyLive { .. } => "busy_too_many_live".into(),
                B::RateLimited { .. } => "busy_rate_limited".into(),
                B::ProviderFull { .. } => "busy_provider_full".into(),
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    let me = Identity::from_secret_bytes(rand::random());
    let mesh = match &args.ticket {
        Some(ticket) => Some(mesh_tests::insider::join(ticket, &me).await),
        None => None,
    };
    let contract = mesh_tests::insider::protocol(mesh.as_ref(), "contract/1");
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(me.secret_bytes())
        .expect("an ed25519 secret");
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                RawCodec,
                [(contract, request_response::ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(30)),
            )
        })
        .expect("a behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    swarm
        .dial(args.provider.clone())
        .expect("dial the provider");
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let (mut sent, mut answered) = (0usize, 0usize);
    let mut provider = None;
    let mut started = None;
    let mut refused = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while answered < args.count {
        let event = tokio::select! {
            e = swarm.select_next_some() => e,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                provider = Some(peer_id);
                started.get_or_insert_with(Instant::now);
            }
            SwarmEvent::OutgoingConnectionError { error, .. } => {
                if mesh.is_none() {
                    // A non-member: the provider's gate turned the connection down.
                    eprintln!("the provider refused the connection: {error}");
                    refused = true;
                    break;
                }
                eprintln!("cannot reach the provider: {error}");
                std::process::exit(2);
            }
            SwarmEvent::ConnectionClosed {
                num_established: 0,
                cause,
                ..
            } if answered < args.count => {
                eprintln!("the provider closed the connection: {cause:?}");
                refused = true;
                break;
            }
            SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            }) => {
                answered += 1;
                let kind = ContractReply::from_bytes(&response)
                    .map(|r| label(&r))
                    .unwrap_or_else(|_| "malformed".into());
                *tally.entry(kind).or_default() += 1;
            }
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure { error, .. }) => {
                answered += 1;
                *tally.entry(format!("failure: {error}")).or_default() += 1;
                // A non-member's requests fail only because the provider closed the
                // connection it refused; the failures may be reported before the close.
                if mesh.is_none() {
                    refused = true;
                }
            }
            _ => {}
        }
        if let Some(peer) = provider {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            while sent < args.count && sent - answered < args.in_flight {
                let message = if args.status {
                    status_batch()
                } else {
                    request(&me, &args, now_ms)
                };
                swarm.behaviour_mut().send_request(&peer, message);
                sent += 1;
            }
        }
    }
    let elapsed_ms = started.map_or(0, |s| s.elapsed().as_millis() as u64);
    let report = serde_json::json!({
        "sent": sent,
        "answered": answered,
        "elapsed_ms": elapsed_ms,
        "replies": tally,
        "refused": refused,
    });
    println!("{report}");
}
