//! A user-space link emulator for UDP (QUIC) traffic between nodes in one process.
//!
//! Every node binds its real QUIC socket on 127.0.0.1 and is *known* to its peers only by a
//! relay address: the emulator's front socket for that node. The node announces the relay
//! address (`NetTuning::announce_addrs`), so identify and Kademlia never learn a real one.
//! Each node also has a back socket: the address its peers see it at.
//!
//! ```text
//!   A (real) ──► front(B) ──[A→B: delay, loss, partition]──► out of back(A)  ──► B (real)
//!   A (real) ◄── out of front(B) ◄──[B→A: delay, loss, partition]── back(A) ◄── B (real)
//! ```
//!
//! A datagram arriving at `front(B)` comes from some node's real socket (QUIC dials from its
//! listen socket), which names the sender `A`. It is forwarded to `B` out of `back(A)`, so
//! `B` sees `A` at `back(A)`; `B`'s replies to that address arrive at `back(A)` from `B`'s
//! real socket and go to `A` out of `front(B)`, where `A` expects them. Both sockets of a node
//! work the same way: a datagram from `X` arriving at either socket of `N` is for `N`, and
//! leaves from the other socket of `X`. Two sockets per node, whatever the number of
//! connections, so a thousand nodes fit in the open-files limit.
//!
//! Each direction applies the link of its two clouds: latency plus uniform jitter in
//! `[-jitter, +jitter]` (clamped at zero and never reordering packets of one direction of one
//! pair), random loss, and a blackhole while the two clouds are partitioned.
//!
//! Losses and jitter come from per-socket ChaCha RNGs seeded from the run seed: a given
//! sequence of datagrams gets the same fate, but the sequence itself depends on the OS
//! scheduler and is not reproducible.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Largest datagram relayed (QUIC uses at most ~1500 bytes on loopback paths by default).
const MAX_DATAGRAM: usize = 65_536;

/// Properties of one direction of a link.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkParams {
    /// One-way latency.
    pub latency: Duration,
    /// Uniform jitter added to or subtracted from the latency.
    pub jitter: Duration,
    /// Probability that a datagram is dropped, 0.0–1.0.
    pub loss: f64,
}

/// Traffic counters of one node (what it sent into the emulator and what was delivered to it).
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Bytes this node sent towards peers.
    pub bytes_sent: AtomicU64,
    /// Bytes delivered to this node.
    pub bytes_received: AtomicU64,
}

/// Totals over the whole run.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct EmulatorTotals {
    /// Datagrams delivered.
    pub delivered: u64,
    /// Datagrams dropped by random loss.
    pub dropped_loss: u64,
    /// Datagrams dropped by a partition.
    pub dropped_partition: u64,
    /// Datagrams from an address that is no node's (e.g. a killed node's old socket).
    pub dropped_unknown: u64,
}

/// One node as the emulator sees it.
#[derive(Debug)]
struct Slot {
    /// Cloud index.
    cloud: usize,
    /// Real QUIC socket of the node, once known.
    real: RwLock<Option<SocketAddr>>,
    /// The node's front socket (its relay address, what peers dial).
    front: Arc<UdpSocket>,
    /// The node's back socket (where its peers see it).
    back: Arc<UdpSocket>,
    /// Counters.
    counters: NodeCounters,
}

/// Shared state of the emulator.
#[derive(Debug)]
struct Inner {
    /// Run seed, for the RNGs of new sockets.
    seed: u64,
    /// Link parameters, `links[from cloud][to cloud]`.
    links: Vec<Vec<LinkParams>>,
    /// `partitioned[a * clouds + b]`: traffic between clouds a and b is blackholed.
    partitioned: Vec<AtomicBool>,
    /// Nodes by index.
    slots: RwLock<Vec<Arc<Slot>>>,
    /// Real socket address -> node index.
    by_real: RwLock<HashMap<SocketAddr, usize>>,
    /// Background tasks, aborted on drop.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Totals.
    delivered: AtomicU64,
    /// Totals.
    dropped_loss: AtomicU64,
    /// Totals.
    dropped_partition: AtomicU64,
    /// Totals.
    dropped_unknown: AtomicU64,
}

/// Handle to the emulator; cheap to clone. Its sockets live until [`Emulator::shutdown`].
#[derive(Clone, Debug)]
pub struct Emulator {
    /// Shared state.
    inner: Arc<Inner>,
}

/// A datagram waiting for its delivery time.
#[derive(Debug)]
struct Pending {
    /// Socket to send from.
    out: Arc<UdpSocket>,
    /// Node to deliver to (its real address is looked up at delivery, so restarts work).
    to: usize,
    /// Payload.
    data: Vec<u8>,
}

/// Which of its owner's sockets a relay serves. Either way a datagram from node `X` is for
/// the owner; it leaves from `X`'s other socket.
#[derive(Clone, Copy, Debug)]
enum Role {
    /// `front(owner)`: forwarded out of `back(X)`.
    Front { owner: usize },
    /// `back(owner)`: forwarded out of `front(X)`.
    Back { owner: usize },
}

impl Emulator {
    /// An emulator for `links.len()` clouds; `links[a][b]` is the link from cloud a to b.
    pub fn new(seed: u64, links: Vec<Vec<LinkParams>>) -> Self {
        let clouds = links.len();
        Self {
            inner: Arc::new(Inner {
                seed,
                links,
                partitioned: (0..clouds * clouds)
                    .map(|_| AtomicBool::new(false))
                    .collect(),
                slots: RwLock::new(Vec::new()),
                by_real: RwLock::new(HashMap::new()),
                tasks: Mutex::new(Vec::new()),
                delivered: AtomicU64::new(0),
                dropped_loss: AtomicU64::new(0),
                dropped_partition: AtomicU64::new(0),
                dropped_unknown: AtomicU64::new(0),
            }),
        }
    }

    /// Adds a node in `cloud`; returns its index and relay address.
    pub async fn add_node(&self, cloud: usize) -> std::io::Result<(usize, SocketAddr)> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let index = {
            let mut slots = self.inner.slots.write().expect("lock");
            slots.push(Arc::new(Slot {
                cloud,
                real: RwLock::new(None),
                front: front.clone(),
                back: back.clone(),
                counters: NodeCounters::default(),
            }));
            slots.len() - 1
        };
        let seed = self.inner.seed ^ (index as u64).wrapping_mul(0x9e37);
        let mut tasks = self.inner.tasks.lock().expect("lock");
        tasks.push(tokio::spawn(relay(
            self.inner.clone(),
            front,
            Role::Front { owner: index },
            ChaCha8Rng::seed_from_u64(seed),
        )));
        tasks.push(tokio::spawn(relay(
            self.inner.clone(),
            back,
            Role::Back { owner: index },
            ChaCha8Rng::seed_from_u64(seed ^ 0x2545_f491_4f6c_dd1d),
        )));
        Ok((index, addr))
    }

    /// Sets (or changes, after a restart) the real socket address of node `index`.
    pub fn set_real_addr(&self, index: usize, real: SocketAddr) {
        let slot = self.slot(index);
        let mut by_real = self.inner.by_real.write().expect("lock");
        if let Some(old) = slot.real.write().expect("lock").replace(real) {
            by_real.remove(&old);
        }
        by_real.insert(real, index);
    }

    /// Blackholes (or restores) all traffic between clouds `a` and `b`.
    pub fn set_partitioned(&self, a: usize, b: usize, partitioned: bool) {
        let n = self.inner.links.len();
        self.inner.partitioned[a * n + b].store(partitioned, Ordering::Relaxed);
        self.inner.partitioned[b * n + a].store(partitioned, Ordering::Relaxed);
    }

    /// Whether any pair of clouds is partitioned.
    pub fn any_partition(&self) -> bool {
        self.inner
            .partitioned
            .iter()
            .any(|p| p.load(Ordering::Relaxed))
    }

    /// Bytes sent and received by node `index`.
    pub fn node_bytes(&self, index: usize) -> (u64, u64) {
        let slot = self.slot(index);
        (
            slot.counters.bytes_sent.load(Ordering::Relaxed),
            slot.counters.bytes_received.load(Ordering::Relaxed),
        )
    }

    /// Run totals.
    pub fn totals(&self) -> EmulatorTotals {
        let i = &self.inner;
        EmulatorTotals {
            delivered: i.delivered.load(Ordering::Relaxed),
            dropped_loss: i.dropped_loss.load(Ordering::Relaxed),
            dropped_partition: i.dropped_partition.load(Ordering::Relaxed),
            dropped_unknown: i.dropped_unknown.load(Ordering::Relaxed),
        }
    }

    /// Number of sockets the emulator holds (front and back of every node).
    pub fn sockets(&self) -> usize {
        2 * self.inner.slots.read().expect("lock").len()
    }

    /// Stops every relay task and closes the sockets.
    pub fn shutdown(&self) {
        for task in self.inner.tasks.lock().expect("lock").drain(..) {
            task.abort();
        }
    }

    fn slot(&self, index: usize) -> Arc<Slot> {
        self.inner.slots.read().expect("lock")[index].clone()
    }
}

impl Inner {
    fn slot(&self, index: usize) -> Option<Arc<Slot>> {
        self.slots.read().expect("lock").get(index).cloned()
    }

    fn link(&self, from: usize, to: usize) -> (LinkParams, bool) {
        let n = self.links.len();
        (
            self.links[from][to],
            self.partitioned[from * n + to].load(Ordering::Relaxed),
        )
    }
}

/// Receives on one socket and schedules each datagram for delivery.
async fn relay(inner: Arc<Inner>, socket: Arc<UdpSocket>, role: Role, mut rng: ChaCha8Rng) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut queue: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut seq = 0u64;
    // Latest delivery time per (from, to) direction handled here: no reordering.
    let mut last: HashMap<(usize, usize), Instant> = HashMap::new();
    loop {
        let next = queue.peek().map(|Reverse((t, _))| *t);
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let Ok((len, src)) = received else { continue };
                let (Role::Front { owner: to } | Role::Back { owner: to }) = role;
                let from = inner.by_real.read().expect("lock").get(&src).copied();
                let Some(from) = from else {
                    inner.dropped_unknown.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let (Some(from_slot), Some(to_slot)) = (inner.slot(from), inner.slot(to)) else {
                    continue;
                };
                let out = match role {
                    Role::Front { .. } => from_slot.back.clone(),
                    Role::Back { .. } => from_slot.front.clone(),
                };
                from_slot.counters.bytes_sent.fetch_add(len as u64, Ordering::Relaxed);
                let (params, partitioned) = inner.link(from_slot.cloud, to_slot.cloud);
                if partitioned {
                    inner.dropped_partition.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if params.loss > 0.0 && rng.random_bool(params.loss.min(1.0)) {
                    inner.dropped_loss.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let mut delay = params.latency;
                if !params.jitter.is_zero() {
                    let j = params.jitter.as_secs_f64();
                    let d = params.latency.as_secs_f64() + rng.random_range(-j..=j);
                    delay = Duration::from_secs_f64(d.max(0.0));
                }
                let now = Instant::now();
                let mut at = now + delay;
                if let Some(prev) = last.get(&(from, to)) {
                    at = at.max(*prev);
                }
                if at <= now {
                    deliver(&inner, &out, to, &buf[..len]);
                } else {
                    last.insert((from, to), at);
                    seq += 1;
                    queue.push(Reverse((at, seq)));
                    pending.insert(seq, Pending { out, to, data: buf[..len].to_vec() });
                }
            }
            _ = sleep_until(next), if next.is_some() => {
                let now = Instant::now();
                while let Some(Reverse((t, id))) = queue.peek().copied() {
                    if t > now {
                        break;
                    }
                    queue.pop();
                    if let Some(p) = pending.remove(&id) {
                        deliver(&inner, &p.out, p.to, &p.data);
                    }
                }
                if queue.is_empty() {
                    last.clear();
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

fn deliver(inner: &Inner, out: &UdpSocket, to: usize, data: &[u8]) {
    let Some(slot) = inner.slot(to) else { return };
    let Some(real) = *slot.real.read().expect("lock") else {
        return;
    };
    // A full socket buffer is a loss, as on a real link.
    if out.try_send_to(data, real).is_ok() {
        slot.counters
            .bytes_received
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        inner.delivered.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relays_both_ways_with_latency_and_partitions() {
        let link = LinkParams {
            latency: Duration::from_millis(30),
            ..LinkParams::default()
        };
        let emu = Emulator::new(1, vec![vec![LinkParams::default(), link]; 2]);
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (ia, _) = emu.add_node(0).await.unwrap();
        let (ib, front_b) = emu.add_node(1).await.unwrap();
        emu.set_real_addr(ia, a.local_addr().unwrap());
        emu.set_real_addr(ib, b.local_addr().unwrap());
        let start = Instant::now();
        a.send_to(b"ping", front_b).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, seen_a) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_ne!(seen_a, front_b);
        b.send_to(b"pong", seen_a).await.unwrap();
        let (n, from) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"pong"[..], front_b));

        // A third node is seen at its own address; B can also start a conversation with A at
        // the address it sees A at, and A sees B at B's relay address.
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (ic, _) = emu.add_node(0).await.unwrap();
        emu.set_real_addr(ic, c.local_addr().unwrap());
        c.send_to(b"hello", front_b).await.unwrap();
        let (_, seen_c) = b.recv_from(&mut buf).await.unwrap();
        assert_ne!(seen_c, seen_a);
        b.send_to(b"dial", seen_a).await.unwrap();
        let (n, from) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"dial"[..], front_b));
        assert_eq!(emu.sockets(), 6);

        emu.set_partitioned(0, 1, true);
        a.send_to(b"lost", front_b).await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(200), b.recv_from(&mut buf)).await;
        assert!(r.is_err(), "a partition drops datagrams");
        assert_eq!(emu.totals().dropped_partition, 1);
        emu.set_partitioned(0, 1, false);
        a.send_to(b"back", front_b).await.unwrap();
        let (n, _) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"back");
        emu.shutdown();
    }
}
