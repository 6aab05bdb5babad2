//! Keeping both parties' copies of a contract in step: what a consumer does with the first
//! answer to its request, which contracts a party follows up and when, how it backs off from
//! a silent counterparty, how it pairs a status batch's answers with what it asked, and which
//! decision notices from a provider it applies.
//!
//! Pure, like the rest of the crate: the node passes in the state of its records, the
//! sender's key and its intervals, and does the sending and the storing itself
//! (`node::contracts`). The signatures of whatever is applied are checked by the same code as
//! a status reply's, never here.

use std::time::Duration;

use crate::budget::BudgetRefusal;
use crate::contract::{AgreementId, ContractReply, ContractState, ContractTerms, StatusEntry};
use crate::identity::PublicKey;

/// Default delay between a consumer's status polls of its undecided requests. Polling is the
/// fallback: a provider pushes its decision ([`crate::ContractMessage::Decided`]) at once.
pub const DEFAULT_UNDECIDED_POLL: Duration = Duration::from_secs(2);
/// Default delay between re-checks of agreed contracts with a connected counterparty (how a
/// party that was offline when the other revoked catches up).
pub const DEFAULT_AGREED_POLL: Duration = Duration::from_secs(30);
/// Default longest delay between polls of a counterparty that does not answer.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How often a party follows its contracts up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollIntervals {
    /// Between a consumer's polls of one undecided (requested or pending) contract, and the
    /// first delay after a failure.
    pub undecided: Duration,
    /// Between re-checks of one agreed contract.
    pub agreed: Duration,
    /// Longest delay after repeated failures (the delay doubles up to it).
    pub max_backoff: Duration,
}

impl Default for PollIntervals {
    fn default() -> Self {
        Self {
            undecided: DEFAULT_UNDECIDED_POLL,
            agreed: DEFAULT_AGREED_POLL,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }
}

/// Which party of a contract this node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// It owns the product and decides.
    Provider,
    /// It sent the request.
    Consumer,
}

/// How a party follows up one contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FollowUp {
    /// Send the signed request again, alone: nothing says the provider got it (its answer was
    /// lost). Idempotent on the provider's side: same terms, same id.
    Resend {
        /// Delay before the first resend.
        first: Duration,
        /// Delay between resends.
        every: Duration,
    },
    /// Ask for the contract's state in one status batch per counterparty.
    Status {
        /// Delay before the first poll.
        first: Duration,
        /// Delay between polls.
        every: Duration,
        /// Dial the counterparty when not connected (otherwise wait for a connection).
        dial: bool,
    },
}

/// How `side` follows up a contract in `state` (the effective state, expiry folded in);
/// `valid` says whether its validity window has not ended yet. `None`: nothing to ask (a
/// final state, a provider's undecided request, or an undecided request that has ended).
pub fn follow_up(
    side: Side,
    state: ContractState,
    valid: bool,
    intervals: &PollIntervals,
) -> Option<FollowUp> {
    match (side, state) {
        (Side::Consumer, ContractState::Requested) if valid => Some(FollowUp::Resend {
            first: Duration::ZERO,
            every: intervals.undecided,
        }),
        (Side::Consumer, ContractState::Pending) if valid => Some(FollowUp::Status {
            first: intervals.undecided,
            every: intervals.undecided,
            dial: true,
        }),
        (_, ContractState::Agreed) => Some(FollowUp::Status {
            first: intervals.agreed,
            every: intervals.agreed,
            dial: false,
        }),
        _ => None,
    }
}

/// After a follow-up went unanswered with the current `backoff`: how long to wait before the
/// next one, and the backoff after that (doubled, at most `intervals.max_backoff`, and never
/// shorter than it was: a poll interval above the cap is not shortened by failures).
pub fn after_failure(backoff: Duration, intervals: &PollIntervals) -> (Duration, Duration) {
    let cap = intervals.max_backoff.max(backoff);
    (backoff, backoff.saturating_mul(2).min(cap))
}

/// What a consumer does with the provider's first answer to its request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FirstAnswer {
    /// A signed answer or a state (agreed, pending, rejected, revoked): verified and recorded
    /// like any status reply.
    Record(ContractReply),
    /// Over the consumer's budget: the provider stored nothing, so neither does the consumer.
    Busy(BudgetRefusal),
    /// Refused without a signed answer (malformed, unknown to it, the wrong kind of answer):
    /// the provider stored nothing, so neither does the consumer. Says why.
    Refused(String),
}

/// Sorts the provider's first answer to a request ([`FirstAnswer`]).
pub fn first_answer(reply: ContractReply) -> FirstAnswer {
    match reply {
        ContractReply::Busy(refusal) => FirstAnswer::Busy(refusal),
        ContractReply::Error(message) => FirstAnswer::Refused(message),
        ContractReply::Unknown(_) => FirstAnswer::Refused("it does not know the request".into()),
        ContractReply::Statuses(_) => {
            FirstAnswer::Refused("it answered with a status batch".into())
        }
        reply @ (ContractReply::Agreed(_)
        | ContractReply::Pending(_)
        | ContractReply::Rejected(_)
        | ContractReply::Revoked(_)) => FirstAnswer::Record(reply),
    }
}

/// A status batch answered with more entries than asked for, or with something else than
/// entries: the whole answer is dropped and every contract asked is polled again later.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchAnswerError {
    /// More entries than contracts asked.
    #[error("the status batch asked for {asked} contracts and got {answered} answers")]
    TooMany {
        /// Contracts asked.
        asked: usize,
        /// Entries received.
        answered: usize,
    },
    /// Not a [`ContractReply::Statuses`].
    #[error("a status batch was answered with something else than statuses")]
    NotStatuses,
}

/// Pairs the answer to a status batch with the contracts asked, in the order asked. Fewer
/// entries than asked is normal (they did not fit in one reply): the contracts left out are
/// simply asked again at their next poll.
pub fn pair_statuses(
    asked: &[AgreementId],
    reply: ContractReply,
) -> Result<Vec<(AgreementId, ContractReply)>, BatchAnswerError> {
    let ContractReply::Statuses(entries) = reply else {
        return Err(BatchAnswerError::NotStatuses);
    };
    if entries.len() > asked.len() {
        return Err(BatchAnswerError::TooMany {
            asked: asked.len(),
            answered: entries.len(),
        });
    }
    Ok(asked
        .iter()
        .copied()
        .zip(entries.into_iter().map(StatusEntry::into_reply))
        .collect())
}

/// Why a decision notice ([`crate::ContractMessage::Decided`]) is ignored: the receiver
/// applies a notice only to a request it sent itself to the notice's sender and that is
/// still undecided. Ignored notices change nothing and are only counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IgnoredNotice {
    /// The receiver holds no contract with that id (or the decision does not decode).
    #[error("about a contract this node does not hold")]
    Unknown,
    /// The receiver is not the consumer of that contract.
    #[error("about a contract this node did not request")]
    NotOurRequest,
    /// The sender is not the provider of that contract.
    #[error("not sent by the contract's provider")]
    NotFromProvider,
    /// The contract is no longer undecided here (the notice is late, a repeat or a replay).
    #[error("about a contract that is already {0}")]
    AlreadySettled(ContractState),
}

impl IgnoredNotice {
    /// Every reason, for counters.
    pub const ALL: [&'static str; 4] =
        ["unknown", "not_our_request", "not_from_provider", "settled"];

    /// A stable label for counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            IgnoredNotice::Unknown => "unknown",
            IgnoredNotice::NotOurRequest => "not_our_request",
            IgnoredNotice::NotFromProvider => "not_from_provider",
            IgnoredNotice::AlreadySettled(_) => "settled",
        }
    }
}

/// Whether a decision notice from `sender` may be applied by `me`, which holds `held` (the
/// terms and stored state of the contract the notice names, if any). Checked before any
/// signature, so a stream of junk notices costs the receiver one lookup each and nothing
/// stored. `Ok` means: verify the decision against these terms exactly like a status reply,
/// and apply it.
pub fn check_notice(
    me: &PublicKey,
    sender: &PublicKey,
    held: Option<(&ContractTerms, ContractState)>,
) -> Result<(), IgnoredNotice> {
    let Some((terms, state)) = held else {
        return Err(IgnoredNotice::Unknown);
    };
    if terms.consumer != *me {
        return Err(IgnoredNotice::NotOurRequest);
    }
    if terms.provider != *sender {
        return Err(IgnoredNotice::NotFromProvider);
    }
    match state {
        ContractState::Requested | ContractState::Pending => Ok(()),
        settled => Err(IgnoredNotice::AlreadySettled(settled)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Columns;
    use crate::descriptor::ProductId;
    use crate::identity::Identity;

    fn key(n: u8) -> PublicKey {
        Identity::from_secret_bytes([n; 32]).public_key()
    }

    fn terms(provider: PublicKey, consumer: PublicKey) -> ContractTerms {
        ContractTerms {
            product: ProductId {
                owner: provider,
                name: "orders".into(),
            },
            provider_domain: "sales".into(),
            consumer_domain: "churn".into(),
            provider,
            consumer,
            min_version: 1,
            max_version: None,
            purpose: "analytics".into(),
            columns: Columns::AllCurrentAndFuture,
            filter: None,
            valid_from_ms: 0,
            valid_until_ms: 1_000,
            nonce: [0; 16],
        }
    }

    #[test]
    fn only_own_undecided_requests_to_the_sender_take_a_notice() {
        let (me, provider, stranger) = (key(1), key(2), key(3));
        let mine = terms(provider, me);
        let theirs = terms(me, stranger);
        let other = terms(stranger, me);
        let check = |sender: &PublicKey, held| check_notice(&me, sender, held);
        // The one case that applies: our request to the sender, still undecided.
        for state in [ContractState::Requested, ContractState::Pending] {
            assert_eq!(check(&provider, Some((&mine, state))), Ok(()));
        }
        // Everything else is ignored.
        assert_eq!(check(&provider, None), Err(IgnoredNotice::Unknown));
        assert_eq!(
            check(&stranger, Some((&mine, ContractState::Pending))),
            Err(IgnoredNotice::NotFromProvider)
        );
        // A contract where we are the provider: a consumer cannot decide for us.
        assert_eq!(
            check(&stranger, Some((&theirs, ContractState::Pending))),
            Err(IgnoredNotice::NotOurRequest)
        );
        // Our request, but to someone else: the sender cannot decide for that provider.
        assert_eq!(
            check(&provider, Some((&other, ContractState::Pending))),
            Err(IgnoredNotice::NotFromProvider)
        );
        for state in [
            ContractState::Agreed,
            ContractState::Rejected,
            ContractState::Revoked,
            ContractState::Expired,
        ] {
            let ignored = check(&provider, Some((&mine, state))).unwrap_err();
            assert_eq!(ignored, IgnoredNotice::AlreadySettled(state));
            assert_eq!(ignored.as_str(), "settled");
        }
    }

    #[test]
    fn ignored_notice_labels_are_listed() {
        for reason in [
            IgnoredNotice::Unknown,
            IgnoredNotice::NotOurRequest,
            IgnoredNotice::NotFromProvider,
            IgnoredNotice::AlreadySettled(ContractState::Agreed),
        ] {
            assert!(IgnoredNotice::ALL.contains(&reason.as_str()), "{reason:?}");
        }
    }

    #[test]
    fn follow_ups_by_side_and_state() {
        let i = PollIntervals {
            undecided: Duration::from_secs(5),
            agreed: Duration::from_secs(40),
            max_backoff: Duration::from_secs(60),
        };
        use ContractState as S;
        use Side::{Consumer, Provider};
        let table = [
            (
                Consumer,
                S::Requested,
                true,
                Some(FollowUp::Resend {
                    first: Duration::ZERO,
                    every: i.undecided,
                }),
            ),
            (
                Consumer,
                S::Pending,
                true,
                Some(FollowUp::Status {
                    first: i.undecided,
                    every: i.undecided,
                    dial: true,
                }),
            ),
            (Consumer, S::Requested, false, None),
            (Consumer, S::Pending, false, None),
            (Provider, S::Pending, true, None),
            (Provider, S::Requested, true, None),
            (
                Provider,
                S::Agreed,
                true,
                Some(FollowUp::Status {
                    first: i.agreed,
                    every: i.agreed,
                    dial: false,
                }),
            ),
            (
                Consumer,
                S::Agreed,
                true,
                Some(FollowUp::Status {
                    first: i.agreed,
                    every: i.agreed,
                    dial: false,
                }),
            ),
            (Consumer, S::Rejected, true, None),
            (Consumer, S::Revoked, true, None),
            (Provider, S::Expired, false, None),
        ];
        for (side, state, valid, expected) in table {
            assert_eq!(
                follow_up(side, state, valid, &i),
                expected,
                "{side:?} {state} valid={valid}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let i = PollIntervals::default();
        let mut backoff = i.undecided;
        let mut waits = Vec::new();
        for _ in 0..8 {
            let (wait, next) = after_failure(backoff, &i);
            waits.push(wait.as_secs());
            backoff = next;
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        // An interval above the cap stays as it is.
        let hour = Duration::from_secs(3600);
        assert_eq!(after_failure(hour, &i), (hour, hour));
    }

    #[test]
    fn first_answers_are_recorded_only_when_they_are_a_state() {
        let id = AgreementId([1; 32]);
        let pending = ContractReply::Pending(id);
        assert_eq!(first_answer(pending.clone()), FirstAnswer::Record(pending));
        let busy = BudgetRefusal::TooManyOpen { open: 32, max: 32 };
        assert_eq!(
            first_answer(ContractReply::Busy(busy.clone())),
            FirstAnswer::Busy(busy)
        );
        assert_eq!(
            first_answer(ContractReply::Error("malformed".into())),
            FirstAnswer::Refused("malformed".into())
        );
        for reply in [ContractReply::Unknown(id), ContractReply::Statuses(vec![])] {
            assert!(
                matches!(first_answer(reply.clone()), FirstAnswer::Refused(_)),
                "{reply:?}"
            );
        }
    }

    #[test]
    fn status_answers_pair_in_order_and_never_exceed_the_question() {
        let ids = [
            AgreementId([1; 32]),
            AgreementId([2; 32]),
            AgreementId([3; 32]),
        ];
        let reply = ContractReply::Statuses(vec![
            StatusEntry::Pending(ids[0]),
            StatusEntry::Unknown(ids[1]),
        ]);
        assert_eq!(
            pair_statuses(&ids, reply),
            Ok(vec![
                (ids[0], ContractReply::Pending(ids[0])),
                (ids[1], ContractReply::Unknown(ids[1])),
            ])
        );
        let too_many = ContractReply::Statuses(vec![StatusEntry::Pending(ids[0]); 4]);
        assert_eq!(
            pair_statuses(&ids, too_many),
            Err(BatchAnswerError::TooMany {
                asked: 3,
                answered: 4
            })
        );
        assert_eq!(
            pair_statuses(&ids, ContractReply::Pending(ids[0])),
            Err(BatchAnswerError::NotStatuses)
        );
    }
}
