//! The peer policy: which peers to dial, which connections to close, when to sync with whom,
//! and how much a peer's misbehaviour should cost its gossip score.
//!
//! A sans-I/O state machine in the style of iroh-gossip's `proto`: the node actor reports
//! what happened (`on_connected`, `on_dial_failed`, `on_sync_finished`, ...) with the current
//! time, calls [`PeerPolicy::tick`] periodically, and executes the [`Action`]s it gets back.
//! Peer ids and addresses are type parameters, so this module knows nothing of libp2p;
//! randomness is passed in as a seed.
//!
//! What it keeps per peer is bounded by the number of connected peers, the configured
//! bootstrap list and [`MAX_REMEMBERED`] entries each of dial failures, closed connections,
//! sync backoffs and penalties.
//!
//! [`duplicates`] says which of several connections to one peer to close.

pub mod duplicates;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;

/// Most peers remembered beyond the connected ones (failed dials, penalties, sync backoffs).
pub const MAX_REMEMBERED: usize = 4096;

/// The knobs of the policy. The defaults are the production settings.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// Peers a node tries to stay connected to; below this it dials peers named in node
    /// records or found through the routing table.
    pub target_peers: usize,
    /// Above this many peers a node closes unused connections. The gap between
    /// `target_peers` (dial below) and this (close above) keeps the two from fighting: nodes
    /// that dial up to the target leave many others with a few more than that, and closing
    /// those down to the target would push the dialers below it, who would dial again.
    pub peers_high: usize,
    /// How often a node short of peers looks for more in the node records it holds.
    pub discover_every: Duration,
    /// Most node records one look reads: a random sample of those held, so that a look
    /// costs the same whether the mesh has fifty nodes or five thousand.
    pub discovery_sample: usize,
    /// A peer whose dial failed is not dialed again from its node record for this long.
    pub dial_retry: Duration,
    /// First delay between redials of a bootstrap peer.
    pub redial_min: Duration,
    /// Longest delay between redials of a bootstrap peer (the delay doubles up to this).
    pub redial_max: Duration,
    /// A connection that is neither in the gossip mesh, nor to a bootstrap peer, nor used by
    /// sync or contracts for this long is closed while the node has more than `peers_high`
    /// peers (gossipsub keeps a stream open on every connection, so the idle timeout never
    /// closes one).
    pub unused_grace: Duration,
    /// How often unused connections are looked for.
    pub trim_every: Duration,
    /// A peer whose unused connection was closed and that connects again within this long
    /// is kept: it dials on purpose (this node is its bootstrap peer), and closing it again
    /// would only make it redial, a connection every `unused_grace` for good.
    pub trim_memory: Duration,
    /// Most connections closed per look.
    pub trim_per_round: usize,
    /// Most sync sessions in flight. Each new connection starts one; during a burst of
    /// connections the others are left to the periodic round.
    pub max_syncs_in_flight: usize,
    /// Delay before syncing again with a peer whose answer was cut short but brought news.
    pub sync_retry_min: Duration,
    /// Longest delay before syncing again with a peer whose answers are cut short without
    /// bringing anything new, or whose sync failed (the delay doubles up to this).
    pub sync_retry_max: Duration,
    /// Penalty points halve over this time.
    pub penalty_half_life: Duration,
    /// A peer with at least this many penalty points is not asked for syncs.
    pub sync_penalty_limit: f64,
    /// How often decayed scores are handed to the gossip layer.
    pub score_refresh: Duration,
    /// Sync requests one peer may have answered in a burst (a fresh node's session takes a
    /// few dozen rounds).
    pub sync_answer_burst: f64,
    /// Sync requests per second one peer may have answered on average; beyond, it gets an
    /// empty answer marked truncated, and backs off.
    pub sync_answer_rate: f64,
    /// Bytes of sync answers one peer may have in a burst. A request of a few bytes (one
    /// that claims to hold nothing) asks for an answer of up to 8 MiB, so answers are
    /// charged by their size too: what a peer can make a node send, and hold in answers
    /// not yet read, is this plus `sync_answer_bytes_rate` a second.
    pub sync_answer_bytes_burst: f64,
    /// Bytes of sync answers per second one peer may have on average; an answer is cut at
    /// what is left (marked truncated, so the peer backs off), and none is built below
    /// [`MIN_SYNC_ANSWER_BYTES`].
    pub sync_answer_bytes_rate: f64,
    /// Most periodic rounds left out in a row while sessions find nothing new. After `k`
    /// quiet sessions in a row the node leaves out the next `2^k - 1` rounds, up to this
    /// many; a session that stores anything (gossip had missed it) brings it back to every
    /// round. A mesh whose gossip reaches everyone then costs a sync per node every
    /// `1 + this` intervals (every 80 s with the defaults), and a node that gossip misses
    /// finds out within as many.
    pub quiet_rounds_skipped: u32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            target_peers: 8,
            peers_high: 24,
            discover_every: Duration::from_secs(2),
            discovery_sample: 32,
            dial_retry: Duration::from_secs(60),
            redial_min: Duration::from_millis(500),
            redial_max: Duration::from_secs(30),
            unused_grace: Duration::from_secs(30),
            trim_every: Duration::from_secs(2),
            trim_memory: Duration::from_secs(600),
            trim_per_round: 16,
            max_syncs_in_flight: 4,
            sync_retry_min: Duration::from_secs(1),
            sync_retry_max: Duration::from_secs(60),
            penalty_half_life: Duration::from_secs(600),
            sync_penalty_limit: 8.0,
            score_refresh: Duration::from_secs(5),
            sync_answer_burst: 64.0,
            sync_answer_rate: 4.0,
            sync_answer_bytes_burst: 64.0 * 1024.0 * 1024.0,
            sync_answer_bytes_rate: 8.0 * 1024.0 * 1024.0,
            quiet_rounds_skipped: 7,
        }
    }
}

/// What the node should do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action<P, A> {
    /// Dial a configured bootstrap address.
    DialAddr(A),
    /// Dial a peer at these addresses; empty: at whatever addresses the routing table has.
    DialPeer {
        /// The peer.
        peer: P,
        /// Its addresses, from its signed node record.
        addrs: Vec<A>,
    },
    /// Close every connection to the peer.
    Disconnect(P),
    /// Start a sync session with the peer.
    Sync(P),
    /// Set the peer's application-specific gossip score.
    SetScore {
        /// The peer.
        peer: P,
        /// Its new score: zero or negative.
        score: f64,
    },
}

/// A look for peers in the node records: how many to dial, and which records to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// Most peers to dial.
    pub wanted: usize,
    /// Positions of the records to read, in the order the node keeps them (by key):
    /// distinct, ascending, at most `discovery_sample` of them.
    pub positions: Vec<usize>,
}

/// How a sync session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Both sides agree (as far as the session's bounds could tell); `progress` if this
    /// side stored anything on the way.
    Complete {
        /// Whether anything new was stored from it.
        progress: bool,
    },
    /// The answer was cut short by its size limit; `progress` if it brought new entries.
    Truncated {
        /// Whether anything new was stored from it.
        progress: bool,
    },
    /// The request failed, timed out, or the answer was refused.
    Failed,
}

/// A configured bootstrap address and its redial schedule.
#[derive(Clone, Debug)]
struct Bootstrap<P, A> {
    /// Address to dial.
    addr: A,
    /// Peer id, if the address names it or once learnt on connect.
    peer: Option<P>,
    /// Delay before the next attempt after a failure.
    backoff: Duration,
    /// Earliest next attempt.
    next_attempt: Instant,
}

/// A connected peer.
#[derive(Clone, Debug)]
struct Connected {
    /// Last sync or contract message either way (or the connection time).
    last_used: Instant,
    /// Never closed as unused: it came back after we closed it once.
    keep: bool,
    /// This node dialed one of the connections.
    dialed: bool,
    /// Sync answers it may still ask for.
    answers: AnswerBucket,
}

/// Fewest bytes an answer is built with: below, the peer gets an empty answer marked
/// truncated, as when it asks too often.
pub const MIN_SYNC_ANSWER_BYTES: usize = 64 * 1024;

/// The sync answers one peer may still ask for: token buckets of answers
/// (`sync_answer_burst`, refilled at `sync_answer_rate`) and of their bytes
/// (`sync_answer_bytes_burst`, refilled at `sync_answer_bytes_rate`), as of `at`. It outlives
/// the peer's connections, so that reconnecting does not refill it.
#[derive(Clone, Copy, Debug)]
struct AnswerBucket {
    /// Answers left.
    tokens: f64,
    /// Bytes left.
    bytes: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

impl AnswerBucket {
    /// The bucket as of `now`, refilled for the time since it was last brought up to date.
    fn refilled(self, config: &PolicyConfig, now: Instant) -> AnswerBucket {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        AnswerBucket {
            tokens: (self.tokens + elapsed * config.sync_answer_rate).min(config.sync_answer_burst),
            bytes: (self.bytes + elapsed * config.sync_answer_bytes_rate)
                .min(config.sync_answer_bytes_burst),
            at: now,
        }
    }

    /// A full bucket as of `now`.
    fn new(config: &PolicyConfig, now: Instant) -> AnswerBucket {
        AnswerBucket {
            tokens: config.sync_answer_burst,
            bytes: config.sync_answer_bytes_burst,
            at: now,
        }
    }

    /// Whether the bucket is full as of `now`, which is the same as having no bucket.
    fn full(self, config: &PolicyConfig, now: Instant) -> bool {
        let b = self.refilled(config, now);
        b.tokens >= config.sync_answer_burst && b.bytes >= config.sync_answer_bytes_burst
    }
}

/// When a peer may be synced with again.
#[derive(Clone, Copy, Debug)]
struct SyncRetry {
    /// Current delay.
    backoff: Duration,
    /// Not before this.
    not_before: Instant,
    /// A sync is due at `not_before` (a truncated answer asks for the rest).
    due: bool,
}

/// Penalty points of a peer, decaying over time.
#[derive(Clone, Copy, Debug)]
struct Penalty {
    /// Points at `at`.
    points: f64,
    /// When `points` was computed.
    at: Instant,
}

/// The peer policy state machine. See the module docs.
#[derive(Debug)]
pub struct PeerPolicy<P, A> {
    /// The knobs.
    config: PolicyConfig,
    /// Our own id, never dialed.
    me: P,
    /// Connected peers.
    connected: HashMap<P, Connected>,
    /// Configured bootstrap peers.
    bootstrap: Vec<Bootstrap<P, A>>,
    /// Peers being dialed from records or the routing table; counted against the target
    /// so a burst of routing updates does not dial the whole mesh at once.
    dialing: HashSet<P>,
    /// Peers whose last dial failed, and when they may be dialed again from their record.
    dial_failed: HashMap<P, Instant>,
    /// Peers whose unused connection was closed, and until when one that connects again
    /// is kept.
    trimmed: HashMap<P, Instant>,
    /// Next look for peers in the node records.
    next_discovery: Instant,
    /// Last look for unused connections.
    last_trim: Instant,
    /// Peers with a sync session in flight.
    syncing: BTreeSet<P>,
    /// Sync backoffs of peers whose sessions were cut short or failed.
    sync_retry: HashMap<P, SyncRetry>,
    /// Connected peers that relayed something held back by its signer's gossip rate, and
    /// when to sync with them (see [`PeerPolicy::sync_after`]).
    held_back: HashMap<P, Instant>,
    /// Penalty points of peers that sent what our validation rejects.
    penalties: HashMap<P, Penalty>,
    /// Sync-answer buckets of disconnected peers that were not full when they left.
    spent_answers: HashMap<P, AnswerBucket>,
    /// Last time decayed scores were handed out.
    last_score_refresh: Instant,
    /// Sync sessions in a row that found nothing new.
    quiet_sessions: u32,
    /// Periodic rounds still to leave out.
    rounds_to_skip: u32,
}

impl<P, A> PeerPolicy<P, A>
where
    P: Clone + Eq + Hash + Ord + std::fmt::Debug,
    A: Clone + PartialEq + std::fmt::Debug,
{
    /// A policy for node `me` with its bootstrap addresses (and the peer each names, if any).
    pub fn new(
        config: PolicyConfig,
        me: P,
        bootstrap: impl IntoIterator<Item = (A, Option<P>)>,
        now: Instant,
    ) -> Self {
        let bootstrap = bootstrap
            .into_iter()
            .map(|(addr, peer)| Bootstrap {
                addr,
                peer,
                backoff: config.redial_min,
                next_attempt: now,
            })
            .collect();
        Self {
            config,
            me,
            connected: HashMap::new(),
            bootstrap,
            dialing: HashSet::new(),
            dial_failed: HashMap::new(),
            trimmed: HashMap::new(),
            next_discovery: now,
            last_trim: now,
            syncing: BTreeSet::new(),
            sync_retry: HashMap::new(),
            held_back: HashMap::new(),
            penalties: HashMap::new(),
            spent_answers: HashMap::new(),
            last_score_refresh: now,
            quiet_sessions: 0,
            rounds_to_skip: 0,
        }
    }

    /// The knobs.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Connected peers.
    pub fn connected(&self) -> usize {
        self.connected.len()
    }

    /// Whether a sync session with `peer` is in flight.
    pub fn is_syncing(&self, peer: &P) -> bool {
        self.syncing.contains(peer)
    }

    /// Sync sessions in flight.
    pub fn syncs_in_flight(&self) -> usize {
        self.syncing.len()
    }

    /// A connection to `peer` was established; `remote` is the address it came from or
    /// went to, `first` whether it is the first connection to this peer, `dialed` whether
    /// this node dialed it (the peer dialed the others, for reasons of its own).
    pub fn on_connected(
        &mut self,
        peer: P,
        remote: &A,
        first: bool,
        dialed: bool,
        now: Instant,
    ) -> Vec<Action<P, A>> {
        self.dialing.remove(&peer);
        self.dial_failed.remove(&peer);
        for b in &mut self.bootstrap {
            if b.peer.is_none() && b.addr == *remote {
                b.peer = Some(peer.clone());
            }
            if b.peer.as_ref() == Some(&peer) {
                b.backoff = self.config.redial_min;
            }
        }
        let keep = self.trimmed.remove(&peer).is_some_and(|until| now < until);
        if !self.connected.contains_key(&peer) {
            let answers = self
                .spent_answers
                .remove(&peer)
                .unwrap_or_else(|| AnswerBucket::new(&self.config, now));
            self.connected.insert(
                peer.clone(),
                Connected {
                    last_used: now,
                    keep,
                    dialed,
                    answers,
                },
            );
        }
        let connected = self.connected.get_mut(&peer).expect("inserted above");
        connected.dialed |= dialed;
        let mut actions = Vec::new();
        if first && self.may_sync(&peer, now) {
            actions.extend(self.start_sync(peer));
        }
        actions
    }

    /// A connection to `peer` closed; `remaining` connections to it are still open.
    pub fn on_disconnected(&mut self, peer: &P, remaining: u32, now: Instant) {
        if remaining > 0 {
            return;
        }
        if let Some(gone) = self.connected.remove(peer) {
            self.remember_answers(peer, gone.answers, now);
        }
        self.syncing.remove(peer);
        self.held_back.remove(peer);
        for b in &mut self.bootstrap {
            if b.peer.as_ref() == Some(peer) {
                b.next_attempt = now + b.backoff;
            }
        }
    }

    /// Keeps the sync-answer bucket of `peer`, which disconnected, unless it is full. At most
    /// [`MAX_REMEMBERED`] are kept: full ones are dropped first, then the fullest.
    fn remember_answers(&mut self, peer: &P, answers: AnswerBucket, now: Instant) {
        let config = &self.config;
        if answers.full(config, now) {
            return;
        }
        if self.spent_answers.len() >= MAX_REMEMBERED {
            self.spent_answers.retain(|_, b| !b.full(config, now));
        }
        if self.spent_answers.len() >= MAX_REMEMBERED {
            let fullest = self
                .spent_answers
                .iter()
                .max_by(|(_, a), (_, b)| {
                    let (a, b) = (a.refilled(config, now), b.refilled(config, now));
                    a.tokens.total_cmp(&b.tokens)
                })
                .map(|(p, _)| p.clone());
            if let Some(fullest) = fullest {
                self.spent_answers.remove(&fullest);
            }
        }
        self.spent_answers.insert(peer.clone(), answers);
    }

    /// A dial of `peer` failed: not again from its record for `dial_retry`.
    pub fn on_dial_failed(&mut self, peer: P, now: Instant) {
        self.dialing.remove(&peer);
        if self.dial_failed.len() >= MAX_REMEMBERED {
            self.dial_failed.retain(|_, at| *at > now);
        }
        if self.dial_failed.len() < MAX_REMEMBERED {
            self.dial_failed.insert(peer, now + self.config.dial_retry);
        }
    }

    /// A dial the policy asked for could not even start: forget it.
    pub fn on_dial_not_started(&mut self, peer: &P) {
        self.dialing.remove(peer);
    }

    /// Whether to answer a sync request from `peer` now, and with at most how many bytes:
    /// token buckets per peer of answers (`sync_answer_burst`, refilled at
    /// `sync_answer_rate`) and of bytes (`sync_answer_bytes_burst`, refilled at
    /// `sync_answer_bytes_rate`), kept across its reconnections. `None`: no answer (over
    /// either budget, fewer than [`MIN_SYNC_ANSWER_BYTES`] left, or not known as connected).
    /// The answer built is charged with [`PeerPolicy::charge_sync_answer`].
    pub fn allow_sync_answer(&mut self, peer: &P, now: Instant) -> Option<usize> {
        let c = self.connected.get_mut(peer)?;
        c.answers = c.answers.refilled(&self.config, now);
        if c.answers.tokens < 1.0 || c.answers.bytes < MIN_SYNC_ANSWER_BYTES as f64 {
            return None;
        }
        c.answers.tokens -= 1.0;
        Some(c.answers.bytes as usize)
    }

    /// Charges `peer`'s byte budget with an answer of `bytes` it was allowed.
    pub fn charge_sync_answer(&mut self, peer: &P, bytes: usize) {
        if let Some(c) = self.connected.get_mut(peer) {
            c.answers.bytes = (c.answers.bytes - bytes as f64).max(0.0);
        }
    }

    /// A sync or contract message went either way with `peer`.
    pub fn on_used(&mut self, peer: &P, now: Instant) {
        if let Some(c) = self.connected.get_mut(peer) {
            c.last_used = now;
        }
    }

    /// The routing table learnt of `peer`: dial it while short of peers.
    pub fn on_routing_updated(&mut self, peer: P) -> Vec<Action<P, A>> {
        if self.connected.len() + self.dialing.len() >= self.config.target_peers
            || self.connected.contains_key(&peer)
            || self.dialing.contains(&peer)
            || self.dial_failed.contains_key(&peer)
            || peer == self.me
        {
            return Vec::new();
        }
        self.dialing.insert(peer.clone());
        vec![Action::DialPeer {
            peer,
            addrs: Vec::new(),
        }]
    }

    /// Whether a look for peers may be wanted now (short of peers, and time to look): a cheap
    /// check before the node counts its records for [`PeerPolicy::discovery_wanted`].
    pub fn discovery_due(&self, now: Instant) -> bool {
        now >= self.next_discovery
            && self.connected.len() + self.dialing.len() < self.config.target_peers
    }

    /// Whether to look for peers in the node records now, and if so how many to dial and
    /// which records to read: the node loads those and calls [`PeerPolicy::choose_dials`].
    /// `known_nodes` is how many node records it holds (its own included): connected to all
    /// of them, there is no one left to find and no record is read. The records to read are
    /// a random sample (from `seed`) of at most `discovery_sample`, whatever `known_nodes`.
    pub fn discovery_wanted(
        &mut self,
        known_nodes: usize,
        now: Instant,
        seed: u64,
    ) -> Option<Discovery> {
        let busy = self.connected.len() + self.dialing.len();
        let wanted = self.config.target_peers.saturating_sub(busy);
        if wanted == 0 || now < self.next_discovery {
            return None;
        }
        self.next_discovery = now + self.config.discover_every;
        if busy + 1 >= known_nodes {
            return None;
        }
        self.dial_failed.retain(|_, retry_at| *retry_at > now);
        Some(Discovery {
            wanted,
            positions: sample_positions(known_nodes, self.config.discovery_sample, seed),
        })
    }

    /// Picks up to `wanted` peers at random (from `seed`) among `candidates` (peer, dialable
    /// addresses): not us, not connected, not being dialed, not failed recently, with an
    /// address.
    pub fn choose_dials(
        &mut self,
        candidates: impl IntoIterator<Item = (P, Vec<A>)>,
        wanted: usize,
        seed: u64,
    ) -> Vec<Action<P, A>> {
        let mut eligible: Vec<(u64, P, Vec<A>)> = candidates
            .into_iter()
            .enumerate()
            .filter(|(_, (peer, addrs))| {
                *peer != self.me
                    && !addrs.is_empty()
                    && !self.connected.contains_key(peer)
                    && !self.dialing.contains(peer)
                    && !self.dial_failed.contains_key(peer)
            })
            .map(|(i, (peer, addrs))| (mix(seed ^ (i as u64)), peer, addrs))
            .collect();
        eligible.sort_by_key(|(rank, _, _)| *rank);
        eligible.dedup_by(|a, b| a.1 == b.1);
        eligible
            .into_iter()
            .take(wanted)
            .map(|(_, peer, addrs)| {
                self.dialing.insert(peer.clone());
                Action::DialPeer { peer, addrs }
            })
            .collect()
    }

    /// Periodic work: bootstrap redials, due syncs, unused connections to close, decayed
    /// scores. `in_mesh` says whether a peer is in the gossip mesh (never closed).
    pub fn tick(&mut self, now: Instant, in_mesh: impl Fn(&P) -> bool) -> Vec<Action<P, A>> {
        let mut actions = Vec::new();
        for b in &mut self.bootstrap {
            let connected = b
                .peer
                .as_ref()
                .is_some_and(|p| self.connected.contains_key(p));
            if connected || b.peer.as_ref() == Some(&self.me) || now < b.next_attempt {
                continue;
            }
            actions.push(Action::DialAddr(b.addr.clone()));
            b.next_attempt = now + b.backoff;
            b.backoff = (b.backoff * 2).min(self.config.redial_max);
        }
        let due: Vec<P> = self
            .sync_retry
            .iter()
            .filter(|(p, r)| r.due && now >= r.not_before && self.connected.contains_key(*p))
            .map(|(p, _)| p.clone())
            .collect();
        for peer in due {
            if self.may_sync(&peer, now) {
                if let Some(r) = self.sync_retry.get_mut(&peer) {
                    r.due = false;
                }
                actions.extend(self.start_sync(peer));
            }
        }
        let held_back: Vec<P> = self
            .held_back
            .iter()
            .filter(|(_, at)| now >= **at)
            .map(|(p, _)| p.clone())
            .collect();
        for peer in held_back {
            // Due once: a sync in flight brings the news too, a backoff or a penalty says
            // not now.
            self.held_back.remove(&peer);
            if self.may_sync(&peer, now) {
                actions.extend(self.start_sync(peer));
            }
        }
        actions.extend(self.trim(now, in_mesh));
        if now.duration_since(self.last_score_refresh) >= self.config.score_refresh {
            self.last_score_refresh = now;
            actions.extend(self.refresh_scores(now));
        }
        actions
    }

    /// When [`PeerPolicy::tick`] (and [`PeerPolicy::discovery_due`]) next has something to
    /// do: the earliest of a bootstrap redial, a due sync retry, a look for unused
    /// connections while above `peers_high`, the decay of penalties handed out, and a look
    /// for peers while short of them; at the latest `now + idle`. A settled node (bootstrap
    /// peers connected, enough peers, nothing to retry or decay) needs no tick before
    /// `now + idle`; what events change meanwhile (a disconnect, a penalty) waits for the
    /// next tick, so `idle` bounds how late it is handled.
    pub fn next_tick(&self, now: Instant, idle: Duration) -> Instant {
        let bootstrap = self
            .bootstrap
            .iter()
            .filter(|b| {
                b.peer
                    .as_ref()
                    .is_none_or(|p| *p != self.me && !self.connected.contains_key(p))
            })
            .map(|b| b.next_attempt);
        let retries = self
            .sync_retry
            .iter()
            .filter(|(p, r)| r.due && self.connected.contains_key(*p))
            .map(|(_, r)| r.not_before);
        let held_back = self.held_back.values().copied();
        let trim = (self.connected.len() > self.config.peers_high)
            .then(|| self.last_trim + self.config.trim_every);
        let decay = (!self.penalties.is_empty())
            .then(|| self.last_score_refresh + self.config.score_refresh);
        let discovery = (self.connected.len() + self.dialing.len() < self.config.target_peers)
            .then_some(self.next_discovery);
        bootstrap
            .chain(retries)
            .chain(held_back)
            .chain(trim)
            .chain(decay)
            .chain(discovery)
            .fold(now + idle, Instant::min)
            .max(now)
    }

    /// The periodic anti-entropy round: a sync with one connected peer chosen at random
    /// (from `seed`) among those not syncing, not backing off and not penalised. Left out
    /// while sessions keep finding nothing new (see [`PolicyConfig::quiet_rounds_skipped`]).
    pub fn sync_round(&mut self, now: Instant, seed: u64) -> Vec<Action<P, A>> {
        if self.rounds_to_skip > 0 {
            self.rounds_to_skip -= 1;
            return Vec::new();
        }
        let mut eligible: Vec<&P> = self
            .connected
            .keys()
            .filter(|p| self.may_sync(p, now))
            .collect();
        if eligible.is_empty() {
            return Vec::new();
        }
        eligible.sort();
        let peer = eligible[(mix(seed) % eligible.len() as u64) as usize].clone();
        self.start_sync(peer)
    }

    /// A sync session with `peer` ended. A truncated answer schedules the next session after
    /// a delay (short while answers bring news, doubling while they do not), never at once.
    pub fn on_sync_finished(&mut self, peer: &P, outcome: SyncOutcome, now: Instant) {
        self.syncing.remove(peer);
        match outcome {
            // Gossip missed something this session found: sync every round again.
            SyncOutcome::Complete { progress: true }
            | SyncOutcome::Truncated { progress: true } => {
                self.quiet_sessions = 0;
                self.rounds_to_skip = 0;
            }
            SyncOutcome::Complete { progress: false } => {
                self.quiet_sessions = self.quiet_sessions.saturating_add(1);
                let skip = 2u32.saturating_pow(self.quiet_sessions) - 1;
                self.rounds_to_skip = skip.min(self.config.quiet_rounds_skipped);
            }
            SyncOutcome::Truncated { progress: false } | SyncOutcome::Failed => {}
        }
        let previous = self.sync_retry.get(peer).map(|r| r.backoff);
        let backoff = match (outcome, previous) {
            (SyncOutcome::Complete { .. }, _) => {
                self.sync_retry.remove(peer);
                return;
            }
            (SyncOutcome::Truncated { progress: true }, _) | (_, None) => {
                self.config.sync_retry_min
            }
            (_, Some(b)) => (b * 2).min(self.config.sync_retry_max),
        };
        if previous.is_none() && self.sync_retry.len() >= MAX_REMEMBERED {
            self.sync_retry.retain(|_, r| r.not_before > now);
            if self.sync_retry.len() >= MAX_REMEMBERED {
                return;
            }
        }
        self.sync_retry.insert(
            peer.clone(),
            SyncRetry {
                backoff,
                not_before: now + backoff,
                due: matches!(outcome, SyncOutcome::Truncated { .. }),
            },
        );
    }

    /// `peer` relayed a message newer than what this node took (held back by its signer's
    /// gossip rate): a sync with `peer` is due `after` from `now`, so the newest version
    /// arrives without waiting for a periodic round that quiet sessions may leave out. One
    /// sync per peer however many messages are held back meanwhile; a backoff set for `peer`
    /// still applies, and any other sync with it (a new connection's) goes ahead as before.
    pub fn sync_after(&mut self, peer: P, after: Duration, now: Instant) {
        // Only connected peers: the map is bounded by the connection limit.
        if self.connected.contains_key(&peer) {
            self.held_back.entry(peer).or_insert(now + after);
        }
    }

    /// `peer` sent something our validation rejects: `points` more penalty points, and its
    /// new gossip score.
    pub fn on_misbehaviour(&mut self, peer: P, points: f64, now: Instant) -> Vec<Action<P, A>> {
        let current = self.penalty(&peer, now);
        if !self.penalties.contains_key(&peer) && self.penalties.len() >= MAX_REMEMBERED {
            // Forget the mildest offender to make room.
            let mildest = self
                .penalties
                .iter()
                .min_by(|a, b| a.1.points.total_cmp(&b.1.points))
                .map(|(p, _)| p.clone());
            if let Some(p) = mildest {
                self.penalties.remove(&p);
            }
        }
        let points = current + points;
        self.penalties
            .insert(peer.clone(), Penalty { points, at: now });
        vec![Action::SetScore {
            peer,
            score: -points,
        }]
    }

    /// `peer`'s penalty points now.
    pub fn penalty(&self, peer: &P, now: Instant) -> f64 {
        self.penalties
            .get(peer)
            .map_or(0.0, |p| self.decayed(p, now))
    }

    fn decayed(&self, p: &Penalty, now: Instant) -> f64 {
        let half_lives = now.duration_since(p.at).as_secs_f64()
            / self.config.penalty_half_life.as_secs_f64().max(1e-3);
        p.points * 0.5f64.powf(half_lives)
    }

    fn refresh_scores(&mut self, now: Instant) -> Vec<Action<P, A>> {
        let mut actions = Vec::new();
        let updated: Vec<(P, f64)> = self
            .penalties
            .iter()
            .map(|(peer, p)| (peer.clone(), self.decayed(p, now)))
            .collect();
        for (peer, points) in updated {
            if points < 0.5 {
                self.penalties.remove(&peer);
                actions.push(Action::SetScore { peer, score: 0.0 });
            } else {
                self.penalties
                    .insert(peer.clone(), Penalty { points, at: now });
                actions.push(Action::SetScore {
                    peer,
                    score: -points,
                });
            }
        }
        actions
    }

    fn may_sync(&self, peer: &P, now: Instant) -> bool {
        self.connected.contains_key(peer)
            && !self.syncing.contains(peer)
            && self.syncing.len() < self.config.max_syncs_in_flight
            && self
                .sync_retry
                .get(peer)
                .is_none_or(|r| now >= r.not_before)
            && self.penalty(peer, now) < self.config.sync_penalty_limit
    }

    fn start_sync(&mut self, peer: P) -> Vec<Action<P, A>> {
        if !self.syncing.insert(peer.clone()) {
            return Vec::new();
        }
        vec![Action::Sync(peer)]
    }

    /// Closes connections nobody uses while above `peers_high`: not in the gossip mesh, not
    /// a bootstrap peer, no sync or contract message for `unused_grace`, no sync in flight,
    /// not closed once already and back since. Peers this node dialed go first (a peer that
    /// dialed wanted the connection, and may be short of peers without it), then the
    /// longest unused, at most `trim_per_round` per look.
    fn trim(&mut self, now: Instant, in_mesh: impl Fn(&P) -> bool) -> Vec<Action<P, A>> {
        let excess = self.connected.len().saturating_sub(self.config.peers_high);
        if excess == 0 || now.duration_since(self.last_trim) < self.config.trim_every {
            return Vec::new();
        }
        self.last_trim = now;
        let mut unused: Vec<(bool, Instant, &P)> = self
            .connected
            .iter()
            .filter(|(peer, c)| {
                !c.keep
                    && now.duration_since(c.last_used) >= self.config.unused_grace
                    && !in_mesh(peer)
                    && !self.syncing.contains(*peer)
                    && !self
                        .bootstrap
                        .iter()
                        .any(|b| b.peer.as_ref() == Some(*peer))
            })
            .map(|(peer, c)| (!c.dialed, c.last_used, peer))
            .collect();
        unused.sort();
        let closed: Vec<P> = unused
            .into_iter()
            .take(excess.min(self.config.trim_per_round))
            .map(|(_, _, peer)| peer.clone())
            .collect();
        if !closed.is_empty() && self.trimmed.len() + closed.len() > MAX_REMEMBERED {
            self.trimmed.retain(|_, until| *until > now);
        }
        let until = now + self.config.trim_memory;
        for peer in &closed {
            if self.trimmed.len() < MAX_REMEMBERED {
                self.trimmed.insert(peer.clone(), until);
            }
        }
        closed.into_iter().map(Action::Disconnect).collect()
    }
}

/// `count` distinct positions in `0..len` drawn at random from `seed` (all of them when
/// `len <= count`), ascending; the cost depends on `count`, not on `len`.
pub fn sample_positions(len: usize, count: usize, seed: u64) -> Vec<usize> {
    if len <= count {
        return (0..len).collect();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut positions = rand::seq::index::sample(&mut rng, len, count).into_vec();
    positions.sort_unstable();
    positions
}

/// splitmix64: spreads a seed into a well-mixed rank.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Policy = PeerPolicy<u32, &'static str>;

    const ME: u32 = 0;

    fn policy(bootstrap: Vec<(&'static str, Option<u32>)>, t0: Instant) -> Policy {
        PeerPolicy::new(PolicyConfig::default(), ME, bootstrap, t0)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn dials(actions: &[Action<u32, &'static str>]) -> Vec<u32> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::DialPeer { peer, .. } => Some(*peer),
                _ => None,
            })
            .collect()
    }

    fn candidates(range: std::ops::Range<u32>) -> Vec<(u32, Vec<&'static str>)> {
        range.map(|p| (p, vec!["addr"])).collect()
    }

    /// The peers `actions` start a sync with.
    fn syncs(actions: Vec<Action<u32, &'static str>>) -> Vec<u32> {
        actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Sync(peer) => Some(peer),
                _ => None,
            })
            .collect()
    }

    /// The peers `actions` disconnect.
    fn disconnects(actions: Vec<Action<u32, &'static str>>) -> Vec<u32> {
        actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Disconnect(peer) => Some(peer),
                _ => None,
            })
            .collect()
    }

    /// How many peers a look wants, if it is time to look.
    fn wanted_now(p: &mut Policy, known: usize, now: Instant) -> Option<usize> {
        p.discovery_wanted(known, now, 7).map(|d| d.wanted)
    }

    #[test]
    fn bootstrap_redials_back_off_and_reset_on_connect() {
        let t0 = Instant::now();
        let mut p = policy(vec![("boot", None)], t0);
        let never = |_: &u32| false;
        // (time offset ms, expected redial)
        let table = [
            (0, true),
            (100, false),
            (500, true), // after 500 ms
            (1400, false),
            (1500, true), // after 1 s more
            (3400, false),
            (3500, true), // after 2 s more
        ];
        for (ms, expected) in table {
            let actions = p.tick(t0 + Duration::from_millis(ms), never);
            assert_eq!(
                actions.contains(&Action::DialAddr("boot")),
                expected,
                "at {ms} ms: {actions:?}"
            );
        }
        // Connected through that address: no redial while connected, and the backoff resets.
        let now = t0 + secs(10);
        p.on_connected(7, &"boot", true, true, now);
        assert!(
            !p.tick(now + secs(60), never)
                .contains(&Action::DialAddr("boot"))
        );
        p.on_disconnected(&7, 0, now + secs(60));
        assert!(
            !p.tick(now + secs(60), never)
                .contains(&Action::DialAddr("boot"))
        );
        assert!(
            p.tick(now + secs(60) + Duration::from_millis(500), never)
                .contains(&Action::DialAddr("boot"))
        );
    }

    #[test]
    fn redial_backoff_is_capped() {
        let t0 = Instant::now();
        let mut p = policy(vec![("boot", None)], t0);
        let mut dialed_at = Vec::new();
        let mut t = t0;
        while t < t0 + secs(200) {
            if p.tick(t, |_| false).contains(&Action::DialAddr("boot")) {
                dialed_at.push(t);
            }
            t += Duration::from_millis(250);
        }
        let gaps: Vec<Duration> = dialed_at.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter()
                .all(|g| *g <= secs(30) + Duration::from_millis(250))
        );
        assert!(gaps.last().unwrap() >= &secs(30));
    }

    #[test]
    fn discovery_fills_up_to_the_target_without_a_dial_storm() {
        let t0 = Instant::now();
        let mut p = policy(vec![], t0);
        // Connected to 3 of 100 known nodes: wants 5 more.
        for peer in 1..=3 {
            p.on_connected(peer, &"x", true, true, t0);
        }
        assert!(p.discovery_due(t0));
        let wanted = wanted_now(&mut p, 100, t0).expect("short of peers");
        assert_eq!(wanted, 5);
        let actions = p.choose_dials(candidates(1..100), wanted, 42);
        let chosen = dials(&actions);
        assert_eq!(chosen.len(), 5);
        assert!(
            chosen.iter().all(|c| *c > 3),
            "connected peers are not dialed"
        );
        // The dials in flight count against the target: nothing more is wanted, not even
        // after the discovery interval, and routing updates dial nobody.
        assert!(!p.discovery_due(t0 + secs(3)));
        assert_eq!(wanted_now(&mut p, 100, t0 + secs(3)), None);
        assert!(p.on_routing_updated(50).is_empty());
        // A failed dial frees its place, at the next look; looks are `discover_every` apart.
        p.on_dial_failed(chosen[0], t0 + secs(3));
        assert_eq!(wanted_now(&mut p, 100, t0 + secs(4)), Some(1));
        assert_eq!(wanted_now(&mut p, 100, t0 + secs(5)), None);
        assert_eq!(wanted_now(&mut p, 100, t0 + secs(6)), Some(1));
    }

    #[test]
    fn a_failed_dial_is_not_retried_for_a_minute() {
        let t0 = Instant::now();
        let mut p = policy(vec![], t0);
        p.on_dial_failed(5, t0);
        // (seconds after the failure, 5 dialable again)
        for (s, expected) in [(1, false), (30, false), (59, false), (61, true)] {
            let now = t0 + secs(s);
            // A fresh policy clock for discovery each time.
            p.next_discovery = now;
            let wanted = wanted_now(&mut p, 100, now).unwrap();
            let chosen = dials(&p.choose_dials(candidates(5..6), wanted, 1));
            assert_eq!(chosen.contains(&5), expected, "{s} s after the failure");
            p.dialing.clear();
        }
        assert!(p.on_routing_updated(ME).is_empty(), "never dials itself");
    }

    #[test]
    fn no_discovery_when_connected_to_everyone_known() {
        let t0 = Instant::now();
        let mut p = policy(vec![], t0);
        p.on_connected(1, &"x", true, true, t0);
        p.on_connected(2, &"x", true, true, t0);
        // Three records known (ours and two peers): nobody left to find.
        assert_eq!(wanted_now(&mut p, 3, t0), None);
        assert_eq!(wanted_now(&mut p, 4, t0 + secs(2)), Some(6));
    }

    #[test]
    fn a_look_reads_a_bounded_random_sample_of_the_records() {
        let t0 = Instant::now();
        let sample = PolicyConfig::default().discovery_sample;
        // (records held, records a look reads)
        for (known, expected) in [(5, 5), (32, 32), (33, 32), (1_000, 32), (1_000_000, 32)] {
            let mut p = policy(vec![], t0);
            let look = p.discovery_wanted(known, t0, 3).expect("short of peers");
            assert_eq!(look.wanted, 8);
            assert_eq!(look.positions.len(), expected, "{known} records");
            assert!(look.positions.len() <= sample);
            assert!(
                look.positions.windows(2).all(|w| w[0] < w[1]),
                "distinct, ascending"
            );
            assert!(look.positions.iter().all(|&i| i < known));
        }
        // Reproducible from the seed, different across seeds, and every record gets read
        // sooner or later.
        assert_eq!(
            sample_positions(1_000, 32, 9),
            sample_positions(1_000, 32, 9)
        );
        assert_ne!(
            sample_positions(1_000, 32, 9),
            sample_positions(1_000, 32, 10)
        );
        let mut seen = vec![0u32; 200];
        for seed in 0..200 {
            for i in sample_positions(200, 32, seed) {
                seen[i] += 1;
            }
        }
        // 32 of 200 per look over 200 looks: 32 expected per record.
        assert!(seen.iter().all(|&n| (10..=60).contains(&n)), "{seen:?}");
    }

    #[test]
    fn choice_is_random_but_reproducible() {
        let t0 = Instant::now();
        let pick = |seed| {
            let mut p = policy(vec![], t0);
            dials(&p.choose_dials(candidates(1..1000), 8, seed))
        };
        assert_eq!(pick(1), pick(1));
        assert_ne!(pick(1), pick(2));
        assert_ne!(pick(1), (1..9).collect::<Vec<_>>());
    }

    #[test]
    fn trimming_has_hysteresis_and_spares_used_mesh_and_bootstrap_peers() {
        let t0 = Instant::now();
        let mut p = policy(vec![("boot", Some(1))], t0);
        let config = PolicyConfig::default();
        // (connected peers, expected closes) with every peer unused for long enough.
        for (n, expected) in [(8usize, 0usize), (24, 0), (25, 1), (30, 6), (60, 16)] {
            let mut p = policy(vec![], t0);
            for peer in 1..=n as u32 {
                p.on_connected(peer, &"x", false, true, t0);
            }
            let now = t0 + config.unused_grace + secs(1);
            let closes = p
                .tick(now, |_| false)
                .into_iter()
                .filter(|a| matches!(a, Action::Disconnect(_)))
                .count();
            assert_eq!(closes, expected, "{n} peers");
        }
        // Above the high mark, only the unused, non-mesh, non-bootstrap peers go.
        for peer in 1..=30 {
            p.on_connected(peer, &"x", false, true, t0);
        }
        let now = t0 + config.unused_grace + secs(1);
        for peer in 2..=10 {
            p.on_used(&peer, now);
        }
        let closed: Vec<u32> = disconnects(p.tick(now, |peer| (11..=20).contains(peer)));
        assert_eq!(closed.len(), 6);
        assert!(closed.iter().all(|p| (21..=30).contains(p)), "{closed:?}");
        // Not again before `trim_every`.
        assert!(
            !p.tick(now + Duration::from_millis(500), |_| false)
                .iter()
                .any(|a| matches!(a, Action::Disconnect(_)))
        );
    }

    #[test]
    fn peers_this_node_dialed_are_closed_first() {
        let t0 = Instant::now();
        let config = PolicyConfig::default();
        let mut p = policy(vec![], t0);
        // 30 peers: the even ones dialed us, the odd ones we dialed; the even ones have been
        // unused longest.
        for peer in 1..=30u32 {
            let at = if peer % 2 == 0 { t0 } else { t0 + secs(5) };
            p.on_connected(peer, &"x", true, peer % 2 == 1, at);
        }
        let now = t0 + config.unused_grace + secs(10);
        let closed: Vec<u32> = disconnects(p.tick(now, |_| false));
        assert_eq!(closed.len(), 6);
        assert!(closed.iter().all(|peer| peer % 2 == 1), "{closed:?}");
    }

    /// Runs `rounds` periodic rounds (one every 10 s from `*now`), each session finishing
    /// at once with `outcome`; returns which rounds started a sync.
    fn rounds(p: &mut Policy, now: &mut Instant, rounds: usize, outcome: SyncOutcome) -> Vec<bool> {
        (0..rounds)
            .map(|_| {
                *now += secs(10);
                let started = syncs(p.sync_round(*now, 7));
                for peer in &started {
                    p.on_sync_finished(peer, outcome, *now);
                }
                !started.is_empty()
            })
            .collect()
    }

    #[test]
    fn a_settled_policy_needs_no_tick_until_idle_and_pending_work_brings_it_forward() {
        let t0 = Instant::now();
        let idle = secs(1);
        let mut p = policy(vec![("boot", Some(1))], t0);
        // Not connected to its bootstrap peer yet: dial it now.
        assert_eq!(p.next_tick(t0, idle), t0);
        for peer in 1..=9 {
            p.on_connected(peer, &"x", true, true, t0);
        }
        // The bootstrap peer and more than enough peers: nothing before `idle`.
        let later = t0 + secs(10);
        assert_eq!(p.next_tick(later, idle), later + idle);
        // A bootstrap peer lost: redial when its backoff ends, before `idle`.
        p.on_disconnected(&1, 0, later);
        assert_eq!(
            p.next_tick(later, idle),
            later + PolicyConfig::default().redial_min
        );
        p.on_connected(1, &"boot", true, true, later);
        assert_eq!(p.next_tick(later, idle), later + idle);
        // Short of peers: look for more at once (the last look is long past).
        p.on_disconnected(&2, 0, later);
        p.on_disconnected(&3, 0, later);
        assert_eq!(p.next_tick(later, idle), later);
        p.on_connected(2, &"x", true, true, later);
        p.on_connected(3, &"x", true, true, later);
        // Penalties decay at the next refresh; a quiet policy later waits `idle` again.
        p.on_misbehaviour(3, 1.0, later);
        let refresh = PolicyConfig::default().score_refresh;
        p.tick(later, |_| false);
        assert_eq!(p.next_tick(later, secs(60)), later + refresh);
        p.tick(later + secs(3600), |_| false);
        let much_later = later + secs(3600);
        assert_eq!(p.next_tick(much_later, idle), much_later + idle);
        // A truncated sync asks for the rest after its backoff.
        p.on_sync_finished(&4, SyncOutcome::Truncated { progress: true }, much_later);
        assert_eq!(
            p.next_tick(much_later, idle),
            much_later + PolicyConfig::default().sync_retry_min.min(idle)
        );
    }

    #[test]
    fn quiet_syncs_back_off_and_news_from_a_sync_brings_them_back() {
        let t0 = Instant::now();
        let mut p = policy(vec![], t0);
        for peer in 1..=3 {
            p.on_connected(peer, &"x", false, true, t0);
        }
        let mut now = t0;
        let quiet = SyncOutcome::Complete { progress: false };
        // Rounds that find nothing: 1, 2, 4, 8 intervals apart, then every 8 at most.
        let pattern = rounds(&mut p, &mut now, 40, quiet);
        let started: Vec<usize> = (0..pattern.len()).filter(|&i| pattern[i]).collect();
        assert_eq!(started, [0, 2, 6, 14, 22, 30, 38]);
        let max = PolicyConfig::default().quiet_rounds_skipped as usize;
        assert!(started.windows(2).all(|w| w[1] - w[0] <= max + 1));
        // A session that stores something (gossip missed it): every round again, until they
        // are quiet once more.
        let news = SyncOutcome::Complete { progress: true };
        let mut skipped = 0;
        while !rounds(&mut p, &mut now, 1, news)[0] {
            skipped += 1;
        }
        assert!(skipped <= max);
        assert_eq!(rounds(&mut p, &mut now, 3, news), [true, true, true]);
        assert_eq!(rounds(&mut p, &mut now, 3, quiet), [true, false, true]);
        // A truncated session with news counts as news; a failure changes nothing.
        let cut = SyncOutcome::Truncated { progress: true };
        assert_eq!(
            rounds(&mut p, &mut now, 5, cut),
            [false, false, false, true, true]
        );
        let failed = SyncOutcome::Failed;
        assert_eq!(rounds(&mut p, &mut now, 2, failed), [true, true]);
        assert_eq!(rounds(&mut p, &mut now, 2, quiet), [true, false]);
    }

    #[test]
    fn a_closed_peer_that_comes_back_is_kept() {
        let t0 = Instant::now();
        let config = PolicyConfig::default();
        let mut p = policy(vec![], t0);
        let n = config.peers_high as u32 + 1;
        for peer in 1..=n {
            p.on_connected(peer, &"x", true, true, t0);
        }
        let mut now = t0 + config.unused_grace + secs(1);
        let first = disconnects(p.tick(now, |_| false));
        assert_eq!(first.len(), 1);
        let gone = first[0];
        p.on_disconnected(&gone, 0, now);
        // It dials back at once (we are its bootstrap peer): it stays, however unused, and
        // another one goes instead.
        p.on_connected(gone, &"x", true, true, now);
        now += config.unused_grace + secs(1);
        let second = disconnects(p.tick(now, |_| false));
        assert_eq!(second.len(), 1);
        assert_ne!(second[0], gone);
        // One that comes back only after `trim_memory` is a new connection like any other.
        let late = second[0];
        p.on_disconnected(&late, 0, now);
        p.on_connected(late, &"x", true, true, now + config.trim_memory + secs(1));
        assert!(p.connected[&gone].keep);
        assert!(!p.connected[&late].keep);
    }

    #[test]
    fn new_connections_start_syncs_up_to_the_limit() {
        let t0 = Instant::now();
        let mut p = policy(vec![], t0);
        let syncs = (1..=6)
            .flat_map(|peer| p.on_connected(peer, &"x", true, true, t0))
            .filter(|a| matches!(a, Action::Sync(_)))
            .count();
        assert_eq!(syncs, 4);
        // A second connection to a peer starts nothing.
        p.on_sync_finished(&1, SyncOutcome::Complete { progress: true }, t0);
        assert!(p.on_connected(1, &"x", false, true, t0).is_empty());
        // The periodic round picks an idle peer.
        let round = p.sync_round(t0, 9);
        assert!(
            matches!(round.as_slice(), [Action::Sync(peer)] if [1, 5, 6].contains(peer)),
            "{round:?}"
        );
    }

    #[test]
    fn truncated_answers_resync_after_a_delay_never_at_once() {
        let t0 = Instant::now();
        let mut p = policy(vec![], t0);
        let cfg = PolicyConfig::default();
        p.on_connected(1, &"x", true, true, t0);
        // (outcome, delay before the next sync is due)
        let table = [
            (
                SyncOutcome::Truncated { progress: true },
                cfg.sync_retry_min,
            ),
            (
                SyncOutcome::Truncated { progress: false },
                cfg.sync_retry_min * 2,
            ),
            (
                SyncOutcome::Truncated { progress: false },
                cfg.sync_retry_min * 4,
            ),
            (
                SyncOutcome::Truncated { progress: true },
                cfg.sync_retry_min,
            ),
        ];
        let mut now = t0;
        for (outcome, delay) in table {
            p.on_sync_finished(&1, outcome, now);
            assert!(!p.tick(now, |_| false).contains(&Action::Sync(1)));
            assert!(
                p.sync_round(now, 1).is_empty(),
                "the periodic round waits too"
            );
            let before = now + delay - Duration::from_millis(1);
            assert!(!p.tick(before, |_| false).contains(&Action::Sync(1)));
            now += delay;
            assert!(
                p.tick(now, |_| false).contains(&Action::Sync(1)),
                "{outcome:?}"
            );
        }
        // A complete session clears the backoff; a failure waits but schedules nothing.
        p.on_sync_finished(&1, SyncOutcome::Complete { progress: true }, now);
        assert_eq!(p.sync_round(now, 1), vec![Action::Sync(1)]);
        p.on_sync_finished(&1, SyncOutcome::Failed, now);
        assert!(p.tick(now + secs(120), |_| false).is_empty());
        assert_eq!(p.sync_round(now + secs(2), 1), vec![Action::Sync(1)]);
    }

    #[test]
    fn a_peer_that_relayed_what_was_held_back_is_synced_with_once_the_delay_has_passed() {
        let t0 = Instant::now();
        let mut p = policy(vec![], t0);
        p.sync_after(1, secs(5), t0);
        assert!(
            !p.tick(t0 + secs(10), |_| false).contains(&Action::Sync(1)),
            "not connected: nothing to do"
        );
        p.on_connected(1, &"x", true, true, t0);
        p.on_connected(2, &"x", true, true, t0);
        // The syncs of new connections are over.
        for peer in [1, 2] {
            p.on_sync_finished(&peer, SyncOutcome::Complete { progress: false }, t0);
        }
        // Held back three times in a row: one sync, after the delay, with that peer only.
        for ms in [0, 100, 200] {
            p.sync_after(1, secs(5), t0 + Duration::from_millis(ms));
        }
        assert!(!p.tick(t0 + secs(4), |_| false).contains(&Action::Sync(1)));
        assert!(p.next_tick(t0, secs(60)) <= t0 + secs(5));
        let due = p.tick(t0 + secs(5), |_| false);
        assert_eq!(
            due.iter().filter(|a| matches!(a, Action::Sync(_))).count(),
            1
        );
        assert!(due.contains(&Action::Sync(1)));
        assert!(!p.tick(t0 + secs(6), |_| false).contains(&Action::Sync(1)));
        // Quiet rounds skipped by the periodic schedule do not hold it back.
        for _ in 0..4 {
            p.on_sync_finished(&1, SyncOutcome::Complete { progress: false }, t0 + secs(6));
        }
        p.sync_after(1, secs(5), t0 + secs(6));
        assert!(p.tick(t0 + secs(11), |_| false).contains(&Action::Sync(1)));
    }

    #[test]
    fn sync_answers_per_peer_are_rate_limited() {
        let t0 = Instant::now();
        let mut p = policy(vec![], t0);
        assert!(
            p.allow_sync_answer(&1, t0).is_none(),
            "not connected: no answer"
        );
        p.on_connected(1, &"x", true, true, t0);
        p.on_connected(2, &"x", true, true, t0);
        let burst = PolicyConfig::default().sync_answer_burst as usize;
        let answered = (0..burst * 2)
            .filter(|_| p.allow_sync_answer(&1, t0).is_some())
            .count();
        assert_eq!(answered, burst);
        // Another peer has its own budget.
        assert!(p.allow_sync_answer(&2, t0).is_some());
        // One second later, `sync_answer_rate` more.
        let later = t0 + secs(1);
        let answered = (0..100)
            .filter(|_| p.allow_sync_answer(&1, later).is_some())
            .count();
        assert_eq!(answered, PolicyConfig::default().sync_answer_rate as usize);
        // A disconnected peer gets no answer.
        p.on_disconnected(&1, 0, later);
        assert!(p.allow_sync_answer(&1, later).is_none());
    }

    #[test]
    fn sync_answers_per_peer_are_charged_by_their_bytes() {
        let t0 = Instant::now();
        let config = PolicyConfig::default();
        let (burst, rate) = (
            config.sync_answer_bytes_burst as usize,
            config.sync_answer_bytes_rate as usize,
        );
        let mut p = policy(vec![], t0);
        p.on_connected(1, &"x", true, true, t0);
        p.on_connected(2, &"x", true, true, t0);
        // Full answers of 8 MiB, as a request claiming to hold nothing asks for: the byte
        // budget runs out long before the count of answers does.
        let full = 8 << 20;
        let mut sent = 0;
        while let Some(allowed) = p.allow_sync_answer(&1, t0) {
            let answer = allowed.min(full);
            p.charge_sync_answer(&1, answer);
            sent += answer;
            assert!(sent <= burst, "{sent}");
        }
        assert!(sent + MIN_SYNC_ANSWER_BYTES > burst, "{sent} of {burst}");
        // Another peer has its own budget.
        assert_eq!(p.allow_sync_answer(&2, t0), Some(burst));
        // A second later, `sync_answer_bytes_rate` more, in answers cut to what is left.
        let later = t0 + secs(1);
        let allowed = p.allow_sync_answer(&1, later).expect("refilled");
        assert!(
            (rate..rate + MIN_SYNC_ANSWER_BYTES).contains(&allowed),
            "{allowed}"
        );
        p.charge_sync_answer(&1, allowed);
        assert_eq!(p.allow_sync_answer(&1, later), None);
        // Small answers are charged only what they hold.
        let much_later = later + secs(60);
        assert_eq!(p.allow_sync_answer(&1, much_later), Some(burst));
        p.charge_sync_answer(&1, 1_000);
        assert_eq!(p.allow_sync_answer(&1, much_later), Some(burst - 1_000));
        // Reconnecting does not refill it.
        p.charge_sync_answer(&1, burst);
        p.on_disconnected(&1, 0, much_later);
        p.on_connected(1, &"x", true, true, much_later);
        assert_eq!(p.allow_sync_answer(&1, much_later), None);
    }

    #[test]
    fn reconnecting_does_not_refill_the_sync_answer_bucket() {
        let t0 = Instant::now();
        let config = PolicyConfig::default();
        let (burst, rate) = (config.sync_answer_burst as usize, config.sync_answer_rate);
        let mut p = policy(vec![], t0);
        p.on_connected(1, &"x", true, true, t0);
        let drain = |p: &mut PeerPolicy<u32, &str>, at| {
            (0..burst * 2)
                .filter(|_| p.allow_sync_answer(&1, at).is_some())
                .count()
        };
        assert_eq!(drain(&mut p, t0), burst);
        // Straight back: the bucket is still empty.
        p.on_disconnected(&1, 0, t0);
        p.on_connected(1, &"x", true, true, t0);
        assert_eq!(drain(&mut p, t0), 0);
        // It refills while the peer is away, as while it is connected.
        p.on_disconnected(&1, 0, t0);
        let later = t0 + secs(2);
        p.on_connected(1, &"x", true, false, later);
        assert_eq!(drain(&mut p, later), 2 * rate as usize);
        // A bucket that has refilled is forgotten: nothing is kept for a peer that left full.
        p.on_disconnected(&1, 0, later);
        let much_later = later + secs(60);
        p.on_connected(1, &"x", true, false, much_later);
        p.on_disconnected(&1, 0, much_later);
        assert!(p.spent_answers.is_empty());
    }

    #[test]
    fn remembered_sync_answer_buckets_are_bounded() {
        let t0 = Instant::now();
        let mut p = policy(vec![], t0);
        let peers = MAX_REMEMBERED as u32 + 10;
        for peer in 1..=peers {
            p.on_connected(peer, &"x", true, true, t0);
            // Peer k spends k answers (the burst at most), so later peers leave emptier.
            let spend = (peer as usize).min(PolicyConfig::default().sync_answer_burst as usize);
            for _ in 0..spend {
                p.allow_sync_answer(&peer, t0);
            }
            p.on_disconnected(&peer, 0, t0);
        }
        assert_eq!(p.spent_answers.len(), MAX_REMEMBERED);
        // The fullest were dropped; the peer that left last (and empty) is remembered.
        assert!(!p.spent_answers.contains_key(&1));
        assert!(p.spent_answers.contains_key(&peers));
    }

    #[test]
    fn misbehaviour_lowers_the_score_and_decays() {
        let t0 = Instant::now();
        let mut p = policy(vec![], t0);
        p.on_connected(1, &"x", true, true, t0);
        p.on_sync_finished(&1, SyncOutcome::Complete { progress: false }, t0);
        let actions = p.on_misbehaviour(1, 3.0, t0);
        assert_eq!(
            actions,
            vec![Action::SetScore {
                peer: 1,
                score: -3.0
            }]
        );
        let actions = p.on_misbehaviour(1, 6.0, t0);
        assert_eq!(
            actions,
            vec![Action::SetScore {
                peer: 1,
                score: -9.0
            }]
        );
        // Penalised past the limit: not asked for syncs.
        assert!(p.sync_round(t0, 1).is_empty());
        // After one half-life the refresh hands out half the penalty; much later, zero.
        let half = t0 + PolicyConfig::default().penalty_half_life;
        let refreshed = p.tick(half, |_| false);
        assert!(refreshed.iter().any(
            |a| matches!(a, Action::SetScore { peer: 1, score } if (*score + 4.5).abs() < 0.01)
        ));
        assert_eq!(p.sync_round(half, 1), vec![Action::Sync(1)]);
        let later = half + PolicyConfig::default().penalty_half_life * 10;
        assert!(p.tick(later, |_| false).contains(&Action::SetScore {
            peer: 1,
            score: 0.0
        }));
        assert_eq!(p.penalty(&1, later), 0.0);
    }

    #[test]
    fn remembered_state_is_bounded() {
        let t0 = Instant::now();
        let mut p = policy(vec![], t0);
        for peer in 1..(MAX_REMEMBERED as u32 * 3) {
            p.on_dial_failed(peer, t0);
            p.on_misbehaviour(peer, 1.0, t0);
        }
        assert!(p.dial_failed.len() <= MAX_REMEMBERED);
        assert!(p.penalties.len() <= MAX_REMEMBERED);
    }
}
