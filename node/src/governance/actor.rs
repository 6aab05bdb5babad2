//! The node actor's governance handlers: votes from gossip and sync, the join protocol's
//! server side, and the commands of the control API. Decisions are the protocol's
//! ([`MeshState`](mesh_protocol::governance::MeshState)); these handlers store, gossip and
//! apply them.

use std::collections::BTreeMap;
use std::time::Instant;

use libp2p::request_response;
use mesh_protocol::catalog::RejectReason;
use mesh_protocol::governance::join::{
    DEFAULT_INVITE_TTL_MS, MAX_INVITE_TTL_MS, MAX_JOIN_ANSWERS, MAX_TICKET_ADDRS,
};
use mesh_protocol::governance::{
    Action, Changes, Invitation, JoinClaim, JoinReply, Member, Motion, MotionView, Policies,
    RequiredField, Ticket, VoteRefusal, check_claim,
};
use mesh_protocol::wire::GossipMessage;
use mesh_protocol::{Identity, PublicKey, Signed};
use tokio::sync::oneshot;

use super::OfferResult;
use crate::error::NodeError;
use crate::negotiation::{key_of, peer_id_of};
use crate::node::{Node, NodeEvent, now_ms};
use crate::views::{
    InviteRequest, MemberView, MeshView, MotionJson, ProposeRequest, RemoveRequest, RuleView,
    TicketView, rfc3339,
};

/// Governance requests from the control API.
#[derive(Debug)]
pub(crate) enum GovernanceCommand {
    /// The charter, members and policies.
    Show { reply: oneshot::Sender<MeshView> },
    /// Every motion with its signatures.
    Motions {
        reply: oneshot::Sender<Vec<MotionJson>>,
    },
    /// Propose an amendment of the policies (and sign it).
    Propose {
        request: ProposeRequest,
        reply: oneshot::Sender<Result<MotionJson, NodeError>>,
    },
    /// Sign a motion someone proposed.
    Sign {
        motion: String,
        reply: oneshot::Sender<Result<MotionJson, NodeError>>,
    },
    /// Propose (and sign) a member's removal.
    Remove {
        request: RemoveRequest,
        reply: oneshot::Sender<Result<MotionJson, NodeError>>,
    },
    /// Make an invitation and its ticket.
    Invite {
        request: InviteRequest,
        reply: oneshot::Sender<Result<TicketView, NodeError>>,
    },
    /// Admit a domain whose key the operator already knows (no ticket), and answer with
    /// what a join brings the newcomer.
    Admit {
        member: Member,
        reply: oneshot::Sender<Result<JoinReply, NodeError>>,
    },
}

fn refusal_reason(refusal: &VoteRefusal) -> RejectReason {
    match refusal {
        VoteRefusal::Envelope(_) => RejectReason::BadSignature,
        VoteRefusal::OtherMesh | VoteRefusal::Invalid(_) => RejectReason::Invalid,
        VoteRefusal::NotEligible(_) => RejectReason::NotMember,
        VoteRefusal::Stale(_) => RejectReason::Stale,
        VoteRefusal::OverBudget(_) => RejectReason::OverBudget,
    }
}

impl Node {
    /// Offers a vote. `Ok(true)`: new, stored (and applied); `Ok(false)`: duplicate.
    pub(crate) fn accept_vote(
        &mut self,
        vote: &Signed<Motion>,
        via: &'static str,
    ) -> Result<bool, RejectReason> {
        match self.governance.offer(vote) {
            Ok(OfferResult::Accepted(changes)) => {
                self.votes_changed();
                self.apply_changes(&changes);
                tracing::debug!(via, motion = %mesh_protocol::governance::MotionId::of(vote), "vote taken");
                Ok(true)
            }
            Ok(OfferResult::Duplicate) => Ok(false),
            Err(refusal) => {
                tracing::debug!(via, "refused a vote: {refusal}");
                let reason = refusal_reason(&refusal);
                self.rejected(reason);
                Err(reason)
            }
        }
    }

    /// Executes what a vote decided: opens and closes the gate, forgets a removed
    /// member's catalog entries, and tells the owner which of its products the new policies
    /// refuse.
    fn apply_changes(&mut self, changes: &Changes) {
        if !changes.is_decision() {
            return;
        }
        for member in &changes.admitted {
            if let Some(peer) = peer_id_of(&member.key) {
                self.swarm.behaviour_mut().gate.allow_peer(peer);
            }
            tracing::info!(domain = %member.domain, key = %member.key.fingerprint(), "domain admitted to the mesh");
        }
        for key in &changes.removed {
            if let Some(peer) = peer_id_of(key) {
                // Its messages are refused from now on and the data plane refuses it at once;
                // the control-plane connections close after a grace period, so the vote that
                // removed it reaches it too.
                self.governance.answered.push((peer, Instant::now()));
            }
            match self.store.forget_owner(key) {
                Ok(n) => {
                    tracing::warn!(key = %key.fingerprint(), products = n, "member removed from the mesh: its connections, products and agreements end")
                }
                Err(e) => tracing::error!("cannot forget a removed member's products: {e}"),
            }
        }
        if !changes.removed.is_empty() {
            // Their descriptors made room: what was refused for want of it may fit now.
            self.refused.forget_all();
        }
        if let Some(version) = changes.policies {
            tracing::info!(version, "new mesh policies in force");
            for (product, violations) in self.own_violations() {
                for v in violations {
                    tracing::warn!(%product, "breaks the mesh's policies version {version}: {v}");
                }
            }
        }
        self.emit_mesh_changed(changes);
    }

    fn emit_mesh_changed(&self, changes: &Changes) {
        let _ = self.events.send(NodeEvent::MeshChanged {
            admitted: changes.admitted.iter().map(|m| m.key).collect(),
            removed: changes.removed.clone(),
            policies: changes.policies,
            at: Instant::now(),
        });
    }

    /// This node's products that break the policies in force, with the violations.
    pub(crate) fn own_violations(
        &self,
    ) -> BTreeMap<String, Vec<mesh_protocol::governance::Violation>> {
        let me = self.identity.public_key();
        let policies = self.governance.state.policies();
        let mut out = BTreeMap::new();
        if let Ok(entries) = self.store.catalog() {
            for (d, _) in entries.iter().filter(|(d, _)| d.owner == me) {
                let violations = policies.check_product(d);
                if !violations.is_empty() {
                    out.insert(d.name.clone(), violations);
                }
            }
        }
        out
    }

    /// Signs `motion`, takes the vote and gossips it.
    fn sign_and_gossip(&mut self, motion: &Motion) -> Result<MotionJson, NodeError> {
        let vote = Signed::sign(&self.identity, motion);
        match self.governance.offer(&vote) {
            Ok(OfferResult::Accepted(changes)) => {
                self.votes_changed();
                self.apply_changes(&changes);
            }
            Ok(OfferResult::Duplicate) => {
                return Err(NodeError::Conflict(
                    "this domain has already signed that motion".into(),
                ));
            }
            Err(refusal) => return Err(vote_refused(refusal)),
        }
        self.gossip(GossipMessage::Vote(vote.clone()));
        let id = mesh_protocol::governance::MotionId::of(&vote);
        self.motion_json(&id)
            .ok_or_else(|| NodeError::Internal("the motion vanished after signing".into()))
    }

    fn motion_json(&self, id: &mesh_protocol::governance::MotionId) -> Option<MotionJson> {
        self.governance
            .state
            .motions()
            .into_iter()
            .find(|m| &m.id == id)
            .map(|m| self.motion_view(m))
    }

    fn domain_of(&self, key: &PublicKey) -> String {
        self.governance
            .state
            .domain_of(key)
            .map_or_else(|| key.fingerprint(), str::to_owned)
    }

    fn motion_view(&self, m: MotionView) -> MotionJson {
        let summary = match &m.motion.action {
            Action::Admit(member) => format!(
                "admit domain `{}` (key {})",
                member.domain,
                member.key.fingerprint()
            ),
            Action::Remove { key, reason } => format!(
                "remove `{}` (key {}){}",
                self.domain_of(key),
                key.fingerprint(),
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                }
            ),
            Action::Amend { policies, summary } => format!(
                "policies version {}{}",
                policies.version,
                if summary.is_empty() {
                    String::new()
                } else {
                    format!(": {summary}")
                }
            ),
        };
        MotionJson {
            id: m.id.to_hex(),
            kind: m.motion.action.kind().into(),
            summary,
            proposer: self.domain_of(&m.motion.proposer),
            proposed_at: rfc3339(m.motion.proposed_at_ms),
            signed_by: m.signers.iter().map(|k| self.domain_of(k)).collect(),
            needed: m.needed,
            eligible: match m.eligible {
                mesh_protocol::governance::Eligible::Governors => "governors".into(),
                mesh_protocol::governance::Eligible::Members => "members".into(),
            },
            carried: m.carried,
            action: m.motion.action,
        }
    }

    fn mesh_view(&self) -> MeshView {
        let state = &self.governance.state;
        let charter = state.charter();
        MeshView {
            mesh_id: state.id().to_hex(),
            name: charter.name.clone(),
            quorum: charter.quorum,
            governors: charter.governors.len(),
            admission: charter.admission.to_string(),
            members: state
                .members()
                .map(|(k, d)| MemberView {
                    domain: d.to_owned(),
                    public_key: k.to_hex(),
                    fingerprint: k.fingerprint(),
                    governor: charter.is_governor(k),
                })
                .collect(),
            removed: state.removed().map(|k| k.to_hex()).collect(),
            policy_version: state.policies().version,
            rules: state
                .policies()
                .rules()
                .into_iter()
                .map(|r| RuleView {
                    id: r.id,
                    explanation: r.explanation,
                })
                .collect(),
            policies: state.policies().clone(),
        }
    }

    fn new_motion(&self, action: Action) -> Motion {
        Motion {
            mesh: self.governance.state.id(),
            action,
            proposer: self.identity.public_key(),
            proposed_at_ms: now_ms(),
        }
    }

    fn propose_amendment(&mut self, request: ProposeRequest) -> Result<MotionJson, NodeError> {
        let policies = amended(self.governance.state.policies(), &request)?;
        let unchanged = Policies {
            version: policies.version,
            ..self.governance.state.policies().clone()
        };
        if policies == unchanged {
            return Err(NodeError::BadRequest(
                "the proposal changes nothing: give --restrict-tag, --require, --max-contract-days or --purposes".into(),
            ));
        }
        let motion = self.new_motion(Action::Amend {
            policies,
            summary: request.summary,
        });
        self.sign_and_gossip(&motion)
    }

    fn propose_removal(&mut self, request: RemoveRequest) -> Result<MotionJson, NodeError> {
        let wanted = request.member.to_ascii_lowercase();
        let matches: Vec<PublicKey> = self
            .governance
            .state
            .members()
            .filter(|(k, d)| *d == wanted || (wanted.len() >= 8 && k.to_hex().starts_with(&wanted)))
            .map(|(k, _)| *k)
            .collect();
        let key = match matches.as_slice() {
            [key] => *key,
            [] => {
                return Err(NodeError::NotFound(format!(
                    "no member `{}`: `meshnode mesh members` lists them",
                    request.member
                )));
            }
            _ => {
                return Err(NodeError::BadRequest(format!(
                    "`{}` names several members: give the key fingerprint",
                    request.member
                )));
            }
        };
        // Signing an open removal of the same key instead of proposing a second one.
        let open = self.governance.state.motions().into_iter().find(|m| {
            !m.carried && matches!(&m.motion.action, Action::Remove { key: k, .. } if *k == key)
        });
        let motion = match open {
            Some(m) => m.motion,
            None => self.new_motion(Action::Remove {
                key,
                reason: request.reason,
            }),
        };
        self.sign_and_gossip(&motion)
    }

    fn sign_motion(&mut self, prefix: &str) -> Result<MotionJson, NodeError> {
        if prefix.len() < 8 {
            return Err(NodeError::BadRequest(
                "give at least 8 hex digits of the motion id".into(),
            ));
        }
        let motion = self
            .governance
            .state
            .find_motion(prefix)
            .map_err(|e| NodeError::NotFound(e.to_string()))?
            .clone();
        self.sign_and_gossip(&motion)
    }

    fn invite(&mut self, request: InviteRequest) -> Result<TicketView, NodeError> {
        mesh_protocol::descriptor::validate_name("domain", &request.domain)
            .map_err(|e| NodeError::BadRequest(e.to_string()))?;
        let me = self.identity.public_key();
        let state = &self.governance.state;
        // A domain the charter names joins with its chartered key under its chartered name:
        // only the names of admitted members are taken.
        if !request.reuse_name
            && let Some((key, _)) = state
                .members()
                .find(|(k, d)| *d == request.domain && !state.is_founder(k))
        {
            return Err(NodeError::Conflict(format!(
                "the domain name `{}` is carried by the member {} already: choose another name, \
                 or, to move that domain to a new key, pass --reuse-name and remove the old key \
                 (`meshnode mesh remove {}`)",
                request.domain,
                key.fingerprint(),
                key.fingerprint()
            )));
        }
        let probe = Motion {
            mesh: state.id(),
            action: Action::Admit(Member {
                key: Identity::from_secret_bytes([0; 32]).public_key(),
                domain: request.domain.clone(),
            }),
            proposer: me,
            proposed_at_ms: 0,
        };
        if let Err(refusal) = state.check_vote(&probe, &me, false) {
            return Err(NodeError::Refused(format!(
                "this domain cannot invite: {refusal} (the charter's admission rule is `{}`)",
                state.charter().admission
            )));
        }
        let secret: [u8; 32] = rand::random();
        let invitation_key = Identity::from_secret_bytes(secret).public_key();
        let now = now_ms();
        let ttl = request
            .ttl_secs
            .map(|s| s.saturating_mul(1000))
            .unwrap_or(DEFAULT_INVITE_TTL_MS);
        if ttl == 0 || ttl > MAX_INVITE_TTL_MS {
            return Err(NodeError::BadRequest(format!(
                "an invitation lasts from 1 s to {} days: give --ttl within that",
                MAX_INVITE_TTL_MS / (24 * 60 * 60 * 1000)
            )));
        }
        let invitation = Invitation {
            key: invitation_key,
            domain: request.domain.clone(),
            expires_at_ms: now.saturating_add(ttl),
            used: false,
            claimed_by: None,
        };
        self.shut_expired_invitations(now);
        let peer = self.governance.add_invitation(invitation.clone(), now)?;
        self.swarm.behaviour_mut().gate.allow_peer(peer);
        let ticket = Ticket {
            mesh: self.governance.state.id(),
            domain: request.domain,
            inviter: me,
            bootstrap: self
                .announced_addrs()
                .into_iter()
                .take(MAX_TICKET_ADDRS)
                .collect(),
            secret,
            expires_at_ms: invitation.expires_at_ms,
        };
        Ok(TicketView {
            ticket: ticket.encode(),
        })
    }

    pub(crate) async fn on_governance_command(&mut self, command: GovernanceCommand) {
        match command {
            GovernanceCommand::Show { reply } => {
                let _ = reply.send(self.mesh_view());
            }
            GovernanceCommand::Motions { reply } => {
                let motions = self.governance.state.motions();
                let views = motions.into_iter().map(|m| self.motion_view(m)).collect();
                let _ = reply.send(views);
            }
            GovernanceCommand::Propose { request, reply } => {
                let result = self.propose_amendment(request);
                let _ = reply.send(self.durable(result).await);
            }
            GovernanceCommand::Sign { motion, reply } => {
                let result = self.sign_motion(&motion);
                let _ = reply.send(self.durable(result).await);
            }
            GovernanceCommand::Remove { request, reply } => {
                let result = self.propose_removal(request);
                let _ = reply.send(self.durable(result).await);
            }
            GovernanceCommand::Invite { request, reply } => {
                let result = self.invite(request);
                let _ = reply.send(self.durable(result).await);
            }
            GovernanceCommand::Admit { member, reply } => {
                let result = self.admit(member);
                let _ = reply.send(self.durable(result).await);
            }
        }
    }

    /// Flushes the store before a governance change is acknowledged: the operator (or the
    /// joiner) is told it happened only once it survives a crash. The store's own periodic
    /// flush is seconds apart ([`crate::store::FLUSH_EVERY`]).
    async fn durable<T>(&mut self, result: Result<T, NodeError>) -> Result<T, NodeError> {
        let value = result?;
        self.store.flush().await?;
        Ok(value)
    }

    /// The join protocol, server side: only connections holding an open invitation get an
    /// answer other than a refusal.
    pub(crate) async fn on_join_event(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let mut reply = self.answer_join(&peer, &request);
                // The joiner is welcomed only once its admission survives a crash.
                if matches!(reply, JoinReply::Welcome { .. })
                    && let Err(e) = self.store.flush().await
                {
                    tracing::error!("flushing an admission failed: {e}");
                    reply = JoinReply::Refused(
                        "the admission could not be stored: try again later".into(),
                    );
                }
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .join
                    .send_response(channel, reply.to_bytes());
            }
            // The invitation is spent or refused: its key may not stay connected, but
            // closing now would drop the answer in flight.
            // Once per key: a key that keeps asking does not grow the list.
            request_response::Event::ResponseSent { peer, .. }
            | request_response::Event::InboundFailure { peer, .. }
                if self.governance.join_done(&peer)
                    && !self.governance.is_member_peer(&peer)
                    && !self.governance.is_answered(&peer) =>
            {
                self.governance.answered.push((peer, Instant::now()));
            }
            _ => {}
        }
    }

    fn answer_join(&mut self, peer: &libp2p::PeerId, request: &[u8]) -> JoinReply {
        let Some(invitation) = self.governance.invitation(peer).cloned() else {
            return JoinReply::Refused(
                "this connection holds no open invitation: ask a member for a new ticket".into(),
            );
        };
        let Some(connection_key) = key_of(peer) else {
            return JoinReply::Refused("the connection's key is not an ed25519 key".into());
        };
        if !self.governance.join_answers.take(&connection_key) {
            return JoinReply::Refused(format!(
                "this invitation was asked about {MAX_JOIN_ANSWERS} times already and is \
                 closed: ask a member for a new ticket"
            ));
        }
        let claim = match Signed::<JoinClaim>::from_bytes(request) {
            Ok(c) => c,
            Err(e) => return JoinReply::Refused(format!("malformed join claim: {e}")),
        };
        let member = match check_claim(
            self.governance.state.id(),
            Some(&invitation),
            &claim,
            &connection_key,
            now_ms(),
        ) {
            Ok(m) => m,
            Err(e) => {
                tracing::info!(%peer, "join refused: {e}");
                return JoinReply::Refused(e.to_string());
            }
        };
        self.governance.spend_invitation(peer, member.key);
        if let Err(e) = self.sign_admission(member.clone()) {
            tracing::warn!("cannot admit {}: {e}", member.domain);
            return JoinReply::Refused(format!("the admission failed: {e}"));
        }
        tracing::info!(domain = %member.domain, key = %member.key.fingerprint(), "welcomed a domain with an invitation");
        self.welcome()
    }

    /// Admits `member` on this domain's signature (the charter's rule decides whether that
    /// carries it) and returns the welcome a join answers with.
    fn admit(&mut self, member: Member) -> Result<JoinReply, NodeError> {
        mesh_protocol::descriptor::validate_name("domain", &member.domain)
            .map_err(|e| NodeError::BadRequest(e.to_string()))?;
        self.sign_admission(member)?;
        Ok(self.welcome())
    }

    /// Signs the admission of `member` unless it is a member already: an open admission of
    /// the same key and domain is signed rather than a second one proposed, and one this
    /// domain signed already is left as it is. So a newcomer that claims its invitation
    /// again (its answer was lost, or it does so on purpose, as often as the grace lets it)
    /// costs no vote of this domain's budgets.
    fn sign_admission(&mut self, member: Member) -> Result<(), NodeError> {
        if self.governance.is_member(&member.key) {
            return Ok(());
        }
        let me = self.identity.public_key();
        let open = self.governance.state.motions().into_iter().find(|m| {
            !m.carried
                && matches!(&m.motion.action, Action::Admit(a) if a.key == member.key && a.domain == member.domain)
        });
        match open {
            Some(m) if m.signers.contains(&me) => Ok(()),
            Some(m) => self.sign_and_gossip(&m.motion).map(drop),
            None => {
                let motion = self.new_motion(Action::Admit(member));
                self.sign_and_gossip(&motion).map(drop)
            }
        }
    }

    /// The charter and as many votes as fit in a join answer, those that carry the mesh's
    /// current state first (`MeshState::votes_for_newcomer`): what does not fit comes by sync.
    fn welcome(&self) -> JoinReply {
        let mut votes = Vec::new();
        let mut budget = mesh_protocol::governance::join::MAX_JOIN_REPLY
            - self.governance.state.charter_envelope().to_bytes().len()
            - 1024;
        for vote in self.governance.state.votes_for_newcomer() {
            let len = vote.to_bytes().len() + 8;
            if len > budget {
                break;
            }
            budget -= len;
            votes.push(vote.clone());
        }
        JoinReply::Welcome {
            charter: self.governance.state.charter_envelope().clone(),
            votes,
        }
    }

    /// Shuts the gate on invitation keys answered a while ago (see `Governance::answered`)
    /// and on expired invitations (the periodic sweep of the housekeeping).
    pub(crate) fn close_spent_invitations(&mut self) {
        // Long enough for a newcomer whose answer was lost to claim again.
        const GRACE: std::time::Duration = std::time::Duration::from_secs(30);
        self.shut_expired_invitations(now_ms());
        if self.governance.answered.is_empty() {
            return;
        }
        let now = Instant::now();
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.governance.answered)
            .into_iter()
            .partition(|(_, at)| now.duration_since(*at) >= GRACE);
        self.governance.answered = waiting;
        for (peer, _) in due {
            if self.governance.join_done(&peer) && !self.governance.is_member_peer(&peer) {
                self.swarm.behaviour_mut().gate.disallow_peer(peer);
            }
        }
    }

    /// Forgets the invitations expired at `now_ms` and shuts the gate on their keys.
    fn shut_expired_invitations(&mut self, now_ms: u64) {
        for peer in self.governance.expire_invitations(now_ms) {
            self.swarm.behaviour_mut().gate.disallow_peer(peer);
        }
    }

    /// The vote set changed: the next sync rebuilds it.
    fn votes_changed(&mut self) {
        self.drop_vote_set();
    }
}

fn vote_refused(refusal: VoteRefusal) -> NodeError {
    match refusal {
        VoteRefusal::NotEligible(_) => NodeError::Refused(refusal.to_string()),
        VoteRefusal::Stale(_) => NodeError::Conflict(refusal.to_string()),
        VoteRefusal::OverBudget(_) => NodeError::Conflict(refusal.to_string()),
        _ => NodeError::BadRequest(refusal.to_string()),
    }
}

/// The policies `request` makes of `current`, one version up.
fn amended(current: &Policies, request: &ProposeRequest) -> Result<Policies, NodeError> {
    let mut next = current.clone();
    next.version = current.version + 1;
    for tag in &request.restrict_tags {
        mesh_protocol::descriptor::validate_name("tag", tag)
            .map_err(|e| NodeError::BadRequest(e.to_string()))?;
        if !next.restricted_tags.contains(tag) {
            next.restricted_tags.push(tag.clone());
        }
    }
    next.restricted_tags
        .retain(|t| !request.drop_restrict_tags.contains(t));
    let field = |name: &String| {
        RequiredField::parse(name).ok_or_else(|| {
            NodeError::BadRequest(format!(
                "unknown required field `{name}`: choose from {}",
                RequiredField::ALL.map(|f| f.as_str()).join(", ")
            ))
        })
    };
    for name in &request.require {
        let f = field(name)?;
        if !next.required_fields.contains(&f) {
            next.required_fields.push(f);
        }
    }
    for name in &request.drop_require {
        let f = field(name)?;
        next.required_fields.retain(|x| *x != f);
    }
    match request.max_contract_days {
        Some(0) => next.max_contract_days = None,
        Some(days) => next.max_contract_days = Some(days),
        None => {}
    }
    if let Some(purposes) = &request.purposes {
        next.purposes = purposes.clone();
    }
    next.validate()
        .map_err(|e| NodeError::BadRequest(e.to_string()))?;
    Ok(next)
}
