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
//!
//! The relay must not become the link: at a few hundred Mbit/s a relay moves tens of
//! thousands of datagrams a second, two system calls each if done one by one. So each relay
//! socket reads many datagrams per call (`recvmmsg`) and takes a sender's segmentation-offload
//! batch whole (UDP GRO); a batch keeps its datagrams together, fates drawn one by one, and
//! leaves in one call (UDP GSO) after one delay. Payloads wait in reused buffers, and the
//! sockets ask the kernel for large buffers so that a burst waits instead of being dropped.
//! What is dropped anyway is counted apart from the links' loss
//! ([`EmulatorTotals::dropped_overflow`]).

use std::cell::RefCell;
use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use quinn_udp::{EcnCodepoint, RecvMeta, Transmit, UdpSocketState};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Bytes of one receive buffer: the largest UDP datagram, and the most that GRO coalesces
/// into one batch.
const RECV_BUFFER: usize = 65_536;
/// Datagrams (or GRO batches) read per system call.
const BATCH: usize = quinn_udp::BATCH_SIZE;
/// Kernel buffers asked for each relay socket (the kernel caps them at `net.core.rmem_max`
/// and `wmem_max`): a congestion window released at once waits here while the relay's task
/// waits for a core, instead of being dropped.
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;
/// Bytes of spare payload buffers a thread keeps for reuse.
const SPARE_BYTES: usize = 8 * 1024 * 1024;

thread_local! {
    /// Receive buffers and spare payload buffers of the relays polled on this thread: a
    /// relay reads and routes a batch within one poll, so the thousand relays of a large
    /// simulation share a few sets instead of holding one each.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// See [`SCRATCH`].
#[derive(Default)]
struct Scratch {
    /// [`BATCH`] receive buffers of [`RECV_BUFFER`] bytes, allocated on first use.
    bufs: Vec<Vec<u8>>,
    /// What each buffer received.
    metas: [RecvMeta; BATCH],
    /// Payload buffers to reuse.
    spare: Vec<Vec<u8>>,
    /// Their capacity, at most [`SPARE_BYTES`].
    spare_bytes: usize,
}

impl Scratch {
    /// An empty payload buffer.
    fn take(&mut self) -> Vec<u8> {
        let mut buffer = self.spare.pop().unwrap_or_default();
        self.spare_bytes -= buffer.capacity();
        buffer.clear();
        buffer
    }

    /// Keeps `buffer` for [`Scratch::take`], unless enough are kept.
    fn recycle(&mut self, buffer: Vec<u8>) {
        if self.spare_bytes + buffer.capacity() <= SPARE_BYTES {
            self.spare_bytes += buffer.capacity();
            self.spare.push(buffer);
        }
    }
}

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
    /// Datagrams lost because the emulator fell behind: dropped by the kernel at a relay
    /// socket's full receive buffer (Linux, from `/proc/net/udp`) or refused by a full send
    /// buffer. Not part of any link's loss: a run with many is measuring the emulator.
    pub dropped_overflow: u64,
}

/// One node as the emulator sees it.
#[derive(Debug)]
struct Slot {
    /// Cloud index.
    cloud: usize,
    /// Real QUIC socket of the node, once known.
    real: RwLock<Option<SocketAddr>>,
    /// The node's front socket (its relay address, what peers dial).
    front: Arc<RelaySocket>,
    /// The node's back socket (where its peers see it).
    back: Arc<RelaySocket>,
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
    /// Sends refused by a full send buffer.
    dropped_send: AtomicU64,
}

/// Handle to the emulator; cheap to clone. Its sockets live until [`Emulator::shutdown`].
#[derive(Clone, Debug)]
pub struct Emulator {
    /// Shared state.
    inner: Arc<Inner>,
}

/// A relay socket: tokio's for readiness, quinn-udp's state for batched and segmented I/O.
#[derive(Debug)]
struct RelaySocket {
    /// The socket.
    io: UdpSocket,
    /// GRO and GSO support, as quinn-udp found it.
    state: UdpSocketState,
}

impl RelaySocket {
    /// A socket on 127.0.0.1 with large kernel buffers.
    fn bind() -> std::io::Result<Self> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        // Best effort: the kernel caps these, and a smaller buffer only drops bursts sooner.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&socket).into())?;
        let io = UdpSocket::from_std(socket.into())?;
        Ok(Self { io, state })
    }

    /// Sends `data`, datagrams of `segment` bytes (the last one may be shorter), to `to`;
    /// false if the send buffer was full.
    fn try_send(
        &self,
        to: SocketAddr,
        data: &[u8],
        segment: usize,
        ecn: Option<EcnCodepoint>,
    ) -> bool {
        let per_call = self.state.max_gso_segments().max(1) * segment;
        data.chunks(per_call).all(|contents| {
            let transmit = Transmit {
                destination: to,
                ecn,
                contents,
                segment_size: (contents.len() > segment).then_some(segment),
                src_ip: None,
            };
            self.io
                .try_io(Interest::WRITABLE, || {
                    self.state.try_send((&self.io).into(), &transmit)
                })
                .is_ok()
        })
    }
}

/// A batch of datagrams waiting for its delivery time.
#[derive(Debug)]
struct Pending {
    /// When it is due.
    at: Instant,
    /// Arrival order, so that equal times keep it.
    seq: u64,
    /// Socket to send from.
    out: Arc<RelaySocket>,
    /// Node to deliver to (its real address is looked up at delivery, so restarts work).
    to: usize,
    /// Payloads: datagrams of `segment` bytes, the last one possibly shorter.
    data: Vec<u8>,
    /// Size of each datagram in `data`.
    segment: usize,
    /// ECN codepoint they arrived with.
    ecn: Option<EcnCodepoint>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
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
                dropped_send: AtomicU64::new(0),
            }),
        }
    }

    /// Adds a node in `cloud`; returns its index and relay address.
    pub async fn add_node(&self, cloud: usize) -> std::io::Result<(usize, SocketAddr)> {
        let front = Arc::new(RelaySocket::bind()?);
        let back = Arc::new(RelaySocket::bind()?);
        let addr = front.io.local_addr()?;
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
            dropped_overflow: i.dropped_send.load(Ordering::Relaxed) + self.kernel_drops(),
        }
    }

    /// Datagrams the kernel dropped at the relay sockets' full receive buffers (0 where
    /// `/proc/net/udp` cannot be read).
    fn kernel_drops(&self) -> u64 {
        let ports: Vec<u16> = self
            .inner
            .slots
            .read()
            .expect("lock")
            .iter()
            .flat_map(|s| [&s.front, &s.back])
            .filter_map(|socket| socket.io.local_addr().ok().map(|a| a.port()))
            .collect();
        std::fs::read_to_string("/proc/net/udp")
            .map(|table| udp_drops(&table, &ports))
            .unwrap_or(0)
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

/// What a relay keeps between batches.
struct Relay {
    /// Shared state.
    inner: Arc<Inner>,
    /// Which socket this is.
    role: Role,
    /// Fates of its datagrams.
    rng: ChaCha8Rng,
    /// Batches not yet due, earliest first.
    queue: BinaryHeap<Reverse<Pending>>,
    /// Arrival counter, for [`Pending::seq`].
    seq: u64,
    /// Latest delivery time per (from, to) direction handled here: no reordering.
    last: HashMap<(usize, usize), Instant>,
}

/// Receives on one socket and schedules each datagram for delivery.
async fn relay(inner: Arc<Inner>, socket: Arc<RelaySocket>, role: Role, rng: ChaCha8Rng) {
    let mut relay = Relay {
        inner,
        role,
        rng,
        queue: BinaryHeap::new(),
        seq: 0,
        last: HashMap::new(),
    };
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    let mut armed: Option<Instant> = None;
    loop {
        let next = relay.queue.peek().map(|Reverse(p)| p.at);
        if next != armed {
            if let Some(at) = next {
                timer.as_mut().reset(at);
            }
            armed = next;
        }
        tokio::select! {
            // Reads and routes one batch; `Err` when nothing was waiting or the read failed.
            _ = socket.io.async_io(Interest::READABLE, || {
                SCRATCH.with_borrow_mut(|scratch| relay.receive(&socket, scratch))
            }) => {}
            () = &mut timer, if armed.is_some() => {
                armed = None;
                SCRATCH.with_borrow_mut(|scratch| relay.deliver_due(Instant::now(), scratch));
            }
        }
    }
}

impl Relay {
    /// Reads a batch from `socket` and routes each datagram or GRO batch in it.
    fn receive(&mut self, socket: &RelaySocket, scratch: &mut Scratch) -> std::io::Result<()> {
        if scratch.bufs.is_empty() {
            scratch.bufs = vec![vec![0u8; RECV_BUFFER]; BATCH];
        }
        let mut bufs = std::mem::take(&mut scratch.bufs);
        let received = {
            let mut iovs: Vec<IoSliceMut<'_>> =
                bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            socket
                .state
                .recv((&socket.io).into(), &mut iovs, &mut scratch.metas)
        };
        if let Ok(n) = received {
            let metas = scratch.metas;
            for (buf, meta) in bufs.iter().zip(&metas).take(n) {
                self.route(&buf[..meta.len], meta, scratch);
            }
        }
        scratch.bufs = bufs;
        received.map(|_| ())
    }

    /// Applies the link to one received datagram or GRO batch from `meta.addr`.
    fn route(&mut self, data: &[u8], meta: &RecvMeta, scratch: &mut Scratch) {
        let inner = &self.inner;
        let (Role::Front { owner: to } | Role::Back { owner: to }) = self.role;
        let segment = if meta.stride == 0 {
            data.len()
        } else {
            meta.stride
        }
        .max(1);
        let datagrams = data.len().div_ceil(segment) as u64;
        let from = inner.by_real.read().expect("lock").get(&meta.addr).copied();
        let Some(from) = from else {
            inner
                .dropped_unknown
                .fetch_add(datagrams, Ordering::Relaxed);
            return;
        };
        let (Some(from_slot), Some(to_slot)) = (inner.slot(from), inner.slot(to)) else {
            return;
        };
        let out = match self.role {
            Role::Front { .. } => from_slot.back.clone(),
            Role::Back { .. } => from_slot.front.clone(),
        };
        from_slot
            .counters
            .bytes_sent
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let (params, partitioned) = inner.link(from_slot.cloud, to_slot.cloud);
        if partitioned {
            inner
                .dropped_partition
                .fetch_add(datagrams, Ordering::Relaxed);
            return;
        }
        let mut delay = params.latency;
        if !params.jitter.is_zero() {
            let j = params.jitter.as_secs_f64();
            let d = params.latency.as_secs_f64() + self.rng.random_range(-j..=j);
            delay = Duration::from_secs_f64(d.max(0.0));
        }
        let now = Instant::now();
        let mut at = now + delay;
        if let Some(prev) = self.last.get(&(from, to)) {
            at = at.max(*prev);
        }
        let lossy = params.loss > 0.0;
        if at <= now && !lossy {
            deliver(inner, &out, to, data, segment, meta.ecn);
            return;
        }
        // Survivors, in order: equal-sized datagrams, a shorter last one staying last, so
        // the batch still leaves in one segmented send.
        let mut kept = scratch.take();
        if lossy {
            let mut lost = 0;
            for datagram in data.chunks(segment) {
                if self.rng.random_bool(params.loss.min(1.0)) {
                    lost += 1;
                } else {
                    kept.extend_from_slice(datagram);
                }
            }
            inner.dropped_loss.fetch_add(lost, Ordering::Relaxed);
        } else {
            kept.extend_from_slice(data);
        }
        if at <= now || kept.is_empty() {
            deliver(inner, &out, to, &kept, segment, meta.ecn);
            scratch.recycle(kept);
            return;
        }
        self.last.insert((from, to), at);
        self.seq += 1;
        self.queue.push(Reverse(Pending {
            at,
            seq: self.seq,
            out,
            to,
            data: kept,
            segment,
            ecn: meta.ecn,
        }));
    }

    /// Sends every batch due by `now`.
    fn deliver_due(&mut self, now: Instant, scratch: &mut Scratch) {
        while self.queue.peek().is_some_and(|Reverse(p)| p.at <= now) {
            let Some(Reverse(p)) = self.queue.pop() else {
                break;
            };
            deliver(&self.inner, &p.out, p.to, &p.data, p.segment, p.ecn);
            scratch.recycle(p.data);
        }
        if self.queue.is_empty() {
            self.last.clear();
        }
    }
}

/// Sends `data` (datagrams of `segment` bytes) to node `to` out of `out`.
fn deliver(
    inner: &Inner,
    out: &RelaySocket,
    to: usize,
    data: &[u8],
    segment: usize,
    ecn: Option<EcnCodepoint>,
) {
    if data.is_empty() {
        return;
    }
    let Some(slot) = inner.slot(to) else { return };
    let Some(real) = *slot.real.read().expect("lock") else {
        return;
    };
    let datagrams = data.len().div_ceil(segment) as u64;
    // A full socket buffer is a loss, as on a real link.
    if out.try_send(real, data, segment, ecn) {
        slot.counters
            .bytes_received
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        inner.delivered.fetch_add(datagrams, Ordering::Relaxed);
    } else {
        inner.dropped_send.fetch_add(datagrams, Ordering::Relaxed);
    }
}

/// The `drops` column of the 127.0.0.1 sockets bound to `ports` in `/proc/net/udp`, summed.
fn udp_drops(table: &str, ports: &[u16]) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (ip, port) = fields.get(1)?.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            (ip == "0100007F" && ports.contains(&port))
                .then(|| fields.get(12)?.parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_drops_are_read_from_the_relay_sockets_rows() {
        let table = "\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  101: 0100007F:B2F1 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1001 2 0000000000000000 258
  102: 0100007F:9C6B 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1002 2 0000000000000000 7
  103: 00000000:B2F1 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1003 2 0000000000000000 1000
";
        assert_eq!(udp_drops(table, &[0xB2F1, 0x9C6B]), 265);
        assert_eq!(udp_drops(table, &[0x9C6B]), 7);
        assert_eq!(udp_drops(table, &[1]), 0);
    }

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
