//! What a provider keeps of contracts that are over.
//!
//! A contract that was rejected, revoked or has expired can never be used again, but its
//! record stays: it answers the consumer's status polls and the operator's `share list`.
//! Every policy rejection of a consumer's request leaves one, and the request budget lets a
//! consumer send a request every few seconds for as long as it likes, so without a bound
//! these records grow for ever at a pace a peer chooses. A provider therefore keeps the
//! newest [`ClosedRetention::per_consumer`] closed records of each consumer, and the newest
//! [`ClosedRetention::total`] of all consumers together; older ones are removed, with their
//! index entries and any stored revocation. The audit chain keeps every decision.
//!
//! Removing a closed record gives a peer nothing it could not have already:
//!
//! - a request sent again after its record is gone is evaluated like any new request of
//!   the same consumer, under the same budget and the same policy (only that consumer can
//!   send it: the request is signed by its key and must come from its peer id), which it
//!   could have sent with a fresh nonce anyway;
//! - an expired or revoked agreement cannot be used once its record is gone: the data plane
//!   serves only agreements it finds in the store.
//!
//! The counting is in the store; how many to remove, given the counts, is decided here.

use serde::{Deserialize, Serialize};

/// Default closed contract records kept per consumer key.
pub const DEFAULT_CLOSED_PER_CONSUMER: u32 = 256;
/// Default closed contract records kept from all consumers together.
pub const DEFAULT_CLOSED_TOTAL: u32 = 16_384;
/// Most records removed after one write: a store that holds more than its bounds (written
/// before them, or with larger ones) shrinks over the next writes instead of in one long
/// pause of the node's actor.
pub const PRUNE_BATCH: usize = 64;

/// How many closed records a provider keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedRetention {
    /// Most closed records of one consumer key.
    pub per_consumer: u32,
    /// Most closed records of all consumers together.
    pub total: u32,
}

impl Default for ClosedRetention {
    fn default() -> Self {
        Self {
            per_consumer: DEFAULT_CLOSED_PER_CONSUMER,
            total: DEFAULT_CLOSED_TOTAL,
        }
    }
}

impl ClosedRetention {
    /// How many closed records of one consumer the store needs to count to decide: one
    /// past what may be removed at once.
    pub fn consumer_count_limit(&self) -> usize {
        (self.per_consumer as usize).saturating_add(PRUNE_BATCH)
    }

    /// How many of one consumer's oldest closed records to remove when it has `count`
    /// (counted up to [`Self::consumer_count_limit`]); at most [`PRUNE_BATCH`].
    pub fn surplus_of_consumer(&self, count: usize) -> usize {
        count
            .saturating_sub(self.per_consumer as usize)
            .min(PRUNE_BATCH)
    }

    /// How many of all consumers' oldest closed records to remove when there are `count`;
    /// at most [`PRUNE_BATCH`].
    pub fn surplus_overall(&self, count: u64) -> usize {
        usize::try_from(count.saturating_sub(u64::from(self.total)))
            .unwrap_or(usize::MAX)
            .min(PRUNE_BATCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: ClosedRetention = ClosedRetention {
        per_consumer: 3,
        total: 10,
    };

    #[test]
    fn nothing_is_removed_within_the_bounds() {
        assert_eq!(SMALL.surplus_of_consumer(0), 0);
        assert_eq!(SMALL.surplus_of_consumer(3), 0);
        assert_eq!(SMALL.surplus_overall(10), 0);
    }

    #[test]
    fn the_records_past_each_bound_are_removed() {
        assert_eq!(SMALL.surplus_of_consumer(4), 1);
        assert_eq!(SMALL.surplus_overall(12), 2);
    }

    #[test]
    fn a_store_far_past_its_bounds_shrinks_a_batch_at_a_time() {
        assert_eq!(
            SMALL.surplus_of_consumer(SMALL.consumer_count_limit()),
            PRUNE_BATCH
        );
        assert_eq!(SMALL.surplus_overall(u64::MAX), PRUNE_BATCH);
        // Counting stops where it decides nothing more: a count at the limit removes a
        // whole batch, as any larger one would.
        assert_eq!(SMALL.consumer_count_limit(), 3 + PRUNE_BATCH);
    }
}
