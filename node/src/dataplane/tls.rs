//! QUIC and TLS configuration of the data plane, and mapping TLS peers to node keys.
//! Public so that benchmarks can compare the data plane with bare quinn on the same crypto.
//!
//! Both sides present the self-signed libp2p certificate made from the node's ed25519 key
//! (`libp2p-tls`). The server requires a client certificate; the client pins the provider's
//! peer id, so a connection only completes with the key the catalog names.
//!
//! The certificates, their parsing and the handshake signature checks are `libp2p-tls`'s;
//! only the rustls configs are assembled here ([`PeerVerifier`] adapts `libp2p-tls`'s
//! certificate checks to rustls), so that the data plane can prefer AES-GCM, which CPUs
//! with AES instructions run several times faster than ChaCha20-Poly1305 (the first
//! choice of `libp2p-tls`, made for the control plane).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use mesh_protocol::transfer::{DATA_ALPN, FRAME_HEADER_LEN, MAX_CONTROL_FRAME};
use mesh_protocol::{Identity, PublicKey};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{TransportConfig, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::DataPlaneError;

/// Server name sent in the TLS handshake; the libp2p verifier ignores it.
pub const SERVER_NAME: &str = "meshnode";
/// The long fat link the data plane's windows are sized for unless the node config's
/// `[data_link]` says otherwise: 500 Mbit/s between clouds 200 ms apart (a 12.5 MB
/// bandwidth-delay product). A shorter or slower path needs less; a faster one is held to
/// `window / RTT` per transfer by flow control.
pub const DESIGN_LINK: LongFatLink = LongFatLink {
    bits_per_s: 500_000_000,
    rtt: Duration::from_millis(200),
};
/// Window for what travels towards a provider: requests, each of at most one control frame,
/// so a request fits in one flight.
const REQUEST_WINDOW: u64 = (MAX_CONTROL_FRAME + FRAME_HEADER_LEN) as u64;
/// A mebibyte.
const MIB: u64 = 1024 * 1024;
/// UDP socket buffers asked of the kernel (capped by `net.core.rmem_max`/`wmem_max`).
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;
/// A connection without any packet for this long is dead (the provider vanished).
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Keep-alive interval, well under [`IDLE_TIMEOUT`].
const KEEP_ALIVE: Duration = Duration::from_secs(4);
/// Connection attempts quinn holds before the accept loop has decided about them.
const MAX_INCOMING: usize = 4096;
/// Bytes buffered for one undecided attempt (its first flight, a few datagrams).
const INCOMING_BUFFER: u64 = 64 * 1024;
/// Bytes buffered for all undecided attempts together.
const INCOMING_BUFFER_TOTAL: u64 = 16 * 1024 * 1024;

/// TLS 1.3 cipher suites of the data plane, most preferred first.
fn cipher_suites() -> Vec<rustls::SupportedCipherSuite> {
    use rustls::crypto::aws_lc_rs::cipher_suite as suite;
    vec![
        suite::TLS13_AES_128_GCM_SHA256,
        suite::TLS13_AES_256_GCM_SHA384,
        suite::TLS13_CHACHA20_POLY1305_SHA256,
    ]
}

/// The crypto provider of both sides: aws-lc-rs (as `libp2p-tls`) with [`cipher_suites`].
fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = cipher_suites();
    Arc::new(provider)
}

/// The congestion controller of the data plane's connections (`congestion` in
/// `meshnode.toml`). CUBIC, quinn's default, suits most links; BBR keeps a long fat link
/// with random loss fuller, because it does not read each loss as congestion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    /// CUBIC (RFC 9438).
    #[default]
    Cubic,
    /// BBR, version 1 as quinn implements it.
    Bbr,
    /// NewReno (RFC 6582).
    NewReno,
}

impl Congestion {
    /// Every controller, for benchmarks.
    pub const ALL: [Congestion; 3] = [Congestion::Cubic, Congestion::Bbr, Congestion::NewReno];

    /// The name in `meshnode.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Congestion::Cubic => "cubic",
            Congestion::Bbr => "bbr",
            Congestion::NewReno => "newreno",
        }
    }
}

impl std::str::FromStr for Congestion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown congestion controller `{s}` (cubic, bbr or newreno)"))
    }
}

/// What a connection's transport is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transport {
    /// Concurrent streams (transfers) the peer may open.
    pub max_streams: u32,
    /// The congestion controller.
    pub congestion: Congestion,
    /// The path the flow-control windows are sized for ([`Windows`]).
    pub link: LongFatLink,
}

impl Transport {
    /// `max_streams` streams, the default congestion controller, windows for [`DESIGN_LINK`].
    pub fn streams(max_streams: u32) -> Self {
        Self {
            max_streams,
            congestion: Congestion::default(),
            link: DESIGN_LINK,
        }
    }
}

/// A path the flow-control windows are sized for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongFatLink {
    /// Rate to sustain, bits per second.
    pub bits_per_s: u64,
    /// Round-trip time.
    pub rtt: Duration,
}

impl LongFatLink {
    /// Bytes in flight at full rate: the bandwidth-delay product.
    pub fn bdp(self) -> u64 {
        let bytes = u128::from(self.bits_per_s) * self.rtt.as_micros() / 8_000_000;
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }

    /// The receive window of one stream that keeps the link full: the bandwidth-delay
    /// product and a quarter more (quinn grants credit in steps of an eighth of the window,
    /// and a queue on the path stretches the RTT), in whole MiB.
    pub fn stream_window(self) -> u64 {
        let bdp = self.bdp();
        bdp.saturating_add(bdp / 4)
            .div_ceil(MIB)
            .max(1)
            .saturating_mul(MIB)
    }
}

/// The flow-control windows of one connection. A connection carries bulk data one way only
/// (provider to consumer), so each side opens wide only the window that direction needs:
/// what a peer can make us buffer is bounded by [`Windows::memory_bound`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    /// Bytes the peer may send on one stream before we read them.
    pub stream_receive: u64,
    /// Bytes the peer may send on all streams together before we read them.
    pub receive: u64,
    /// Bytes of our own writes kept until the peer acknowledges them (and, behind a lost
    /// packet, until the gap is filled).
    pub send: u64,
}

impl Windows {
    /// A connection that fetches over `link`: receives transfers, sends requests. A transfer
    /// may fill `link`; the connection's window is two of those, so that one transfer whose
    /// data waits unread does not stall the others.
    pub fn fetching(link: LongFatLink) -> Self {
        let stream = link.stream_window();
        Self {
            stream_receive: stream,
            receive: stream.saturating_mul(2),
            send: REQUEST_WINDOW,
        }
    }

    /// A connection that serves over `link`: receives requests, sends transfers. It keeps
    /// two bandwidth-delay products of writes: one in flight, one behind a loss being
    /// repaired, so that recovery does not stop the sender.
    pub fn serving(link: LongFatLink) -> Self {
        Self {
            stream_receive: REQUEST_WINDOW,
            receive: REQUEST_WINDOW,
            send: link.stream_window().saturating_mul(2),
        }
    }

    /// Most stream bytes a peer can make us hold on one connection: what it may send that
    /// we have not read, and what we keep of our writes until it acknowledges them. quinn
    /// defragments a stream's received data once its allocations exceed 1.5 times what is
    /// buffered (or 32 KiB), so a peer sending tiny frames can make the receive part cost up
    /// to 2.5 times its size in memory.
    pub fn memory_bound(self) -> u64 {
        self.receive.saturating_add(self.send)
    }
}

/// Transport parameters of a connection with `windows`.
///
/// Datagrams stay at quinn's default size (path MTU discovery up to 1452 bytes of payload,
/// and 1472 advertised as the largest accepted): with segmentation offload batching the
/// system calls, 9000- and 65000-byte datagrams measured slower on loopback, not faster.
pub fn transport_config(transport: Transport, windows: Windows) -> TransportConfig {
    let mut t = TransportConfig::default();
    match transport.congestion {
        Congestion::Cubic => {}
        Congestion::Bbr => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
        }
        Congestion::NewReno => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::NewRenoConfig::default()));
        }
    }
    let var = |bytes: u64| VarInt::from_u64(bytes).unwrap_or(VarInt::MAX);
    t.max_concurrent_bidi_streams(VarInt::from_u32(transport.max_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(var(windows.stream_receive))
        .receive_window(var(windows.receive))
        .send_window(windows.send)
        .max_idle_timeout(Some(
            IDLE_TIMEOUT
                .try_into()
                .expect("15 s is a valid idle timeout"),
        ))
        .keep_alive_interval(Some(KEEP_ALIVE));
    t
}

/// The server side: requires and verifies the client's libp2p certificate. Its connections
/// serve transfers ([`Windows::serving`] over `transport.link`; over [`DESIGN_LINK`], 1 MiB of
/// requests received and 30 MiB of writes kept, so a consumer can make a provider hold at
/// most 31 MiB of stream data per connection, under 34 MiB of allocations in quinn's worst
/// case); the client may open `transport.max_streams` streams.
pub fn server_config(
    identity: &Identity,
    transport: Transport,
) -> Result<quinn::ServerConfig, DataPlaneError> {
    let keypair = crate::net::keypair(identity);
    // `libp2p-tls` makes the certificate; its resolver presents it.
    let libp2p = libp2p_tls::make_server_config(&keypair)
        .map_err(|e| DataPlaneError::Tls(format!("cannot build the server certificate: {e}")))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| DataPlaneError::Tls(format!("TLS versions: {e}")))?
        .with_client_cert_verifier(Arc::new(PeerVerifier { pinned: None }))
        .with_cert_resolver(libp2p.cert_resolver.clone());
    tls.alpn_protocols = vec![DATA_ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(Arc::new(tls))
        .map_err(|e| DataPlaneError::Tls(format!("TLS config unusable for QUIC: {e}")))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(
        transport,
        Windows::serving(transport.link),
    )));
    server.migration(false);
    // Attempts wait in quinn only until the accept loop decides about them (at once):
    // keep what they may buffer small.
    server
        .max_incoming(MAX_INCOMING)
        .incoming_buffer_size(INCOMING_BUFFER)
        .incoming_buffer_size_total(INCOMING_BUFFER_TOTAL);
    Ok(server)
}

/// The client side, pinned to `provider`: the handshake fails unless the server proves that
/// key. Its connections fetch ([`Windows::fetching`] over `transport.link`; over
/// [`DESIGN_LINK`], 15 MiB per transfer, 30 MiB in all received, 1 MiB of requests kept, so
/// a provider can make a consumer hold at most 31 MiB of stream data per connection, under
/// 77 MiB of allocations in quinn's worst case); the server may open no streams
/// (`transport.max_streams` applies to the server's side only).
pub fn client_config(
    identity: &Identity,
    provider: &PublicKey,
    transport: Transport,
) -> Result<quinn::ClientConfig, DataPlaneError> {
    let keypair = crate::net::keypair(identity);
    let libp2p = libp2p_tls::make_client_config(&keypair, None)
        .map_err(|e| DataPlaneError::Tls(format!("cannot build the client certificate: {e}")))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| DataPlaneError::Tls(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerVerifier {
            pinned: Some(peer_id_of(provider)?),
        }))
        .with_client_cert_resolver(libp2p.client_auth_cert_resolver.clone());
    tls.alpn_protocols = vec![DATA_ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(Arc::new(tls))
        .map_err(|e| DataPlaneError::Tls(format!("TLS config unusable for QUIC: {e}")))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    let fetching = Transport {
        max_streams: 0,
        ..transport
    };
    client.transport_config(Arc::new(transport_config(
        fetching,
        Windows::fetching(transport.link),
    )));
    Ok(client)
}

/// Checks a peer's certificate the libp2p way (exactly one self-signed certificate whose
/// extension is signed by the peer's host key; TLS 1.3 handshake signatures by the
/// certificate key), with `libp2p-tls` doing the parsing and the cryptography.
#[derive(Debug)]
struct PeerVerifier {
    /// The server's peer id, on the client side.
    pinned: Option<PeerId>,
}

impl PeerVerifier {
    /// The peer id of a presented chain.
    fn peer_of(
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<PeerId, rustls::Error> {
        if !intermediates.is_empty() {
            return Err(rustls::Error::General(
                "a libp2p peer presents exactly one certificate".into(),
            ));
        }
        let certificate = libp2p_tls::certificate::parse(end_entity)
            .map_err(|e| rustls::Error::General(format!("not a libp2p certificate: {e}")))?;
        Ok(certificate.peer_id())
    }

    fn verify_tls13(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        libp2p_tls::certificate::parse(cert)
            .map_err(|e| rustls::Error::General(format!("not a libp2p certificate: {e}")))?
            .verify_signature(dss.scheme, message, dss.signature())
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))?;
        Ok(HandshakeSignatureValid::assertion())
    }

    fn tls12_refused() -> rustls::Error {
        rustls::Error::General("the data plane speaks TLS 1.3 only".into())
    }

    /// The schemes `libp2p-tls` verifies, elliptic curves first.
    fn schemes() -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ED25519,
            SignatureScheme::RSA_PSS_SHA512,
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PKCS1_SHA512,
            SignatureScheme::RSA_PKCS1_SHA384,
            SignatureScheme::RSA_PKCS1_SHA256,
        ]
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let peer = Self::peer_of(end_entity, intermediates)?;
        if self.pinned.is_some_and(|pinned| pinned != peer) {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(Self::tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Self::peer_of(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(Self::tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Self::verify_tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Self::schemes()
    }
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
    fn aes_gcm_is_preferred_and_chacha_still_accepted() {
        use rustls::CipherSuite as C;
        let suites: Vec<C> = cipher_suites().iter().map(|s| s.suite()).collect();
        assert_eq!(
            suites,
            [
                C::TLS13_AES_128_GCM_SHA256,
                C::TLS13_AES_256_GCM_SHA384,
                C::TLS13_CHACHA20_POLY1305_SHA256
            ]
        );
    }

    #[test]
    fn windows_fill_long_fat_links_and_bound_what_a_peer_can_make_us_hold() {
        let link = |mbit: u64, rtt_ms: u64| LongFatLink {
            bits_per_s: mbit * 1_000_000,
            rtt: Duration::from_millis(rtt_ms),
        };
        assert_eq!(link(500, 200).bdp(), 12_500_000);
        assert_eq!(link(1, 1).bdp(), 125);
        let absurd = LongFatLink {
            bits_per_s: u64::MAX,
            rtt: Duration::from_secs(1_000_000),
        };
        assert_eq!(absurd.bdp(), u64::MAX);
        // BDP and a quarter, whole MiB, at least one.
        assert_eq!(link(500, 200).stream_window(), 15 * MIB);
        assert_eq!(link(100, 80).stream_window(), 2 * MIB);
        assert_eq!(link(1, 1).stream_window(), MIB);
        assert_eq!(absurd.stream_window(), u64::MAX);

        // The design link: one transfer fills 500 Mbit/s at 200 ms (and more at less RTT).
        let fetching = Windows::fetching(DESIGN_LINK);
        let serving = Windows::serving(DESIGN_LINK);
        assert!(fetching.stream_receive >= DESIGN_LINK.bdp() * 9 / 8);
        assert!(serving.send >= 2 * DESIGN_LINK.bdp());
        // Bulk one way only: requests travel in small windows.
        assert_eq!(fetching.send, REQUEST_WINDOW);
        assert_eq!(
            (serving.stream_receive, serving.receive),
            (REQUEST_WINDOW, REQUEST_WINDOW)
        );
        assert!(REQUEST_WINDOW >= (MAX_CONTROL_FRAME + FRAME_HEADER_LEN) as u64);
        // The bounds `server_config` and `client_config` state: 31 MiB a connection.
        assert_eq!(fetching.memory_bound(), 30 * MIB + REQUEST_WINDOW);
        assert_eq!(serving.memory_bound(), 30 * MIB + REQUEST_WINDOW);
        // quinn accepts every window (they fit its variable-length integers).
        for w in [fetching, serving] {
            for bytes in [w.stream_receive, w.receive] {
                assert!(VarInt::from_u64(bytes).is_ok());
            }
        }
    }

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
