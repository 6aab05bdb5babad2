//! Test peers that are members of a mesh: a raw libp2p peer (hostile or flooding) first
//! joins with a ticket, as `meshnode init --join` would, then speaks the mesh's own topic
//! and protocol names with the key it was admitted under.

use std::time::Duration;

use libp2p::StreamProtocol;
use mesh_protocol::Identity;
use mesh_protocol::governance::{MeshId, Ticket};

/// How long a join waits for the inviting member.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Joins the mesh of `ticket` (text from `meshnode mesh invite`) as `identity`, under the
/// domain name the ticket is for. Panics, saying why, if the member refuses or the mesh does
/// not count `identity` a member afterwards.
pub async fn join(ticket: &str, identity: &Identity) -> MeshId {
    let ticket = Ticket::decode(ticket.trim()).unwrap_or_else(|e| panic!("bad ticket: {e}"));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let welcome =
        mesh_node::governance::join::join(&ticket, identity, &ticket.domain, now_ms, JOIN_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("join failed: {e}"));
    assert!(welcome.admitted, "joined, but not admitted yet");
    ticket.mesh
}

/// The gossipsub topic of the catalog of `mesh` (or of no mesh: the name before meshes).
pub fn catalog_topic(mesh: Option<&MeshId>) -> String {
    mesh.map_or_else(
        || mesh_protocol::wire::CATALOG_TOPIC.to_owned(),
        mesh_protocol::wire::catalog_topic,
    )
}

/// The request-response protocol `tail` (`sync/3`, `contract/1`) of `mesh`, or the
/// mesh-less names a non-member would guess (`/meshnode/TAIL`).
pub fn protocol(mesh: Option<&MeshId>, tail: &str) -> StreamProtocol {
    let name = match mesh {
        Some(m) => format!("/meshnode/{}/{tail}", m.short()),
        None => format!("/meshnode/{tail}"),
    };
    StreamProtocol::try_from_owned(name).expect("a protocol name starts with `/`")
}
