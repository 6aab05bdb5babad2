//! QUIC and TLS configuration of the data plane, and mapping TLS peers to node keys.
//! Public so that benchmarks can compare the data plane with bare quinn on the same crypto.
//!
//! Both sides present the self-signed libp2p certificate made from the node's ed25519 key
//! (`libp2p-tls`). The server requires a client certificate; the client pins the provider's
//! peer id, so a connection only completes with the key the catalog names.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use mesh_protocol::transfer::DATA_ALPN;
use mesh_protocol::{Identity, PublicKey};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{MtuDiscoveryConfig, TransportConfig, VarInt};

use super::DataPlaneError;

/// Server name sent in the TLS handshake; the libp2p verifier ignores it.
pub const SERVER_NAME: &str = "meshnode";
/// Receive window of one stream: the provider may run this far ahead of the consumer.
const STREAM_WINDOW: u32 = 32 * 1024 * 1024;
/// Receive window of a whole connection.
const CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;
/// Bytes a sender keeps in flight per connection.
const SEND_WINDOW: u64 = 64 * 1024 * 1024;
/// UDP socket buffers asked of the kernel (capped by `net.core.rmem_max`/`wmem_max`).
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;
/// A connection without any packet for this long is dead (the provider vanished).
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Keep-alive interval, well under [`IDLE_TIMEOUT`].
const KEEP_ALIVE: Duration = Duration::from_secs(4);
/// Largest UDP payload probed by path MTU discovery (loopback and jumbo-frame links allow
/// large datagrams; other paths settle at what they carry).
const MTU_UPPER_BOUND: u16 = 9000;

/// Transport parameters shared by both sides.
pub fn transport_config(max_streams: u32) -> TransportConfig {
    let mut t = TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(max_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .send_window(SEND_WINDOW)
        .max_idle_timeout(Some(
            IDLE_TIMEOUT
                .try_into()
                .expect("15 s is a valid idle timeout"),
        ))
        .keep_alive_interval(Some(KEEP_ALIVE));
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_UPPER_BOUND);
    t.mtu_discovery_config(Some(mtu));
    t
}

/// The server side: requires and verifies the client's libp2p certificate.
pub fn server_config(
    identity: &Identity,
    max_streams: u32,
) -> Result<quinn::ServerConfig, DataPlaneError> {
    let keypair = crate::net::keypair(identity);
    let mut tls = libp2p_tls::make_server_config(&keypair)
        .map_err(|e| DataPlaneError::Tls(format!("cannot build the server certificate: {e}")))?;
    tls.alpn_protocols = vec![DATA_ALPN.to_vec()];
    tls.key_log = Arc::new(rustls::NoKeyLog);
    let crypto = QuicServerConfig::try_from(Arc::new(tls))
        .map_err(|e| DataPlaneError::Tls(format!("TLS config unusable for QUIC: {e}")))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(max_streams)));
    server.migration(false);
    Ok(server)
}

/// The client side, pinned to `provider`: the handshake fails unless the server proves that
/// key.
pub fn client_config(
    identity: &Identity,
    provider: &PublicKey,
    max_streams: u32,
) -> Result<quinn::ClientConfig, DataPlaneError> {
    let keypair = crate::net::keypair(identity);
    let mut tls = libp2p_tls::make_client_config(&keypair, Some(peer_id_of(provider)?))
        .map_err(|e| DataPlaneError::Tls(format!("cannot build the client certificate: {e}")))?;
    tls.alpn_protocols = vec![DATA_ALPN.to_vec()];
    tls.key_log = Arc::new(rustls::NoKeyLog);
    let crypto = QuicClientConfig::try_from(Arc::new(tls))
        .map_err(|e| DataPlaneError::Tls(format!("TLS config unusable for QUIC: {e}")))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(transport_config(max_streams)));
    Ok(client)
}

/// A UDP socket with large buffers, bound to `addr`, wrapped in a quinn endpoint that
/// serves `server` and can also dial.
pub fn endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint, DataPlaneError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind = |e: std::io::Error| DataPlaneError::Bind { addr, source: e };
    let socket =
        Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(bind)?;
    // Best effort: the kernel caps these; a smaller buffer only costs throughput.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into()).map_err(bind)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| DataPlaneError::Tls("no async runtime for quinn".into()))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        std::net::UdpSocket::from(socket),
        runtime,
    )
    .map_err(bind)
}

/// The libp2p peer id of a node key.
pub(crate) fn peer_id_of(key: &PublicKey) -> Result<PeerId, DataPlaneError> {
    let ed = libp2p::identity::ed25519::PublicKey::try_from_bytes(&key.0)
        .map_err(|e| DataPlaneError::Tls(format!("key {key} is not an ed25519 key: {e}")))?;
    Ok(libp2p::identity::PublicKey::from(ed).to_peer_id())
}

/// The node key inside an ed25519 peer id (an identity multihash of the protobuf key).
pub(crate) fn key_of_peer_id(peer: &PeerId) -> Option<PublicKey> {
    let multihash = peer.as_ref();
    // 0x00 is the identity hash: the digest is the encoded key itself.
    if multihash.code() != 0 {
        return None;
    }
    let key = libp2p::identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    Some(PublicKey(key.try_into_ed25519().ok()?.to_bytes()))
}

/// The node key the peer of `connection` proved in the TLS handshake.
pub(crate) fn peer_key(connection: &quinn::Connection) -> Result<PublicKey, String> {
    let identity = connection
        .peer_identity()
        .ok_or("the peer presented no certificate")?;
    let certs = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .map_err(|_| "the peer identity is not a certificate chain")?;
    let cert = certs.first().ok_or("the peer presented an empty chain")?;
    let parsed = libp2p_tls::certificate::parse(cert)
        .map_err(|e| format!("the peer certificate is not a libp2p certificate: {e}"))?;
    key_of_peer_id(&parsed.peer_id()).ok_or_else(|| "the peer key is not ed25519".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ids_map_back_to_node_keys() {
        let key = Identity::from_secret_bytes([9; 32]).public_key();
        let peer = peer_id_of(&key).unwrap();
        assert_eq!(key_of_peer_id(&peer), Some(key));
        assert_eq!(
            peer,
            crate::net::keypair(&Identity::from_secret_bytes([9; 32]))
                .public()
                .to_peer_id()
        );
    }
}
