//! Per-consumer budgets for contract requests: what one consumer key may make a provider
//! store and do.
//!
//! A request costs the provider a signature check, a policy evaluation, a stored record, an
//! audit entry and, when the product needs manual approval, a line in its operator's
//! `share pending`. Without a budget one consumer fills all of that at wire speed. The
//! provider asks [`RequestBudget::admit`] before it does anything else with a verified
//! request; the counts of open requests come from the provider's store (its index), the
//! clock from the caller. A refusal is a [`BudgetRefusal`], sent back as
//! [`crate::contract::ContractReply::Busy`]: nothing is stored and nothing is audited.
//! Automatic approval waits for nobody, so the agreements one consumer holds in force are
//! bounded too ([`RequestBudget::check_live`]).
//!
//! The rate limit is a token bucket per consumer key ([`RateTable`]). The buckets
//! themselves are state a peer can make us keep (keys are free to make), so their number is
//! bounded too: a bucket that has refilled is the same as no bucket and is dropped first,
//! then the least recently used.
//!
//! Every contract message, a request or not, is answered by the node's actor: a status
//! batch reads up to [`MAX_STATUS_BATCH`](crate::contract::MAX_STATUS_BATCH) records, a
//! request or a revocation costs a signature check before any budget sees it. So each
//! peer's messages pass a second, wider bucket first ([`BudgetConfig::message_burst`],
//! [`BudgetConfig::message_refill_ms`]), before they are even decoded: an honest node sends
//! a status batch per provider every few seconds, a flood is answered `Busy` at once.

use std::collections::HashMap;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::identity::PublicKey;

/// Default most open (undecided) requests one consumer may have with one provider.
pub const DEFAULT_MAX_OPEN_PER_CONSUMER: u32 = 32;
/// Default most open requests a provider keeps from all consumers together.
pub const DEFAULT_MAX_OPEN_TOTAL: u32 = 1024;
/// Default most live (agreed, neither expired nor revoked) agreements one consumer may hold
/// with one provider.
pub const DEFAULT_MAX_LIVE_PER_CONSUMER: u32 = 256;
/// Default burst of requests one consumer may send at once.
pub const DEFAULT_BURST: u32 = 20;
/// Default refill of the request budget: one request per this many milliseconds.
pub const DEFAULT_REFILL_MS: u64 = 3_000;
/// Default time an undecided request waits for the provider's operator: 7 days.
/// Default burst of new descriptor versions and node records one key may gossip through a
/// node: past it, one every [`DEFAULT_GOSSIP_REFILL_MS`]. Every node forwards what it takes
/// to all its mesh peers, so without a bound one member publishing version after version
/// would make the whole mesh carry (and verify) its flood; with it, each node passes on at
/// most this rate per key, and the newest version still arrives by anti-entropy. Charged
/// only after the signature verifies and the version is new, so forgeries and copies of
/// another key's messages cannot spend that key's tokens.
pub const DEFAULT_GOSSIP_BURST: u32 = 16;
/// Default refill of the gossip bucket of one key: one message every 5 s.
pub const DEFAULT_GOSSIP_REFILL_MS: u64 = 5_000;
pub const DEFAULT_PENDING_TTL_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Default most consumers whose request rate is tracked at once.
pub const DEFAULT_MAX_TRACKED: usize = 4096;
/// Default burst of contract messages of any kind one peer may send at once.
pub const DEFAULT_MESSAGE_BURST: u32 = 64;
/// Default refill of the message budget: one message per this many milliseconds (20 a
/// second, against the one status batch per provider every 2 s an honest node sends).
pub const DEFAULT_MESSAGE_REFILL_MS: u64 = 50;

/// The limits, from the node's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetConfig {
    /// Most open (requested or pending) requests per consumer key: bounds what one key
    /// can park in the operator's queue.
    pub max_open_per_consumer: u32,
    /// Most open requests from all consumers together: bounds the queue against many keys.
    pub max_open_total: u32,
    /// Most live agreements per consumer key: bounds what automatic approval, which waits
    /// for nobody, lets one key add to the provider's store over time.
    pub max_live_per_consumer: u32,
    /// Requests one consumer may send back to back (the bucket's size).
    pub burst: u32,
    /// One more request is allowed every `refill_ms` milliseconds.
    pub refill_ms: u64,
    /// An open request with no decision after this long expires (a signed rejection).
    pub pending_ttl_ms: u64,
    /// Most token buckets kept (one per consumer key seen recently).
    pub max_tracked: usize,
    /// Contract messages of any kind one peer may send back to back.
    pub message_burst: u32,
    /// One more message is allowed every `message_refill_ms` milliseconds.
    pub message_refill_ms: u64,
}

impl BudgetConfig {
    /// The message limit: a bucket per peer, keyed as the caller knows its peers.
    pub fn message_table<K: Hash + Eq + Clone>(&self) -> RateTable<K> {
        RateTable::new(self.message_burst, self.message_refill_ms, self.max_tracked)
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            max_open_per_consumer: DEFAULT_MAX_OPEN_PER_CONSUMER,
            max_open_total: DEFAULT_MAX_OPEN_TOTAL,
            max_live_per_consumer: DEFAULT_MAX_LIVE_PER_CONSUMER,
            burst: DEFAULT_BURST,
            refill_ms: DEFAULT_REFILL_MS,
            pending_ttl_ms: DEFAULT_PENDING_TTL_MS,
            max_tracked: DEFAULT_MAX_TRACKED,
            message_burst: DEFAULT_MESSAGE_BURST,
            message_refill_ms: DEFAULT_MESSAGE_REFILL_MS,
        }
    }
}

/// Why a provider refused to consider a request now. Sent to the consumer in plain (it
/// changes nothing on either side, so there is nothing to sign or keep).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum BudgetRefusal {
    /// The consumer already has `open` undecided requests with this provider.
    #[error(
        "too many open requests: {open} pending (at most {max}); wait for answers or withdraw some"
    )]
    TooManyOpen {
        /// Open requests of this consumer.
        open: u32,
        /// The provider's limit per consumer.
        max: u32,
    },
    /// The consumer sent requests faster than the provider's rate limit.
    #[error("too many requests in a short time; try again in {} s", retry_after_ms.div_ceil(1000))]
    RateLimited {
        /// When the next request would be admitted.
        retry_after_ms: u64,
    },
    /// The provider's queue of undecided requests is full (from all consumers).
    #[error(
        "the provider has {open} undecided requests (at most {max}) and takes no more for now; try again later"
    )]
    ProviderFull {
        /// Open requests from everyone.
        open: u32,
        /// The provider's limit.
        max: u32,
    },
    /// The consumer already holds `live` agreements in force with this provider. (Last:
    /// postcard encodes a variant by its index, so earlier ones keep theirs.)
    #[error(
        "too many live agreements: {live} in force with this provider (at most {max}); let one expire or revoke one that is no longer needed"
    )]
    TooManyLive {
        /// Live agreements of this consumer.
        live: u32,
        /// The provider's limit per consumer.
        max: u32,
    },
}

/// One key's token bucket, kept as its theoretical arrival time (the generic cell rate
/// algorithm): exact integer arithmetic, one number per key.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// The time at which the bucket will be full again, Unix ms; at or before now: full.
    tat_ms: u64,
    /// Last time this key was seen, for least-recently-used eviction.
    seen_ms: u64,
}

/// Token buckets by key: `burst` back to back, then one every `refill_ms`; at most
/// `max_tracked` buckets kept (full ones dropped first, then the least recently seen).
#[derive(Debug)]
pub struct RateTable<K> {
    burst: u32,
    refill_ms: u64,
    max_tracked: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> RateTable<K> {
    /// Empty buckets (all full).
    pub fn new(burst: u32, refill_ms: u64, max_tracked: usize) -> Self {
        Self {
            burst,
            refill_ms: refill_ms.max(1),
            max_tracked: max_tracked.max(1),
            buckets: HashMap::new(),
        }
    }

    /// How far the arrival time may run ahead of now: the burst after the first token.
    fn tolerance_ms(&self) -> u64 {
        u64::from(self.burst.max(1) - 1).saturating_mul(self.refill_ms)
    }

    /// When `key` has no token at `now_ms`: how long until it has one. Takes nothing, but
    /// counts as seeing `key`.
    pub fn limited(&mut self, key: &K, now_ms: u64) -> Option<u64> {
        let tat = self
            .buckets
            .get(key)
            .map_or(now_ms, |b| b.tat_ms.max(now_ms));
        let ahead = tat - now_ms;
        (ahead > self.tolerance_ms()).then(|| {
            self.store(key.clone(), tat, now_ms);
            ahead - self.tolerance_ms()
        })
    }

    /// Takes one of `key`'s tokens at `now_ms`, or says how long until there is one (a
    /// refusal takes nothing, so a peer that waits as told gets through).
    pub fn take(&mut self, key: &K, now_ms: u64) -> Result<(), u64> {
        if let Some(retry_after_ms) = self.limited(key, now_ms) {
            return Err(retry_after_ms);
        }
        let tat = self
            .buckets
            .get(key)
            .map_or(now_ms, |b| b.tat_ms.max(now_ms));
        self.store(key.clone(), tat.saturating_add(self.refill_ms), now_ms);
        Ok(())
    }

    /// Keeps a bucket, evicting others when the table is full.
    fn store(&mut self, key: K, tat_ms: u64, now_ms: u64) {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_tracked {
            // A full bucket is the same as none.
            self.buckets.retain(|_, b| b.tat_ms > now_ms);
            if self.buckets.len() >= self.max_tracked
                && let Some(oldest) = self
                    .buckets
                    .iter()
                    .min_by_key(|(_, b)| b.seen_ms)
                    .map(|(k, _)| k.clone())
            {
                self.buckets.remove(&oldest);
            }
        }
        self.buckets.insert(
            key,
            Bucket {
                tat_ms,
                seen_ms: now_ms,
            },
        );
    }

    /// Buckets held now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// The provider's request budgets: token buckets per consumer and the open-request limits.
#[derive(Debug)]
pub struct RequestBudget {
    /// The limits.
    config: BudgetConfig,
    /// Request buckets of consumers seen recently; at most `config.max_tracked`.
    buckets: RateTable<PublicKey>,
}

impl RequestBudget {
    /// A budget with no history.
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            config,
            buckets: RateTable::new(config.burst, config.refill_ms, config.max_tracked),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// Decides whether a verified request from `consumer` may be considered at `now_ms`.
    /// `open_by_consumer` and `open_total` are the provider's current counts of undecided
    /// requests (from its store). Takes one token when admitted; a refused request takes
    /// none, so a consumer that waits as told is admitted.
    pub fn admit(
        &mut self,
        consumer: &PublicKey,
        open_by_consumer: u32,
        open_total: u32,
        now_ms: u64,
    ) -> Result<(), BudgetRefusal> {
        let max = self.config.max_open_per_consumer;
        if open_by_consumer >= max {
            return Err(BudgetRefusal::TooManyOpen {
                open: open_by_consumer,
                max,
            });
        }
        if let Some(retry_after_ms) = self.buckets.limited(consumer, now_ms) {
            return Err(BudgetRefusal::RateLimited { retry_after_ms });
        }
        let max_total = self.config.max_open_total;
        if open_total >= max_total {
            return Err(BudgetRefusal::ProviderFull {
                open: open_total,
                max: max_total,
            });
        }
        self.take_token(consumer, now_ms)
    }

    /// The rate limit alone: takes one token of `consumer`'s bucket at `now_ms`, or refuses.
    /// With [`RequestBudget::check_open`], the two halves of [`RequestBudget::admit`] for a
    /// provider that applies the open-request limits only to requests it would park.
    pub fn take_token(&mut self, consumer: &PublicKey, now_ms: u64) -> Result<(), BudgetRefusal> {
        self.buckets
            .take(consumer, now_ms)
            .map_err(|retry_after_ms| BudgetRefusal::RateLimited { retry_after_ms })
    }

    /// The open-request limits alone, for a request that would wait for the operator.
    pub fn check_open(&self, open_by_consumer: u32, open_total: u32) -> Result<(), BudgetRefusal> {
        let c = &self.config;
        if open_by_consumer >= c.max_open_per_consumer {
            return Err(BudgetRefusal::TooManyOpen {
                open: open_by_consumer,
                max: c.max_open_per_consumer,
            });
        }
        if open_total >= c.max_open_total {
            return Err(BudgetRefusal::ProviderFull {
                open: open_total,
                max: c.max_open_total,
            });
        }
        Ok(())
    }

    /// The live-agreement limit, for a request that would be approved at once: automatic
    /// approval waits for nobody, so without it one consumer adds an agreement at every
    /// token for as long as contracts last. `live_by_consumer` is the provider's count of
    /// the consumer's agreements in force (from its store).
    pub fn check_live(&self, live_by_consumer: u32) -> Result<(), BudgetRefusal> {
        let max = self.config.max_live_per_consumer;
        if live_by_consumer >= max {
            return Err(BudgetRefusal::TooManyLive {
                live: live_by_consumer,
                max,
            });
        }
        Ok(())
    }

    /// Buckets held now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.buckets.tracked()
    }

    /// Whether a request made at `requested_ms` and still undecided has expired at `now_ms`.
    pub fn pending_expired(&self, requested_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(requested_ms) >= self.config.pending_ttl_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    const NOW: u64 = 1_700_000_000_000;

    fn key(n: u8) -> PublicKey {
        Identity::from_secret_bytes([n; 32]).public_key()
    }

    fn config() -> BudgetConfig {
        BudgetConfig {
            max_open_per_consumer: 3,
            max_open_total: 10,
            max_live_per_consumer: 5,
            burst: 4,
            refill_ms: 1000,
            pending_ttl_ms: 5000,
            max_tracked: 3,
            message_burst: 6,
            message_refill_ms: 100,
        }
    }

    #[test]
    fn open_requests_per_consumer_are_bounded() {
        let mut b = RequestBudget::new(config());
        assert_eq!(b.admit(&key(1), 2, 2, NOW), Ok(()));
        let refusal = b.admit(&key(1), 3, 3, NOW).unwrap_err();
        assert_eq!(refusal, BudgetRefusal::TooManyOpen { open: 3, max: 3 });
        assert_eq!(
            refusal.to_string(),
            "too many open requests: 3 pending (at most 3); wait for answers or withdraw some"
        );
        // Another consumer is not affected.
        assert_eq!(b.admit(&key(2), 0, 3, NOW), Ok(()));
    }

    #[test]
    fn the_total_is_bounded_against_many_keys() {
        let mut b = RequestBudget::new(config());
        assert_eq!(
            b.admit(&key(9), 0, 10, NOW),
            Err(BudgetRefusal::ProviderFull { open: 10, max: 10 })
        );
        assert_eq!(b.admit(&key(9), 0, 9, NOW), Ok(()));
    }

    #[test]
    fn token_bucket_allows_a_burst_then_the_refill_rate() {
        let mut b = RequestBudget::new(config());
        for _ in 0..4 {
            assert_eq!(b.admit(&key(1), 0, 0, NOW), Ok(()));
        }
        assert_eq!(
            b.admit(&key(1), 0, 0, NOW),
            Err(BudgetRefusal::RateLimited {
                retry_after_ms: 1000
            })
        );
        // Refused requests cost nothing; 400 ms later 600 ms are still missing.
        assert_eq!(
            b.admit(&key(1), 0, 0, NOW + 400),
            Err(BudgetRefusal::RateLimited {
                retry_after_ms: 600
            })
        );
        assert_eq!(b.admit(&key(1), 0, 0, NOW + 1000), Ok(()));
        assert!(b.admit(&key(1), 0, 0, NOW + 1000).is_err());
        // A long pause refills to the burst, no further.
        for _ in 0..4 {
            assert_eq!(b.admit(&key(1), 0, 0, NOW + 60_000), Ok(()));
        }
        assert!(b.admit(&key(1), 0, 0, NOW + 60_000).is_err());
        // A clock that goes backwards gives nothing.
        assert!(b.admit(&key(1), 0, 0, NOW).is_err());
    }

    #[test]
    fn a_flood_of_2000_is_admitted_at_the_burst_then_the_rate() {
        let mut b = RequestBudget::new(BudgetConfig::default());
        let admitted = (0..2000u64)
            .filter(|i| b.admit(&key(1), 0, 0, NOW + i * 10).is_ok())
            .count();
        // 20 s of flood: the burst of 20 plus one per 3 s.
        assert_eq!(admitted, 20 + 6);
    }

    #[test]
    fn tracked_buckets_are_bounded() {
        let mut b = RequestBudget::new(config());
        for n in 0..50u8 {
            let _ = b.admit(&key(n), 0, 0, NOW + u64::from(n));
            assert!(b.tracked() <= 3);
        }
        // The most recent consumer is still limited after eviction pressure.
        for _ in 0..4 {
            let _ = b.admit(&key(200), 0, 0, NOW + 100);
        }
        assert!(b.admit(&key(200), 0, 0, NOW + 100).is_err());
    }

    #[test]
    fn the_two_halves_decide_as_admit_does() {
        let mut b = RequestBudget::new(config());
        for _ in 0..4 {
            assert_eq!(b.take_token(&key(1), NOW), Ok(()));
        }
        assert_eq!(
            b.take_token(&key(1), NOW),
            Err(BudgetRefusal::RateLimited {
                retry_after_ms: 1000
            })
        );
        assert_eq!(b.check_open(2, 9), Ok(()));
        assert_eq!(
            b.check_open(3, 0),
            Err(BudgetRefusal::TooManyOpen { open: 3, max: 3 })
        );
        assert_eq!(
            b.check_open(0, 10),
            Err(BudgetRefusal::ProviderFull { open: 10, max: 10 })
        );
    }

    #[test]
    fn messages_pass_a_wider_bucket_of_their_own_per_peer() {
        let mut messages = config().message_table::<u32>();
        // The burst of 6, then one per 100 ms; the refusal says when.
        for _ in 0..6 {
            assert_eq!(messages.take(&1, NOW), Ok(()));
        }
        assert_eq!(messages.take(&1, NOW), Err(100));
        assert_eq!(messages.take(&1, NOW + 40), Err(60));
        assert_eq!(messages.take(&1, NOW + 100), Ok(()));
        // Another peer has its own bucket.
        assert_eq!(messages.take(&2, NOW), Ok(()));
        // The table is bounded like the request buckets.
        for peer in 10..100 {
            let _ = messages.take(&peer, NOW + 200);
            assert!(messages.tracked() <= 3);
        }
    }

    #[test]
    fn a_flood_of_messages_is_answered_at_the_default_burst_then_the_rate() {
        let mut messages = BudgetConfig::default().message_table::<u8>();
        // A message every millisecond for 10 s: the burst of 64 plus 20 a second.
        let taken = (0..=10_000u64)
            .filter(|i| messages.take(&7, NOW + i).is_ok())
            .count();
        assert_eq!(taken, 64 + 200);
        // An honest node's status batch every 2 s is never refused.
        let mut honest = BudgetConfig::default().message_table::<u8>();
        assert!((0..1000u64).all(|i| honest.take(&1, NOW + i * 2000).is_ok()));
    }

    #[test]
    fn live_agreements_per_consumer_are_bounded() {
        let b = RequestBudget::new(config());
        assert_eq!(b.check_live(0), Ok(()));
        assert_eq!(b.check_live(4), Ok(()));
        let refusal = b.check_live(5).unwrap_err();
        assert_eq!(refusal, BudgetRefusal::TooManyLive { live: 5, max: 5 });
        assert!(
            refusal.to_string().contains("let one expire or revoke one"),
            "{refusal}"
        );
        assert_eq!(
            RequestBudget::new(BudgetConfig::default()).check_live(255),
            Ok(())
        );
        assert!(
            RequestBudget::new(BudgetConfig::default())
                .check_live(256)
                .is_err()
        );
    }

    #[test]
    fn pending_requests_expire_after_the_ttl() {
        let b = RequestBudget::new(config());
        assert!(!b.pending_expired(NOW, NOW + 4999));
        assert!(b.pending_expired(NOW, NOW + 5000));
        assert!(!b.pending_expired(NOW + 10, NOW));
    }
}
