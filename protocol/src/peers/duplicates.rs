//! Which of a peer's connections to close when two nodes hold more than one.
//!
//! Two nodes that dial each other at the same moment (a Kademlia query on each side, or
//! each picking the other from its node records while the mesh forms) end up with two QUIC
//! connections, and libp2p keeps both for good. Each carries its own keep-alives, pings,
//! identify exchanges and acknowledgements, and gossipsub may send one way on one and the
//! other way on the other. In a 1,000-node mesh a third more connections than connected
//! pairs came from this (docs/ARCHITECTURE.md).
//!
//! Both ends must close the same connection without talking about it, so the rule reads
//! only what both ends know of each connection: which of the two dialled it.
//! - The connections dialled by the lower peer id are kept; those dialled by the higher one
//!   are closed, by both ends, as soon as one of the lower id's exists.
//! - Several connections dialled by the same node: only their dialer closes the later ones.
//!   The other end cannot tell which the dialer keeps, so it closes none of them.

/// One open connection to a peer, as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link<C> {
    /// The connection's handle.
    pub id: C,
    /// Whether this node dialled it (else the peer did).
    pub dialed: bool,
}

/// The connections to `peer` that this node should close, given all those open to it in
/// the order they were established. Empty when there is one, or none to close from here.
pub fn surplus<P: Ord, C: Copy>(me: &P, peer: &P, links: &[Link<C>]) -> Vec<C> {
    // `dialed` of the connections that are kept: the lower id's, if it has any.
    let lower_dials = me < peer;
    let kept_dialed = if links.iter().any(|l| l.dialed == lower_dials) {
        lower_dials
    } else {
        !lower_dials
    };
    let mut kept_first = false;
    links
        .iter()
        .filter(|l| {
            if l.dialed != kept_dialed {
                return true;
            }
            // One of the kept side's: the dialer keeps its oldest, the listener all.
            let later = kept_first && l.dialed;
            kept_first = true;
            later
        })
        .map(|l| l.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(id: u32, dialed: bool) -> Link<u32> {
        Link { id, dialed }
    }

    /// What both ends close of the same connections, each seeing them in its own order.
    /// Connection `id` is dialled by `dialers[id]` ("a" or "b").
    fn both_ends(dialers: &[&str], order_a: &[u32], order_b: &[u32]) -> (Vec<u32>, Vec<u32>) {
        let seen = |me: &str, order: &[u32]| -> Vec<Link<u32>> {
            order
                .iter()
                .map(|&id| link(id, dialers[id as usize] == me))
                .collect()
        };
        (
            surplus(&"a", &"b", &seen("a", order_a)),
            surplus(&"b", &"a", &seen("b", order_b)),
        )
    }

    #[test]
    fn one_connection_is_never_closed() {
        for (me, peer) in [("a", "b"), ("b", "a")] {
            for dialed in [true, false] {
                assert!(surplus(&me, &peer, &[link(7, dialed)]).is_empty());
            }
        }
        assert!(surplus::<_, u32>(&"a", &"b", &[]).is_empty());
    }

    #[test]
    fn a_simultaneous_dial_closes_the_higher_ids_connection_at_both_ends() {
        // Connection 0 dialled by a (the lower id), 1 by b; each end may see either first.
        for order_a in [[0, 1], [1, 0]] {
            for order_b in [[0, 1], [1, 0]] {
                let (a, b) = both_ends(&["a", "b"], &order_a, &order_b);
                assert_eq!(a, vec![1], "a sees {order_a:?}");
                assert_eq!(b, vec![1], "b sees {order_b:?}");
            }
        }
    }

    #[test]
    fn the_higher_ids_connections_stay_until_the_lower_id_has_one() {
        // b dialled twice, a not at all: only b closes, its later one, whatever a sees.
        let (a, b) = both_ends(&["b", "b"], &[1, 0], &[0, 1]);
        assert!(a.is_empty());
        assert_eq!(b, vec![1]);
    }

    #[test]
    fn the_dialer_of_several_keeps_its_oldest_and_the_listener_closes_none() {
        let (a, b) = both_ends(&["a", "a", "a"], &[0, 1, 2], &[2, 0, 1]);
        assert_eq!(a, vec![1, 2]);
        assert!(b.is_empty());
    }

    #[test]
    fn after_closing_both_ends_hold_one_common_connection() {
        // Every mix of three connections and both ends' orders of them.
        let orders = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        for mask in 0..8u32 {
            let dialers: Vec<&str> = (0..3)
                .map(|i| if mask & (1 << i) != 0 { "a" } else { "b" })
                .collect();
            for order_a in &orders {
                for order_b in &orders {
                    let (a, b) = both_ends(&dialers, order_a, order_b);
                    let left: Vec<u32> = (0..3)
                        .filter(|id| !a.contains(id) && !b.contains(id))
                        .collect();
                    assert_eq!(
                        left.len(),
                        1,
                        "dialers {dialers:?}, a sees {order_a:?}, b sees {order_b:?}: \
                         a closes {a:?}, b closes {b:?}"
                    );
                }
            }
        }
    }
}
