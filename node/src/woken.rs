//! Connection handlers polled only when they have something to do.
//!
//! libp2p runs each connection as one task and polls the handlers of every behaviour, in
//! turn, whenever anything on the connection wakes that task: each gossip message received
//! or sent polls the identify, ping, Kademlia and three request-response handlers too, each
//! of which polls its own queues, timers and streams, only to find them idle. In a mesh that
//! gossips, those polls were about a tenth of a node's CPU (docs/ARCHITECTURE.md, "Handlers
//! polled only when woken").
//!
//! [`WhenWoken`] wraps a behaviour so that its handler is polled only after something
//! concerns it: a wake-up it asked for (its streams, timers and channels wake it through a
//! waker of ours, which notes the wake-up and passes it on to the connection's task), an
//! event from its behaviour or the connection, or an event it returned (it may have more).
//! Otherwise a poll returns `Pending` at the cost of two atomic operations. This relies on
//! nothing but the contract of `poll`: a handler that returns `Pending` has arranged to be
//! woken when it can make progress.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::task::{ArcWake, AtomicWaker, waker_ref};
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// A behaviour whose connection handlers are polled only when woken (see the module
/// documentation). Everything else is the inner behaviour's, which it dereferences to.
#[derive(Debug)]
pub(crate) struct WhenWoken<B>(pub(crate) B);

impl<B> Deref for WhenWoken<B> {
    type Target = B;

    fn deref(&self) -> &B {
        &self.0
    }
}

impl<B> DerefMut for WhenWoken<B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.0
    }
}

impl<B> From<B> for WhenWoken<B> {
    fn from(behaviour: B) -> Self {
        Self(behaviour)
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for WhenWoken<B> {
    type ConnectionHandler = WokenHandler<THandler<B>>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.0
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.0
            .handle_established_inbound_connection(connection_id, peer, local_addr, remote_addr)
            .map(WokenHandler::new)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.0.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.0
            .handle_established_outbound_connection(
                connection_id,
                peer,
                addr,
                role_override,
                port_use,
            )
            .map(WokenHandler::new)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.0.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.0
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.0.poll(cx)
    }
}

/// What the inner handler's wakers share: whether it was woken since it was last polled,
/// and the waker of the connection's task, which every wake-up is passed on to.
#[derive(Debug)]
struct Wake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl ArcWake for Wake {
    fn wake_by_ref(arc: &Arc<Self>) {
        arc.woken.store(true, Ordering::Release);
        arc.task.wake();
    }
}

/// The handler of a [`WhenWoken`] behaviour.
#[derive(Debug)]
pub(crate) struct WokenHandler<H> {
    inner: H,
    wake: Arc<Wake>,
}

impl<H> WokenHandler<H> {
    fn new(inner: H) -> Self {
        Self {
            inner,
            // A new handler is polled once: it may have work from the start.
            wake: Arc::new(Wake {
                woken: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
        }
    }

    /// Something was handed to the handler: poll it next time.
    fn concerned(&self) {
        self.wake.woken.store(true, Ordering::Release);
    }
}

impl<H: ConnectionHandler> ConnectionHandler for WokenHandler<H> {
    type FromBehaviour = H::FromBehaviour;
    type ToBehaviour = H::ToBehaviour;
    type InboundProtocol = H::InboundProtocol;
    type OutboundProtocol = H::OutboundProtocol;
    type InboundOpenInfo = H::InboundOpenInfo;
    type OutboundOpenInfo = H::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        self.inner.listen_protocol()
    }

    fn connection_keep_alive(&self) -> bool {
        self.inner.connection_keep_alive()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        // Registered first, so that a wake-up during the inner poll reaches the task.
        self.wake.task.register(cx.waker());
        if !self.wake.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = waker_ref(&self.wake);
        let polled = self.inner.poll(&mut Context::from_waker(&waker));
        if polled.is_ready() {
            // It may have more to give.
            self.concerned();
        }
        polled
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        self.inner.poll_close(cx)
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        self.concerned();
        self.inner.on_behaviour_event(event);
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        self.concerned();
        self.inner.on_connection_event(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker_ref;
    use libp2p::core::upgrade::DeniedUpgrade;
    use libp2p::swarm::handler::AddressChange;
    use std::task::Waker;

    /// A handler that counts its polls, keeps the waker it was last polled with and returns
    /// the events it was given, one per poll.
    #[derive(Default)]
    struct Counting {
        polls: usize,
        waker: Option<Waker>,
        queued: Vec<u32>,
    }

    impl ConnectionHandler for Counting {
        type FromBehaviour = u32;
        type ToBehaviour = u32;
        type InboundProtocol = DeniedUpgrade;
        type OutboundProtocol = DeniedUpgrade;
        type InboundOpenInfo = ();
        type OutboundOpenInfo = ();

        fn listen_protocol(&self) -> SubstreamProtocol<DeniedUpgrade, ()> {
            SubstreamProtocol::new(DeniedUpgrade, ())
        }

        fn poll(
            &mut self,
            cx: &mut Context<'_>,
        ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, (), u32>> {
            self.polls += 1;
            self.waker = Some(cx.waker().clone());
            match self.queued.pop() {
                Some(event) => Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event)),
                None => Poll::Pending,
            }
        }

        fn on_behaviour_event(&mut self, event: u32) {
            self.queued.push(event);
        }

        fn on_connection_event(
            &mut self,
            _: ConnectionEvent<DeniedUpgrade, DeniedUpgrade, (), ()>,
        ) {
        }
    }

    fn poll(handler: &mut WokenHandler<Counting>) -> Option<u32> {
        match handler.poll(&mut Context::from_waker(noop_waker_ref())) {
            Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event)) => Some(event),
            Poll::Ready(_) => panic!("the test handler only notifies"),
            Poll::Pending => None,
        }
    }

    #[test]
    fn an_idle_handler_is_polled_once_then_only_after_it_is_woken() {
        let mut handler = WokenHandler::new(Counting::default());
        assert_eq!(poll(&mut handler), None);
        assert_eq!(handler.inner.polls, 1, "a new handler is polled");
        for _ in 0..10 {
            assert_eq!(poll(&mut handler), None);
        }
        assert_eq!(handler.inner.polls, 1, "nothing woke it");

        // A waker it registered (as a stream or timer of its own would) is woken.
        handler.inner.waker.take().expect("registered").wake();
        assert_eq!(poll(&mut handler), None);
        assert_eq!(handler.inner.polls, 2);
        assert_eq!(poll(&mut handler), None);
        assert_eq!(handler.inner.polls, 2, "one wake-up, one poll");
    }

    #[test]
    fn a_wake_up_reaches_the_connection_task() {
        let woken = Arc::new(Counter::default());
        let task = futures::task::waker(woken.clone());
        let mut handler = WokenHandler::new(Counting::default());
        assert!(handler.poll(&mut Context::from_waker(&task)).is_pending());
        handler.inner.waker.take().expect("registered").wake();
        assert_eq!(woken.count(), 1, "the task is woken to poll the handler");
    }

    #[test]
    fn events_given_to_a_handler_are_polled_out_however_many() {
        let mut handler = WokenHandler::new(Counting::default());
        assert_eq!(poll(&mut handler), None);
        handler.on_behaviour_event(7);
        handler.on_behaviour_event(8);
        assert_eq!(poll(&mut handler), Some(8));
        // Returned an event: polled again, though nothing woke it.
        assert_eq!(poll(&mut handler), Some(7));
        assert_eq!(poll(&mut handler), None);
        let polls = handler.inner.polls;
        assert_eq!(poll(&mut handler), None);
        assert_eq!(handler.inner.polls, polls);

        // An event from the connection concerns it too.
        let addr: Multiaddr = "/ip4/127.0.0.1/udp/1/quic-v1".parse().expect("address");
        handler.on_connection_event(ConnectionEvent::AddressChange(AddressChange {
            new_address: &addr,
        }));
        assert_eq!(poll(&mut handler), None);
        assert_eq!(handler.inner.polls, polls + 1);
    }

    #[derive(Default)]
    struct Counter(std::sync::atomic::AtomicUsize);

    impl Counter {
        fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    impl ArcWake for Counter {
        fn wake_by_ref(arc: &Arc<Self>) {
            arc.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}
