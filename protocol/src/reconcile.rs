//! Range-based set reconciliation: the anti-entropy of the catalog and of node records.
//!
//! Both sides hold a sorted set of `(key, version)` pairs. The requester splits the key space
//! into ranges and sends, per range, either a [`Fingerprint`] of what it holds there or, when
//! it holds few entries there, the entries themselves. The responder compares: an equal
//! fingerprint ends the range; a different one is answered with its own entries (when it
//! holds few) or with fingerprints of sub-ranges, which the requester compares and recurses
//! into. Entries the requester lacks or holds at an older version are pulled by key.
//!
//! Every message stays bounded however large the sets grow: a query carries at most
//! [`MAX_RANGES`] ranges, [`MAX_ITEMS`] entries per range and [`MAX_WANT`] wanted keys, and is
//! cut to a byte budget by [`Reconciler::next_query`]. The responder is stateless and spends
//! `O(log n)` per range thanks to the prefix sums of [`SyncSet`]; the requester's state is
//! capped ([`MAX_QUEUE`], [`MAX_ROUNDS`]). Two sets of 100,000 entries that differ in a few
//! entries reconcile in three round trips of a few kilobytes (see the tests).
//!
//! Pure functions and plain data: the node feeds in its digests and loads the envelopes.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::descriptor::ProductId;
use crate::identity::PublicKey;

/// Most ranges in one query (and replies in one answer).
pub const MAX_RANGES: usize = 64;
/// Most entries listed for one range, by either side. A side that holds at most this many
/// entries in a range lists them instead of sending a fingerprint.
pub const MAX_ITEMS: usize = 32;
/// Most keys pulled by one query.
pub const MAX_WANT: usize = 256;
/// Sub-ranges a responder splits a mismatching range into.
pub const FANOUT: usize = 16;
/// Most ranges a requester keeps queued; beyond, the rest waits for the next session.
pub const MAX_QUEUE: usize = 4096;
/// Most keys a responder lists to send for one query: more envelopes than fit in a sync
/// response anyway, so a query for everything does not make it list a huge catalog.
pub const MAX_SEND: usize = 16 * 1024;
/// Most round trips in one session; a responder that keeps a requester busy longer (by
/// answering with ever new ranges) is cut off, and the next session starts afresh.
pub const MAX_ROUNDS: u32 = 32;

/// A key of a reconciled set: ordered, and hashed into fingerprints.
pub trait SyncKey: Ord + Clone + std::fmt::Debug {
    /// Feeds the key's canonical bytes to the item hash.
    fn hash_into(&self, hasher: &mut blake3::Hasher);
}

impl SyncKey for ProductId {
    fn hash_into(&self, hasher: &mut blake3::Hasher) {
        hasher.update(&self.owner.0);
        hasher.update(&(self.name.len() as u64).to_be_bytes());
        hasher.update(self.name.as_bytes());
    }
}

impl SyncKey for PublicKey {
    fn hash_into(&self, hasher: &mut blake3::Hasher) {
        hasher.update(&self.0);
    }
}

/// The hash of one `(key, version)` entry, the unit that fingerprints add up.
pub fn item_hash<K: SyncKey>(key: &K, version: u64) -> u128 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"meshnode/sync-item/v1");
    key.hash_into(&mut hasher);
    hasher.update(&version.to_be_bytes());
    let bytes = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&bytes.as_bytes()[..16]);
    u128::from_le_bytes(first)
}

/// What a side holds in a range, in a few bytes: how many entries and the sum (mod 2^128) of
/// their hashes. Equal fingerprints mean equal entries, but for a 2^-128 chance (and an
/// attacker cannot steer it: it would need to find a BLAKE3 sum collision).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Entries in the range.
    pub count: u64,
    /// Wrapping sum of their [`item_hash`]es.
    pub sum: u128,
}

/// A half-open range of keys `[start, end)`; `None` is unbounded on that side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange<K> {
    /// First key in the range (inclusive); `None`: from the smallest key.
    pub start: Option<K>,
    /// First key after the range (exclusive); `None`: to the largest key.
    pub end: Option<K>,
}

impl<K: Ord> KeyRange<K> {
    /// The whole key space.
    pub fn full() -> Self {
        Self {
            start: None,
            end: None,
        }
    }

    /// Whether the range is well formed (non-empty bounds in order).
    pub fn is_valid(&self) -> bool {
        match (&self.start, &self.end) {
            (Some(s), Some(e)) => s < e,
            _ => true,
        }
    }

    /// Whether `key` lies in the range.
    pub fn contains(&self, key: &K) -> bool {
        self.start.as_ref().is_none_or(|s| key >= s) && self.end.as_ref().is_none_or(|e| key < e)
    }

    /// Whether `inner` lies within this range.
    pub fn covers(&self, inner: &KeyRange<K>) -> bool {
        let start_ok = match (&self.start, &inner.start) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => b >= a,
        };
        let end_ok = match (&self.end, &inner.end) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => b <= a,
        };
        start_ok && end_ok
    }
}

/// A side's sorted `(key, version)` entries with prefix sums of their hashes, so that the
/// fingerprint of any range costs two binary searches.
#[derive(Clone, Debug, Default)]
pub struct SyncSet<K> {
    /// Entries sorted by key, keys unique.
    items: Vec<(K, u64)>,
    /// `prefix[i]` is the wrapping sum of the hashes of `items[..i]`.
    prefix: Vec<u128>,
}

impl<K: SyncKey> SyncSet<K> {
    /// Builds the set from entries sorted by key with unique keys (a `BTreeMap` iterator).
    /// Out-of-order or repeated keys are dropped, so the set stays sorted whatever it is fed.
    pub fn from_sorted(entries: impl IntoIterator<Item = (K, u64)>) -> Self {
        let mut items: Vec<(K, u64)> = Vec::new();
        let mut prefix = vec![0u128];
        let mut sum = 0u128;
        for (key, version) in entries {
            if items.last().is_some_and(|(last, _)| *last >= key) {
                continue;
            }
            sum = sum.wrapping_add(item_hash(&key, version));
            prefix.push(sum);
            items.push((key, version));
        }
        Self { items, prefix }
    }

    /// Builds the set from a map.
    pub fn from_map(map: &BTreeMap<K, u64>) -> Self {
        Self::from_sorted(map.iter().map(|(k, v)| (k.clone(), *v)))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Index bounds of `range` in `items`.
    fn bounds(&self, range: &KeyRange<K>) -> (usize, usize) {
        let lo = match &range.start {
            None => 0,
            Some(s) => self.items.partition_point(|(k, _)| k < s),
        };
        let hi = match &range.end {
            None => self.items.len(),
            Some(e) => self.items.partition_point(|(k, _)| k < e),
        };
        (lo, hi.max(lo))
    }

    /// Fingerprint of the entries in `range`.
    pub fn fingerprint(&self, range: &KeyRange<K>) -> Fingerprint {
        let (lo, hi) = self.bounds(range);
        Fingerprint {
            count: (hi - lo) as u64,
            sum: self.prefix[hi].wrapping_sub(self.prefix[lo]),
        }
    }

    /// The entries in `range`.
    pub fn items(&self, range: &KeyRange<K>) -> &[(K, u64)] {
        let (lo, hi) = self.bounds(range);
        &self.items[lo..hi]
    }

    /// The version held for `key`.
    pub fn version(&self, key: &K) -> Option<u64> {
        self.items
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|i| self.items[i].1)
    }

    /// Splits `range` into at most `parts` ranges that together cover it, each holding about
    /// the same number of this set's entries. Boundaries are keys of this set.
    pub fn split(&self, range: &KeyRange<K>, parts: usize) -> Vec<KeyRange<K>> {
        let (lo, hi) = self.bounds(range);
        let n = hi - lo;
        let parts = parts.clamp(1, n.max(1));
        let mut out = Vec::with_capacity(parts);
        let mut start = range.start.clone();
        for i in 1..parts {
            let boundary = self.items[lo + n * i / parts].0.clone();
            out.push(KeyRange {
                start: start.take(),
                end: Some(boundary.clone()),
            });
            start = Some(boundary);
        }
        out.push(KeyRange {
            start,
            end: range.end.clone(),
        });
        out
    }
}

/// What the requester says it holds in one range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Claim<K> {
    /// The fingerprint of its entries there.
    Fingerprint(Fingerprint),
    /// Its entries there (at most [`MAX_ITEMS`]): the responder sends what is missing.
    Items(Vec<(K, u64)>),
}

/// One range of a query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeClaim<K> {
    /// The range.
    pub range: KeyRange<K>,
    /// What the requester holds in it.
    pub claim: Claim<K>,
}

/// The requester's part of a sync request for one set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetQuery<K> {
    /// Ranges to compare.
    pub ranges: Vec<RangeClaim<K>>,
    /// Keys whose entries the requester lacks (or holds older): send them.
    pub want: Vec<K>,
}

impl<K: Ord> SetQuery<K> {
    /// "I hold nothing": the responder sends every entry it holds (up to its size limit).
    pub fn everything() -> Self {
        Self {
            ranges: vec![RangeClaim {
                range: KeyRange::full(),
                claim: Claim::Items(Vec::new()),
            }],
            want: Vec::new(),
        }
    }
}

impl<K: Ord> SetQuery<K> {
    /// Whether an answer to this query may carry `version` of `key`: it is a wanted key, or
    /// lies in a range whose entries the query listed without it or at an older version.
    /// A responder sends nothing else ([`respond`]): a range claimed by fingerprint is
    /// answered with fingerprints or entries, never with envelopes.
    pub fn solicits(&self, key: &K, version: u64) -> bool {
        self.want.contains(key)
            || self.ranges.iter().any(|rc| match &rc.claim {
                Claim::Items(items) if rc.range.contains(key) => items
                    .iter()
                    .find(|(k, _)| k == key)
                    .is_none_or(|(_, claimed)| *claimed < version),
                _ => false,
            })
    }
}

impl<K> Default for SetQuery<K> {
    fn default() -> Self {
        Self {
            ranges: Vec::new(),
            want: Vec::new(),
        }
    }
}

/// The responder's answer to one mismatching range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RangeReply<K> {
    /// It holds many entries there: fingerprints of sub-ranges to compare.
    Split(Vec<(KeyRange<K>, Fingerprint)>),
    /// It holds few entries there: all of them.
    Items {
        /// The range.
        range: KeyRange<K>,
        /// The responder's entries in it (at most [`MAX_ITEMS`]).
        items: Vec<(K, u64)>,
    },
}

/// The responder's part of a sync response for one set. Entries themselves travel beside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAnswer<K> {
    /// One reply per mismatching range; matching ranges get none.
    pub replies: Vec<RangeReply<K>>,
}

impl<K> Default for SetAnswer<K> {
    fn default() -> Self {
        Self {
            replies: Vec::new(),
        }
    }
}

/// Why a query or an answer was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum ReconcileError {
    /// More ranges than [`MAX_RANGES`].
    #[error("{0} ranges in one message; the limit is {MAX_RANGES}")]
    TooManyRanges(usize),
    /// More listed entries for one range than [`MAX_ITEMS`].
    #[error("{0} entries listed for one range; the limit is {MAX_ITEMS}")]
    TooManyItems(usize),
    /// More wanted keys than [`MAX_WANT`].
    #[error("{0} keys wanted in one query; the limit is {MAX_WANT}")]
    TooManyWanted(usize),
    /// A split into more parts than [`FANOUT`].
    #[error("a range split into {0} parts; the limit is {FANOUT}")]
    TooManyParts(usize),
    /// A range whose start is not before its end.
    #[error("a range whose start is not before its end")]
    BadRange,
}

/// What the responder does with a query: the answer to send, and the keys whose entries go
/// with it (in order; the caller stops adding envelopes at its byte budget).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response<K> {
    /// Replies to the ranges.
    pub answer: SetAnswer<K>,
    /// Keys whose envelopes the requester lacks, without repeats.
    pub send: Vec<K>,
    /// `send` stopped at [`MAX_SEND`]: the answer is partial, like one cut by its size.
    pub truncated: bool,
}

/// The responder's side: checks a query's bounds, then answers each range in `O(log n)`
/// (plus the entries it lists). Stateless.
pub fn respond<K: SyncKey>(
    ours: &SyncSet<K>,
    query: &SetQuery<K>,
) -> Result<Response<K>, ReconcileError> {
    if query.ranges.len() > MAX_RANGES {
        return Err(ReconcileError::TooManyRanges(query.ranges.len()));
    }
    if query.want.len() > MAX_WANT {
        return Err(ReconcileError::TooManyWanted(query.want.len()));
    }
    for rc in &query.ranges {
        if !rc.range.is_valid() {
            return Err(ReconcileError::BadRange);
        }
        if let Claim::Items(items) = &rc.claim
            && items.len() > MAX_ITEMS
        {
            return Err(ReconcileError::TooManyItems(items.len()));
        }
    }
    let mut replies = Vec::new();
    let mut send = Vec::new();
    let mut truncated = false;
    for rc in &query.ranges {
        match &rc.claim {
            Claim::Fingerprint(theirs) => {
                if ours.fingerprint(&rc.range) == *theirs {
                    continue;
                }
                let mine = ours.items(&rc.range);
                if mine.len() <= MAX_ITEMS {
                    replies.push(RangeReply::Items {
                        range: rc.range.clone(),
                        items: mine.to_vec(),
                    });
                } else {
                    let parts = ours
                        .split(&rc.range, FANOUT)
                        .into_iter()
                        .map(|r| {
                            let fp = ours.fingerprint(&r);
                            (r, fp)
                        })
                        .collect();
                    replies.push(RangeReply::Split(parts));
                }
            }
            Claim::Items(theirs) => {
                let theirs: BTreeMap<&K, u64> = theirs.iter().map(|(k, v)| (k, *v)).collect();
                for (key, version) in ours.items(&rc.range) {
                    if send.len() >= MAX_SEND {
                        truncated = true;
                        break;
                    }
                    if theirs.get(key).is_none_or(|t| t < version) {
                        send.push(key.clone());
                    }
                }
            }
        }
    }
    for key in &query.want {
        if ours.version(key).is_some() && send.len() < MAX_SEND {
            send.push(key.clone());
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    send.retain(|k| seen.insert(k.clone()));
    Ok(Response {
        answer: SetAnswer { replies },
        send,
        truncated,
    })
}

/// The requester's side of one session with one peer: ranges still to compare and keys
/// still to pull. Bounded: at most [`MAX_QUEUE`] ranges, [`MAX_QUEUE`] wanted keys and
/// [`MAX_ROUNDS`] round trips; whatever does not fit waits for the next session.
#[derive(Clone, Debug)]
pub struct Reconciler<K> {
    /// Ranges to compare in the next queries.
    queue: VecDeque<KeyRange<K>>,
    /// Keys to pull in the next queries.
    want: VecDeque<K>,
    /// Round trips so far.
    rounds: u32,
    /// Something was dropped to stay within the bounds: the session is not conclusive.
    overflowed: bool,
}

impl<K: SyncKey + Serialize> Reconciler<K> {
    /// Starts a session over the whole key space, split by our own entries.
    pub fn new(ours: &SyncSet<K>) -> Self {
        let full = KeyRange::full();
        let queue = if ours.len() <= MAX_ITEMS {
            vec![full]
        } else {
            ours.split(&full, FANOUT)
        };
        Self {
            queue: queue.into(),
            want: VecDeque::new(),
            rounds: 0,
            overflowed: false,
        }
    }

    /// Nothing left to ask for (or the round limit reached).
    pub fn is_done(&self) -> bool {
        (self.queue.is_empty() && self.want.is_empty()) || self.rounds >= MAX_ROUNDS
    }

    /// Round trips so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// Whether something was dropped to stay within bounds (or the round limit cut the
    /// session): another session is needed to be sure the sets agree.
    pub fn overflowed(&self) -> bool {
        self.overflowed || (self.rounds >= MAX_ROUNDS && !self.is_empty_queue())
    }

    fn is_empty_queue(&self) -> bool {
        self.queue.is_empty() && self.want.is_empty()
    }

    /// The next query, at most `max_bytes` encoded: wanted keys first, then ranges, each with
    /// its entries if we hold few there, else its fingerprint. Empty when done.
    pub fn next_query(&mut self, ours: &SyncSet<K>, max_bytes: usize) -> SetQuery<K> {
        let mut query = SetQuery::default();
        if self.is_done() {
            return query;
        }
        self.rounds += 1;
        // Vec and enum length prefixes are a few bytes each.
        let mut used = 16;
        while let Some(key) = self.want.front() {
            let len = codec::encode(key).len();
            if query.want.len() >= MAX_WANT || used + len > max_bytes {
                break;
            }
            used += len;
            query.want.push(key.clone());
            self.want.pop_front();
        }
        while let Some(range) = self.queue.front() {
            if query.ranges.len() >= MAX_RANGES {
                break;
            }
            let mine = ours.items(range);
            let claim = if mine.len() <= MAX_ITEMS {
                Claim::Items(mine.to_vec())
            } else {
                Claim::Fingerprint(ours.fingerprint(range))
            };
            let rc = RangeClaim {
                range: range.clone(),
                claim,
            };
            let len = codec::encode(&rc).len();
            if used + len > max_bytes {
                break;
            }
            used += len;
            query.ranges.push(rc);
            self.queue.pop_front();
        }
        query
    }

    /// Takes the responder's answer: queues the sub-ranges whose fingerprints differ from
    /// ours and wants the listed entries we lack or hold older. `asked` is the query the
    /// answer is for: replies must lie within its ranges.
    pub fn on_answer(
        &mut self,
        ours: &SyncSet<K>,
        asked: &SetQuery<K>,
        answer: SetAnswer<K>,
    ) -> Result<(), ReconcileError> {
        if answer.replies.len() > asked.ranges.len().min(MAX_RANGES) {
            return Err(ReconcileError::TooManyRanges(answer.replies.len()));
        }
        let within =
            |r: &KeyRange<K>| r.is_valid() && asked.ranges.iter().any(|a| a.range.covers(r));
        for reply in &answer.replies {
            match reply {
                RangeReply::Split(parts) => {
                    if parts.len() > FANOUT {
                        return Err(ReconcileError::TooManyParts(parts.len()));
                    }
                    if !parts.iter().all(|(r, _)| within(r)) {
                        return Err(ReconcileError::BadRange);
                    }
                }
                RangeReply::Items { range, items } => {
                    if items.len() > MAX_ITEMS {
                        return Err(ReconcileError::TooManyItems(items.len()));
                    }
                    if !within(range) {
                        return Err(ReconcileError::BadRange);
                    }
                }
            }
        }
        for reply in answer.replies {
            match reply {
                RangeReply::Split(parts) => {
                    for (range, theirs) in parts {
                        if ours.fingerprint(&range) == theirs {
                            continue;
                        }
                        if self.queue.len() >= MAX_QUEUE {
                            self.overflowed = true;
                            continue;
                        }
                        self.queue.push_back(range);
                    }
                }
                RangeReply::Items { range, items } => {
                    for (key, version) in items {
                        if !range.contains(&key) {
                            continue;
                        }
                        if ours.version(&key).is_some_and(|v| v >= version) {
                            continue;
                        }
                        if self.want.len() >= MAX_QUEUE {
                            self.overflowed = true;
                            continue;
                        }
                        self.want.push_back(key);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys are plain 32-byte public keys, enough for the algorithm.
    fn key(i: u64) -> PublicKey {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&blake3::hash(&i.to_le_bytes()).as_bytes()[..8]);
        k[8..16].copy_from_slice(&i.to_be_bytes());
        PublicKey(k)
    }

    /// What sessions between two sets cost.
    struct Tally {
        /// Sessions run (a session cut by its bounds is followed by another).
        sessions: usize,
        rounds: usize,
        request_bytes: usize,
        response_bytes: usize,
        largest_request: usize,
        largest_response: usize,
        entries_sent: usize,
    }

    /// Bytes an envelope costs in a response in this model (the node sends descriptors of
    /// about this size).
    const ENVELOPE_BYTES: usize = 1024;
    const QUERY_BUDGET: usize = crate::wire::MAX_SET_QUERY;

    /// Runs sessions until `a` holds everything `b` has (newer wins), moving entries the
    /// way the node moves envelopes.
    fn sync(a: &mut BTreeMap<PublicKey, u64>, b: &BTreeMap<PublicKey, u64>) -> Tally {
        let mut tally = Tally {
            sessions: 0,
            rounds: 0,
            request_bytes: 0,
            response_bytes: 0,
            largest_request: 0,
            largest_response: 0,
            entries_sent: 0,
        };
        let theirs = SyncSet::from_map(b);
        loop {
            tally.sessions += 1;
            assert!(tally.sessions <= 20, "no convergence");
            if !session(a, b, &theirs, &mut tally) {
                return tally;
            }
        }
    }

    /// One session; true if it was cut by its bounds.
    fn session(
        a: &mut BTreeMap<PublicKey, u64>,
        b: &BTreeMap<PublicKey, u64>,
        theirs: &SyncSet<PublicKey>,
        tally: &mut Tally,
    ) -> bool {
        let mut ours = SyncSet::from_map(a);
        let mut session = Reconciler::new(&ours);
        while !session.is_done() {
            let query = session.next_query(&ours, QUERY_BUDGET);
            let request_len = codec::encode(&query).len();
            assert!(request_len <= QUERY_BUDGET, "query of {request_len} bytes");
            let response = respond(theirs, &query).expect("a query within bounds");
            let response_len =
                codec::encode(&response.answer).len() + response.send.len() * ENVELOPE_BYTES;
            tally.rounds += 1;
            tally.request_bytes += request_len;
            tally.response_bytes += response_len;
            tally.largest_request = tally.largest_request.max(request_len);
            tally.largest_response = tally.largest_response.max(response_len);
            tally.entries_sent += response.send.len();
            let mut changed = false;
            for k in &response.send {
                let v = b[k];
                if a.get(k).is_none_or(|have| *have < v) {
                    a.insert(*k, v);
                    changed = true;
                }
            }
            session
                .on_answer(&ours, &query, response.answer)
                .expect("an honest answer");
            if response.truncated {
                return true;
            }
            if changed {
                ours = SyncSet::from_map(a);
            }
        }
        session.overflowed()
    }

    fn lacks(a: &BTreeMap<PublicKey, u64>, b: &BTreeMap<PublicKey, u64>) -> usize {
        b.iter()
            .filter(|(k, v)| a.get(*k).is_none_or(|have| have < *v))
            .count()
    }

    #[test]
    fn an_answer_may_carry_only_what_its_query_solicits() {
        let mut all: Vec<(PublicKey, u64)> = (0..40u64).map(|i| (key(i), 2)).collect();
        all.sort();
        let theirs = SyncSet::from_sorted(all);
        let mut held: Vec<(PublicKey, u64)> = (0..10u64).map(|i| (key(i), 2)).collect();
        held.extend((10..20u64).map(|i| (key(i), 1)));
        held.sort();
        let ours = SyncSet::from_sorted(held);
        // Listed entries (we hold few), and one wanted key.
        let mut query = SetQuery {
            ranges: vec![RangeClaim {
                range: KeyRange::full(),
                claim: Claim::Items(ours.items(&KeyRange::full()).to_vec()),
            }],
            want: vec![key(5)],
        };
        let response = respond(&theirs, &query).unwrap();
        assert_eq!(response.send.len(), 31, "20 lacked, 10 older, 1 wanted");
        assert!(response.send.iter().all(|k| query.solicits(k, 2)));
        // Claimed at that version or newer: not solicited, unless wanted.
        assert!(!query.solicits(&key(3), 2));
        assert!(!query.solicits(&key(3), 1));
        assert!(query.solicits(&key(3), 3));
        assert!(query.solicits(&key(5), 1));
        // Outside every listed range, or in a range claimed by fingerprint: not solicited.
        query.ranges[0].range = KeyRange {
            start: None,
            end: Some(key(0)),
        };
        let outside = (0..40u64)
            .map(key)
            .find(|k| !query.ranges[0].range.contains(k));
        assert!(!query.solicits(&outside.unwrap(), 9));
        query.ranges[0] = RangeClaim {
            range: KeyRange::full(),
            claim: Claim::Fingerprint(ours.fingerprint(&KeyRange::full())),
        };
        assert!(!query.solicits(&key(30), 2));
    }

    #[test]
    fn fingerprints_use_prefix_sums_correctly() {
        let map: BTreeMap<PublicKey, u64> = (0..200).map(|i| (key(i), i)).collect();
        let set = SyncSet::from_map(&map);
        let parts = set.split(&KeyRange::full(), 7);
        assert_eq!(parts.len(), 7);
        let total: u64 = parts.iter().map(|r| set.fingerprint(r).count).sum();
        assert_eq!(total, 200);
        let sum = parts
            .iter()
            .fold(0u128, |s, r| s.wrapping_add(set.fingerprint(r).sum));
        assert_eq!(sum, set.fingerprint(&KeyRange::full()).sum);
        // A range's fingerprint equals the sum of its items' hashes.
        let r = &parts[3];
        let direct = set
            .items(r)
            .iter()
            .fold(0u128, |s, (k, v)| s.wrapping_add(item_hash(k, *v)));
        assert_eq!(set.fingerprint(r).sum, direct);
        // The version enters the hash: same keys, one newer version, different fingerprint.
        let mut newer = map.clone();
        *newer.get_mut(&key(5)).unwrap() += 1;
        assert_ne!(
            SyncSet::from_map(&newer).fingerprint(&KeyRange::full()),
            set.fingerprint(&KeyRange::full())
        );
    }

    #[test]
    fn small_and_empty_sets_reconcile() {
        let b: BTreeMap<PublicKey, u64> = (0..20).map(|i| (key(i), 1)).collect();
        let mut a = BTreeMap::new();
        let t = sync(&mut a, &b);
        assert_eq!(a, b);
        assert_eq!(t.rounds, 1, "an empty side lists its (no) entries at once");
        // Equal sets: one round, nothing sent.
        let t = sync(&mut a, &b);
        assert_eq!((t.rounds, t.entries_sent), (1, 0));
        // The requester holds more: it pulls nothing, the responder's own session would.
        let mut bigger = b.clone();
        bigger.insert(key(99), 1);
        let t = sync(&mut bigger, &b);
        assert_eq!(t.entries_sent, 0);
    }

    #[test]
    fn a_fresh_node_pulls_a_large_set_in_bounded_messages() {
        let b: BTreeMap<PublicKey, u64> = (0..5_000).map(|i| (key(i), 1)).collect();
        let mut a = BTreeMap::new();
        let t = sync(&mut a, &b);
        assert_eq!(a, b);
        assert!(t.largest_request <= QUERY_BUDGET);
        assert_eq!(t.entries_sent, 5_000);
        // A catalog larger than one answer can list: the first session is cut, the next
        // one reconciles the rest.
        let b: BTreeMap<PublicKey, u64> = (0..40_000).map(|i| (key(i), 1)).collect();
        let mut a = BTreeMap::new();
        let t = sync(&mut a, &b);
        assert_eq!(a, b);
        assert!(t.sessions >= 2, "{} sessions", t.sessions);
    }

    /// The figure of the issue: 100,000 entries on each side, a few differences either way
    /// (missing, newer, extra). Every query stays under its budget and the sync request
    /// limit; the requester ends with everything the responder has.
    #[test]
    fn hundred_thousand_entries_with_few_differences() {
        let n = 100_000u64;
        let b: BTreeMap<PublicKey, u64> = (0..n).map(|i| (key(i), 1)).collect();
        for k in [1usize, 5, 20] {
            let mut a = b.clone();
            // Differences: a lacks some, holds some older, and holds extra ones.
            for j in 0..k as u64 {
                let victim = key((j * 7_919) % n);
                match j % 3 {
                    0 => {
                        a.remove(&victim);
                    }
                    1 => {
                        a.insert(victim, 0);
                    }
                    _ => {
                        a.insert(key(n + j), 1);
                    }
                }
            }
            let missing = lacks(&a, &b);
            let t = sync(&mut a, &b);
            assert_eq!(lacks(&a, &b), 0);
            assert_eq!(t.entries_sent, missing);
            assert!(t.largest_request <= QUERY_BUDGET);
            assert!(t.largest_request <= crate::wire::MAX_SYNC_REQUEST);
            assert!(t.largest_response <= crate::wire::MAX_SYNC_RESPONSE);
            assert_eq!(t.sessions, 1);
            assert!(t.rounds <= 4, "{} rounds", t.rounds);
            println!(
                "100k entries, {k} differences ({missing} to pull): {} round trips, \
                 requests {} B (largest {} B), answers {} B without the {} entries' \
                 envelopes",
                t.rounds,
                t.request_bytes,
                t.largest_request,
                t.response_bytes - t.entries_sent * ENVELOPE_BYTES,
                t.entries_sent,
            );
        }
    }

    /// Many differences (a node back from a long partition): more round trips, every message
    /// still within its budget.
    #[test]
    fn hundred_thousand_entries_with_many_differences() {
        let n = 100_000u64;
        let b: BTreeMap<PublicKey, u64> = (0..n).map(|i| (key(i), 2)).collect();
        let mut a = b.clone();
        for j in 0..2_000u64 {
            *a.get_mut(&key(j * 37)).unwrap() = 1;
        }
        let t = sync(&mut a, &b);
        assert_eq!(lacks(&a, &b), 0);
        assert_eq!(t.entries_sent, 2_000);
        assert!(t.largest_request <= QUERY_BUDGET);
        println!(
            "100k entries, 2000 differences: {} sessions, {} round trips, requests {} B \
             (largest {} B), answers {} B without the envelopes",
            t.sessions,
            t.rounds,
            t.request_bytes,
            t.largest_request,
            t.response_bytes - t.entries_sent * ENVELOPE_BYTES,
        );
    }

    #[test]
    fn responder_refuses_queries_over_their_bounds() {
        let set = SyncSet::from_map(&(0..10).map(|i| (key(i), 1)).collect());
        let many = SetQuery {
            ranges: vec![
                RangeClaim {
                    range: KeyRange::full(),
                    claim: Claim::Fingerprint(Fingerprint::default()),
                };
                MAX_RANGES + 1
            ],
            want: vec![],
        };
        assert_eq!(
            respond(&set, &many),
            Err(ReconcileError::TooManyRanges(MAX_RANGES + 1))
        );
        let items = SetQuery {
            ranges: vec![RangeClaim {
                range: KeyRange::full(),
                claim: Claim::Items((0..MAX_ITEMS as u64 + 1).map(|i| (key(i), 1)).collect()),
            }],
            want: vec![],
        };
        assert_eq!(
            respond(&set, &items),
            Err(ReconcileError::TooManyItems(MAX_ITEMS + 1))
        );
        let backwards = SetQuery {
            ranges: vec![RangeClaim {
                range: KeyRange {
                    start: Some(key(2).max(key(3))),
                    end: Some(key(2).min(key(3))),
                },
                claim: Claim::Fingerprint(Fingerprint::default()),
            }],
            want: vec![],
        };
        assert_eq!(respond(&set, &backwards), Err(ReconcileError::BadRange));
        let wants = SetQuery {
            ranges: vec![],
            want: vec![key(1); MAX_WANT + 1],
        };
        assert_eq!(
            respond(&set, &wants),
            Err(ReconcileError::TooManyWanted(MAX_WANT + 1))
        );
    }

    #[test]
    fn requester_refuses_answers_outside_what_it_asked() {
        let map: BTreeMap<PublicKey, u64> = (0..1000).map(|i| (key(i), 1)).collect();
        let ours = SyncSet::from_map(&map);
        let mut session = Reconciler::new(&ours);
        let query = session.next_query(&ours, QUERY_BUDGET);
        // A reply for a range nobody asked about (the first range covers keys below the
        // first boundary; a range starting at the largest key lies in the last one only if
        // it was asked; ask only the first).
        let first = SetQuery {
            ranges: vec![query.ranges[0].clone()],
            want: vec![],
        };
        let outside = KeyRange {
            start: Some(PublicKey([0xff; 32])),
            end: None,
        };
        let answer = SetAnswer {
            replies: vec![RangeReply::Items {
                range: outside,
                items: vec![],
            }],
        };
        assert_eq!(
            session.on_answer(&ours, &first, answer),
            Err(ReconcileError::BadRange)
        );
        // More replies than ranges asked.
        let answer = SetAnswer {
            replies: vec![RangeReply::Split(vec![]), RangeReply::Split(vec![])],
        };
        assert_eq!(
            session.on_answer(&ours, &first, answer),
            Err(ReconcileError::TooManyRanges(2))
        );
    }

    #[test]
    fn a_responder_cannot_keep_a_session_going_forever() {
        let map: BTreeMap<PublicKey, u64> = (0..1000).map(|i| (key(i), 1)).collect();
        let ours = SyncSet::from_map(&map);
        let mut session = Reconciler::new(&ours);
        let mut rounds = 0;
        while !session.is_done() {
            rounds += 1;
            assert!(rounds <= MAX_ROUNDS, "the session never ends");
            let query = session.next_query(&ours, QUERY_BUDGET);
            // A hostile answer: every range split again, with fingerprints that never match.
            let replies = query
                .ranges
                .iter()
                .map(|rc| {
                    RangeReply::Split(vec![(rc.range.clone(), Fingerprint { count: 1, sum: 42 })])
                })
                .collect();
            session
                .on_answer(&ours, &query, SetAnswer { replies })
                .unwrap();
        }
        assert!(session.overflowed());
    }
}
