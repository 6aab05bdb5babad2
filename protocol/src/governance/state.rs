//! The state of a mesh: its charter and the votes it holds, and what they add up to (the
//! members, the removed keys, the policies in force).
//!
//! The derived state is a function of the *set* of votes held, never of the order they
//! arrived in, so every node that holds the same votes agrees:
//!
//! - a removal is carried by `quorum` governors' votes; a removed key never returns (a
//!   domain rejoins with a new key) and governors cannot be removed;
//! - the members are the governors and founding members, plus every admitted domain whose
//!   admission is carried by members (computed to a fixed point), minus the removed keys;
//!   under [`AdmissionRule::AnyMember`] one member's vote carries an admission, so removing
//!   a member also removes the domains that no remaining member signed for;
//! - the policies in force are those of the carried amendment with the highest version
//!   (the lowest motion id on a tie), or the charter's.
//!
//! What a node keeps is bounded: only members vote, on at most [`MAX_OPEN_PER_SIGNER`] open
//! motions each and [`MAX_VOTES_PER_SIGNER`] in all, and the mesh has at most [`MAX_MEMBERS`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::envelope::Signed;
use crate::governance::GovernanceError;
use crate::governance::charter::{AdmissionRule, Charter, Member, MeshId, verify_charter};
use crate::governance::motion::{Action, MAX_NOTE_LEN, Motion, MotionId, VoteKey};
use crate::governance::policy::Policies;
use crate::identity::PublicKey;

/// Most members of a mesh.
pub const MAX_MEMBERS: usize = 4096;
/// Most motions one key may have voted for that are not carried yet.
pub const MAX_OPEN_PER_SIGNER: usize = 64;
/// Most votes one key may have given in all (its admissions included).
pub const MAX_VOTES_PER_SIGNER: usize = 1024;

/// Why a vote was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VoteRefusal {
    /// Undecodable, or a bad signature.
    #[error("{0}")]
    Envelope(String),
    /// A motion of another mesh.
    #[error("the motion belongs to another mesh")]
    OtherMesh,
    /// The signer may not vote on this motion (not a member, or not a governor).
    #[error("{0}")]
    NotEligible(String),
    /// The motion cannot be carried (a governor's removal, a removed key's admission, ...).
    #[error("{0}")]
    Invalid(String),
    /// Already decided: an amendment not newer than the policies in force, an admission of a
    /// member.
    #[error("{0}")]
    Stale(String),
    /// The signer or the mesh is at a limit.
    #[error("{0}")]
    OverBudget(String),
}

/// What a vote changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Domains that became members.
    pub admitted: Vec<Member>,
    /// Keys that stopped being members.
    pub removed: Vec<PublicKey>,
    /// The new policy version, if the policies changed.
    pub policies: Option<u32>,
    /// Votes dropped because they stopped counting (their signer left, or their
    /// amendment was superseded): the store deletes them.
    pub pruned: Vec<VoteKey>,
}

impl Changes {
    /// True when membership or policies changed.
    pub fn is_decision(&self) -> bool {
        !self.admitted.is_empty() || !self.removed.is_empty() || self.policies.is_some()
    }
}

/// Result of offering a vote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VoteOutcome {
    /// New: store and forward it. What it changed.
    Accepted(Changes),
    /// Already held.
    Duplicate,
}

/// A vote [`MeshState::restore`] could not take, and why.
pub type RefusedVote = (Signed<Motion>, VoteRefusal);

/// One motion and its votes.
#[derive(Clone, Debug)]
struct Tally {
    motion: Motion,
    votes: BTreeMap<PublicKey, Signed<Motion>>,
}

/// A motion as `governance status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MotionView {
    /// The motion's id.
    pub id: MotionId,
    /// The motion.
    pub motion: Motion,
    /// Who has signed.
    pub signers: Vec<PublicKey>,
    /// Who may sign (the governors, or every member for an admission under `any-member`).
    pub eligible: Eligible,
    /// How many eligible signatures carry it.
    pub needed: usize,
    /// Whether it is carried.
    pub carried: bool,
}

/// Who may vote on a motion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Eligible {
    /// Governing domains.
    Governors,
    /// Any member.
    Members,
}

/// A mesh's charter and votes, and what they decide.
#[derive(Clone, Debug)]
pub struct MeshState {
    id: MeshId,
    charter: Charter,
    charter_envelope: Signed<Charter>,
    motions: BTreeMap<MotionId, Tally>,
    members: BTreeMap<PublicKey, String>,
    removed: BTreeSet<PublicKey>,
    policies: Policies,
}

impl MeshState {
    /// The state of a mesh that holds no votes yet.
    pub fn new(charter: Signed<Charter>) -> Result<Self, GovernanceError> {
        let (id, parsed) = verify_charter(&charter)?;
        let mut state = Self {
            id,
            policies: parsed.policies.clone(),
            charter: parsed,
            charter_envelope: charter,
            motions: BTreeMap::new(),
            members: BTreeMap::new(),
            removed: BTreeSet::new(),
        };
        state.recompute();
        Ok(state)
    }

    /// A state from a charter and votes in any order (a store read back at start, a join
    /// answer): offers them again until none more is taken, so a vote that arrived before
    /// its signer's admission still counts. Returns the state and the votes refused.
    pub fn restore(
        charter: Signed<Charter>,
        votes: impl IntoIterator<Item = Signed<Motion>>,
    ) -> Result<(Self, Vec<RefusedVote>), GovernanceError> {
        let mut state = Self::new(charter)?;
        // First pass: every vote once. A vote whose signer is not a member yet waits, filed
        // under its signer, and is offered again as soon as that signer is admitted: a
        // chain of admissions in any order costs one offer per vote, not one per vote and
        // link.
        let mut by_signer: BTreeMap<PublicKey, Vec<Signed<Motion>>> = BTreeMap::new();
        let mut waiting: Vec<Signed<Motion>> = Vec::new();
        let mut admitted: Vec<PublicKey> = Vec::new();
        for vote in votes {
            match state.offer(&vote) {
                Ok(VoteOutcome::Accepted(changes)) => {
                    admitted.extend(changes.admitted.iter().map(|m| m.key));
                }
                Ok(VoteOutcome::Duplicate) => {}
                Err(VoteRefusal::NotEligible(_)) => {
                    by_signer.entry(vote.signer()).or_default().push(vote);
                }
                Err(_) => waiting.push(vote),
            }
        }
        while let Some(key) = admitted.pop() {
            for vote in by_signer.remove(&key).unwrap_or_default() {
                match state.offer(&vote) {
                    Ok(VoteOutcome::Accepted(changes)) => {
                        admitted.extend(changes.admitted.iter().map(|m| m.key));
                    }
                    Ok(VoteOutcome::Duplicate) => {}
                    Err(_) => waiting.push(vote),
                }
            }
        }
        waiting.extend(by_signer.into_values().flatten());
        // What is left is offered again until a pass takes nothing more (a refusal may
        // depend on what arrived after it).
        loop {
            let before = waiting.len();
            let mut refused = Vec::new();
            for vote in waiting {
                if let Err(e) = state.offer(&vote) {
                    refused.push((vote, e));
                }
            }
            if refused.len() == before || refused.is_empty() {
                return Ok((state, refused));
            }
            waiting = refused.into_iter().map(|(v, _)| v).collect();
        }
    }

    /// The mesh id.
    pub fn id(&self) -> MeshId {
        self.id
    }

    /// The charter.
    pub fn charter(&self) -> &Charter {
        &self.charter
    }

    /// The charter as signed.
    pub fn charter_envelope(&self) -> &Signed<Charter> {
        &self.charter_envelope
    }

    /// The policies in force.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Whether `key` is a member now.
    pub fn is_member(&self, key: &PublicKey) -> bool {
        self.members.contains_key(key)
    }

    /// Whether `key` was removed.
    pub fn is_removed(&self, key: &PublicKey) -> bool {
        self.removed.contains(key)
    }

    /// The members and their domain names.
    pub fn members(&self) -> impl Iterator<Item = (&PublicKey, &str)> {
        self.members.iter().map(|(k, d)| (k, d.as_str()))
    }

    /// The domain name of the member `key`, if it is one.
    pub fn domain_of(&self, key: &PublicKey) -> Option<&str> {
        self.members.get(key).map(String::as_str)
    }

    /// Number of members.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// The removed keys.
    pub fn removed(&self) -> impl Iterator<Item = &PublicKey> {
        self.removed.iter()
    }

    /// Every vote held, for the store and anti-entropy.
    pub fn votes(&self) -> impl Iterator<Item = &Signed<Motion>> {
        self.motions.values().flat_map(|t| t.votes.values())
    }

    /// The keys of every vote held.
    pub fn vote_keys(&self) -> impl Iterator<Item = VoteKey> + '_ {
        self.motions.iter().flat_map(|(id, t)| {
            t.votes.keys().map(|signer| VoteKey {
                motion: *id,
                signer: *signer,
            })
        })
    }

    /// One vote.
    pub fn vote(&self, key: &VoteKey) -> Option<&Signed<Motion>> {
        self.motions.get(&key.motion)?.votes.get(&key.signer)
    }

    /// Every motion with its tally, open ones first, then by id.
    pub fn motions(&self) -> Vec<MotionView> {
        let mut out: Vec<MotionView> = self
            .motions
            .iter()
            .map(|(id, t)| {
                let (eligible, needed) = self.rule_for(&t.motion.action);
                MotionView {
                    id: *id,
                    motion: t.motion.clone(),
                    signers: t.votes.keys().copied().collect(),
                    eligible,
                    needed,
                    carried: self.is_carried(t, &self.members),
                }
            })
            .collect();
        out.sort_by_key(|m| (m.carried, m.id));
        out
    }

    /// The motion whose id starts with `prefix` (hex), if exactly one does.
    pub fn find_motion(&self, prefix: &str) -> Result<&Motion, GovernanceError> {
        let mut found = self.motions.iter().filter(|(id, _)| id.starts_with(prefix));
        match (found.next(), found.next()) {
            (Some((_, t)), None) => Ok(&t.motion),
            (None, _) => Err(GovernanceError::UnknownMotion(prefix.into())),
            (Some(_), Some(_)) => Err(GovernanceError::Invalid(format!(
                "`{prefix}` names more than one motion: give more of its id"
            ))),
        }
    }

    /// Who may carry `action`, and how many signatures it takes.
    pub fn rule_for(&self, action: &Action) -> (Eligible, usize) {
        match action {
            Action::Admit(_) if self.charter.admission == AdmissionRule::AnyMember => {
                (Eligible::Members, 1)
            }
            _ => (Eligible::Governors, usize::from(self.charter.quorum)),
        }
    }

    /// Checks that `signer` may vote on `motion` now, without changing anything. `held`:
    /// the motion already has votes here, so a new vote is only one more signature.
    pub fn check_vote(
        &self,
        motion: &Motion,
        signer: &PublicKey,
        held: bool,
    ) -> Result<(), VoteRefusal> {
        if motion.mesh != self.id {
            return Err(VoteRefusal::OtherMesh);
        }
        let (eligible, _) = self.rule_for(&motion.action);
        match eligible {
            Eligible::Governors if !self.charter.is_governor(signer) => {
                return Err(VoteRefusal::NotEligible(format!(
                    "only governing domains vote on {} motions",
                    motion.action.kind()
                )));
            }
            Eligible::Members if !self.is_member(signer) => {
                return Err(VoteRefusal::NotEligible(
                    "only members admit domains".into(),
                ));
            }
            _ => {}
        }
        match &motion.action {
            Action::Admit(member) => {
                crate::descriptor::validate_name("domain", &member.domain)
                    .map_err(|e| VoteRefusal::Invalid(e.to_string()))?;
                if self.is_removed(&member.key) {
                    return Err(VoteRefusal::Invalid(
                        "a removed key cannot be admitted again: the domain joins with a new key"
                            .into(),
                    ));
                }
                // Only founders are refused as members already: another member's admission
                // of an admitted domain is one more signature that keeps it in when its first
                // admitter leaves, and whether a key is an admitted member depends on which
                // votes arrived first; a founder's membership does not.
                if !held && self.is_founder(&member.key) {
                    return Err(VoteRefusal::Stale("already a member".into()));
                }
                if self.members.len() >= MAX_MEMBERS {
                    return Err(VoteRefusal::OverBudget(format!(
                        "the mesh has {MAX_MEMBERS} members, the most a node keeps"
                    )));
                }
            }
            Action::Remove { key, reason } => {
                if self.charter.is_governor(key) {
                    return Err(VoteRefusal::Invalid(
                        "a governing domain cannot be removed: the charter names it".into(),
                    ));
                }
                if reason.len() > MAX_NOTE_LEN {
                    return Err(VoteRefusal::Invalid("the reason is too long".into()));
                }
                // A second removal of a removed key may still become the one on record
                // (the lowest id): `offer` settles that with the motion's id.
            }
            Action::Amend { policies, summary } => {
                policies
                    .validate()
                    .map_err(|e| VoteRefusal::Invalid(e.to_string()))?;
                if summary.len() > MAX_NOTE_LEN {
                    return Err(VoteRefusal::Invalid("the summary is too long".into()));
                }
                // An amendment of the version in force may still win on the tie rule (the
                // lowest motion id): `offer` settles that with the motion's id.
                if !held
                    && (policies.version < self.policies.version
                        || policies.version <= self.charter.policies.version)
                {
                    return Err(VoteRefusal::Stale(format!(
                        "policies version {} are in force; an amendment must be newer",
                        self.policies.version
                    )));
                }
            }
        }
        Ok(())
    }

    /// Offers a vote: verifies it, checks that its signer may vote, stores it and works out
    /// what changed.
    pub fn offer(&mut self, vote: &Signed<Motion>) -> Result<VoteOutcome, VoteRefusal> {
        let key = VoteKey::of(vote);
        if self.vote(&key).is_some_and(|held| held == vote) {
            return Ok(VoteOutcome::Duplicate);
        }
        let motion = vote
            .verify()
            .map_err(|e| VoteRefusal::Envelope(e.to_string()))?;
        let signer = vote.signer();
        // A vote on a motion already held (carried or not) is one more signature on the
        // record: only the signer's eligibility is checked, not whether it is still news.
        let held = self.motions.contains_key(&key.motion);
        self.check_vote(&motion, &signer, held).map_err(|refusal| {
            match (&refusal, &motion.action) {
                // A node that was away when a key was removed still holds the votes that
                // admitted it, and offers them to its peers: relaying them is no fault.
                (VoteRefusal::Invalid(_), Action::Admit(member))
                    if self.is_removed(&member.key) =>
                {
                    VoteRefusal::Stale(
                        "a removed key cannot be admitted again: the domain joins with a new key"
                            .into(),
                    )
                }
                _ => refusal,
            }
        })?;
        if !held && self.superseded(&key.motion, &motion.action) {
            return Err(VoteRefusal::Stale(
                "a motion of the same effect is carried already".into(),
            ));
        }
        let given = self.votes().filter(|v| v.signer() == signer).count();
        if given >= MAX_VOTES_PER_SIGNER {
            return Err(VoteRefusal::OverBudget(format!(
                "the signer has given {MAX_VOTES_PER_SIGNER} votes, the most a node keeps"
            )));
        }
        let open = self
            .motions
            .values()
            .filter(|t| t.votes.contains_key(&signer) && !self.is_carried(t, &self.members))
            .count();
        if open >= MAX_OPEN_PER_SIGNER {
            return Err(VoteRefusal::OverBudget(format!(
                "the signer has {MAX_OPEN_PER_SIGNER} open motions, the most a node keeps"
            )));
        }
        let before_members = self.members.clone();
        let before_version = self.policies.version;
        self.motions
            .entry(key.motion)
            .or_insert_with(|| Tally {
                motion,
                votes: BTreeMap::new(),
            })
            .votes
            .insert(signer, vote.clone());
        let pruned = self.recompute();
        let admitted = self
            .members
            .iter()
            .filter(|(k, _)| !before_members.contains_key(k))
            .map(|(k, d)| Member {
                key: *k,
                domain: d.clone(),
            })
            .collect();
        let removed = before_members
            .keys()
            .filter(|k| !self.members.contains_key(k))
            .copied()
            .collect();
        Ok(VoteOutcome::Accepted(Changes {
            admitted,
            removed,
            policies: (self.policies.version != before_version).then_some(self.policies.version),
            pruned,
        }))
    }

    /// Whether `key` is a governor or founding member (a member unless removed).
    fn is_founder(&self, key: &PublicKey) -> bool {
        self.charter.is_governor(key) || self.charter.members.iter().any(|m| &m.key == key)
    }

    /// The carried amendment whose policies are in force: the highest version, the lowest
    /// motion id on a tie.
    fn policy_winner(&self) -> Option<(MotionId, &Policies)> {
        self.motions
            .iter()
            .filter(|(_, t)| self.governor_votes(t) >= usize::from(self.charter.quorum))
            .filter_map(|(id, t)| match &t.motion.action {
                Action::Amend { policies, .. } => Some((*id, policies)),
                _ => None,
            })
            .max_by_key(|(id, p)| (p.version, std::cmp::Reverse(*id)))
    }

    /// The lowest id among the carried removals of each removed key: the one removal the
    /// mesh keeps on record.
    fn canonical_removals(&self) -> BTreeMap<PublicKey, MotionId> {
        let mut out = BTreeMap::new();
        for (id, t) in &self.motions {
            if let Action::Remove { key, .. } = &t.motion.action
                && self.governor_votes(t) >= usize::from(self.charter.quorum)
            {
                out.entry(*key).or_insert(*id);
            }
        }
        out
    }

    /// Whether the motion `id` would be dropped as soon as it is held, given what is carried:
    /// an amendment the policies in force supersede (a lower version, or the same version
    /// with a higher id than the winner's), a second removal of a removed key (a higher id
    /// than the removal on record), an admission of a removed key. What this covers only
    /// grows as votes arrive, so every node ends with the same votes whatever their order.
    fn superseded(&self, id: &MotionId, action: &Action) -> bool {
        match action {
            Action::Amend { policies, .. } => match self.policy_winner() {
                Some((winner, p)) => {
                    policies.version < p.version || (policies.version == p.version && *id > winner)
                }
                None => policies.version <= self.charter.policies.version,
            },
            Action::Remove { key, .. } => self
                .canonical_removals()
                .get(key)
                .is_some_and(|first| id > first),
            Action::Admit(member) => self.removed.contains(&member.key),
        }
    }

    fn governor_votes(&self, tally: &Tally) -> usize {
        tally
            .votes
            .keys()
            .filter(|k| self.charter.is_governor(k))
            .count()
    }

    fn is_carried(&self, tally: &Tally, members: &BTreeMap<PublicKey, String>) -> bool {
        match (&tally.motion.action, self.charter.admission) {
            (Action::Admit(_), AdmissionRule::AnyMember) => {
                tally.votes.keys().any(|k| members.contains_key(k))
            }
            _ => self.governor_votes(tally) >= usize::from(self.charter.quorum),
        }
    }

    /// Derives members, removals and policies from the votes, then drops the votes that no
    /// longer count. Returns the dropped votes' keys.
    fn recompute(&mut self) -> Vec<VoteKey> {
        let removed: BTreeSet<PublicKey> = self
            .motions
            .values()
            .filter_map(|t| match &t.motion.action {
                Action::Remove { key, .. } if self.is_carried(t, &BTreeMap::new()) => Some(*key),
                _ => None,
            })
            .collect();
        let mut members: BTreeMap<PublicKey, String> = self
            .charter
            .governors
            .iter()
            .chain(&self.charter.members)
            .filter(|m| !removed.contains(&m.key))
            .map(|m| (m.key, m.domain.clone()))
            .collect();
        // Admissions, breadth first from the founders. Under `quorum` an admission is carried
        // by the governors' signatures alone; under `any-member`, once one of its signers is
        // a member: an index of admissions by signer makes the walk linear in the votes
        // (a fixed-point loop over every motion was quadratic in the length of a chain of
        // admissions, which an insider could build).
        let any_member = self.charter.admission == AdmissionRule::AnyMember;
        let mut by_signer: BTreeMap<PublicKey, Vec<&Member>> = BTreeMap::new();
        let mut queue: std::collections::VecDeque<PublicKey> = members.keys().copied().collect();
        let admit = |m: &Member,
                     members: &mut BTreeMap<PublicKey, String>,
                     queue: &mut std::collections::VecDeque<PublicKey>| {
            if !members.contains_key(&m.key)
                && !removed.contains(&m.key)
                && members.len() < MAX_MEMBERS
            {
                members.insert(m.key, m.domain.clone());
                queue.push_back(m.key);
            }
        };
        for tally in self.motions.values() {
            if let Action::Admit(m) = &tally.motion.action {
                if any_member {
                    for signer in tally.votes.keys() {
                        by_signer.entry(*signer).or_default().push(m);
                    }
                } else if self.governor_votes(tally) >= usize::from(self.charter.quorum) {
                    admit(m, &mut members, &mut queue);
                }
            }
        }
        while let Some(key) = queue.pop_front() {
            for m in by_signer.get(&key).into_iter().flatten() {
                admit(m, &mut members, &mut queue);
            }
        }
        let winner = self.policy_winner().map(|(id, p)| (id, p.clone()));
        let policies = winner
            .as_ref()
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| self.charter.policies.clone());
        let first_removals = self.canonical_removals();

        // Drop votes that no longer count: votes of keys that are neither members nor
        // governors, and motions superseded by what is carried (see `superseded`; the same
        // rule, so a vote refused on arrival and one dropped later leave the same set).
        let mut pruned = Vec::new();
        let version = policies.version;
        let winner_id = winner.map(|(id, _)| id);
        for (id, tally) in self.motions.iter_mut() {
            let superseded = match &tally.motion.action {
                Action::Amend { policies: p, .. } => {
                    p.version < version
                        || (p.version == version && winner_id.is_some_and(|w| *id > w))
                }
                Action::Remove { key, .. } => first_removals.get(key).is_some_and(|f| id > f),
                Action::Admit(m) => removed.contains(&m.key),
            };
            tally.votes.retain(|signer, _| {
                let keep = !superseded
                    && (members.contains_key(signer) || self.charter.is_governor(signer));
                if !keep {
                    pruned.push(VoteKey {
                        motion: *id,
                        signer: *signer,
                    });
                }
                keep
            });
        }
        self.motions.retain(|_, t| !t.votes.is_empty());
        self.members = members;
        self.removed = removed;
        self.policies = policies;
        pruned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::policy::Policies;
    use crate::identity::Identity;

    struct Mesh {
        governors: Vec<Identity>,
        state: MeshState,
    }

    fn id(seed: u8) -> Identity {
        Identity::from_secret_bytes([seed; 32])
    }

    fn member(identity: &Identity, domain: &str) -> Member {
        Member {
            key: identity.public_key(),
            domain: domain.into(),
        }
    }

    /// Three governors (product, customer, e-shop), 2 of 3, admission as given.
    fn mesh(admission: AdmissionRule) -> Mesh {
        let governors = vec![id(1), id(2), id(3)];
        let names = ["product", "customer", "e-shop"];
        let charter = Charter {
            name: "shop".into(),
            founded_at_ms: 1,
            governors: governors
                .iter()
                .zip(names)
                .map(|(g, n)| member(g, n))
                .collect(),
            quorum: 2,
            admission,
            members: vec![],
            policies: Policies::default(),
            nonce: [0; 16],
        };
        let state = MeshState::new(Signed::sign(&governors[0], &charter)).unwrap();
        Mesh { governors, state }
    }

    fn motion(state: &MeshState, proposer: &Identity, action: Action) -> Motion {
        Motion {
            mesh: state.id(),
            action,
            proposer: proposer.public_key(),
            proposed_at_ms: 10,
        }
    }

    fn vote(state: &mut MeshState, signer: &Identity, m: &Motion) -> Result<Changes, VoteRefusal> {
        match state.offer(&Signed::sign(signer, m))? {
            VoteOutcome::Accepted(c) => Ok(c),
            VoteOutcome::Duplicate => Ok(Changes::default()),
        }
    }

    fn pii() -> Policies {
        Policies {
            version: 1,
            restricted_tags: vec!["pii".into()],
            ..Policies::default()
        }
    }

    #[test]
    fn an_amendment_needs_the_quorum() {
        let Mesh {
            governors,
            mut state,
        } = mesh(AdmissionRule::AnyMember);
        let amend = motion(
            &state,
            &governors[0],
            Action::Amend {
                policies: pii(),
                summary: "pii restricted".into(),
            },
        );
        let first = vote(&mut state, &governors[0], &amend).unwrap();
        assert_eq!(first.policies, None, "one of three changes nothing");
        assert_eq!(state.policies().version, 0);
        let views = state.motions();
        assert_eq!(views[0].signers.len(), 1);
        assert!(!views[0].carried);
        let second = vote(&mut state, &governors[2], &amend).unwrap();
        assert_eq!(second.policies, Some(1));
        assert_eq!(state.policies(), &pii());
        // A second copy of a vote is a duplicate.
        assert_eq!(
            state.offer(&Signed::sign(&governors[2], &amend)),
            Ok(VoteOutcome::Duplicate)
        );
        // An amendment not newer than the one in force is stale, unless it is of the same
        // version and would win the tie (a lower motion id): then it is an open contender.
        let winner = MotionId::of_body(Signed::sign(&governors[0], &amend).body());
        for (n, summary) in ["again", "once more", "and again"].into_iter().enumerate() {
            let again = motion(
                &state,
                &governors[1],
                Action::Amend {
                    policies: pii(),
                    summary: summary.into(),
                },
            );
            let id = MotionId::of_body(Signed::sign(&governors[1], &again).body());
            let outcome = vote(&mut state, &governors[1], &again);
            if id > winner {
                assert!(matches!(outcome, Err(VoteRefusal::Stale(_))), "{n}");
            } else {
                assert_eq!(outcome.map(|c| c.policies), Ok(None), "{n}");
            }
        }
        assert_eq!(state.policies(), &pii());
        let older = motion(
            &state,
            &governors[1],
            Action::Amend {
                policies: Policies::default(),
                summary: "back to nothing".into(),
            },
        );
        assert!(matches!(
            vote(&mut state, &governors[1], &older),
            Err(VoteRefusal::Stale(_))
        ));
    }

    #[test]
    fn votes_that_stop_counting_are_dropped_the_same_way_in_any_order() {
        let Mesh {
            governors,
            mut state,
        } = mesh(AdmissionRule::AnyMember);
        let charter = state.charter_envelope().clone();
        let (sales, churn) = (id(10), id(11));
        let mut votes = Vec::new();
        let mut give = |state: &mut MeshState, signer: &Identity, m: &Motion| {
            let v = Signed::sign(signer, m);
            votes.push(v.clone());
            let _ = state.offer(&v);
        };
        // Two members admit churn (two motions), one of them sales, who is then removed
        // twice over (two carried removals); two amendments of one version are carried.
        let admit_sales = motion(
            &state,
            &governors[0],
            Action::Admit(member(&sales, "sales")),
        );
        give(&mut state, &governors[0], &admit_sales);
        for admitter in [&governors[1], &sales] {
            let m = motion(&state, admitter, Action::Admit(member(&churn, "churn")));
            give(&mut state, admitter, &m);
        }
        for (n, g) in [(0, &governors[0]), (1, &governors[1])] {
            let remove = Motion {
                proposed_at_ms: 20 + n,
                ..motion(
                    &state,
                    g,
                    Action::Remove {
                        key: sales.public_key(),
                        reason: format!("{n}"),
                    },
                )
            };
            give(&mut state, &governors[0], &remove);
            give(&mut state, &governors[1], &remove);
        }
        for summary in ["a", "b"] {
            let amend = motion(
                &state,
                &governors[2],
                Action::Amend {
                    policies: pii(),
                    summary: summary.into(),
                },
            );
            give(&mut state, &governors[2], &amend);
            give(&mut state, &governors[1], &amend);
        }
        let forward = MeshState::restore(charter.clone(), votes.clone())
            .unwrap()
            .0;
        votes.reverse();
        let backward = MeshState::restore(charter, votes).unwrap().0;
        for s in [&forward, &backward] {
            assert!(
                s.is_member(&churn.public_key()),
                "a governor vouched for churn"
            );
            assert!(s.is_removed(&sales.public_key()));
        }
        assert_eq!(forward.policies(), backward.policies());
        assert_eq!(
            forward.vote_keys().collect::<Vec<_>>(),
            backward.vote_keys().collect::<Vec<_>>(),
            "the votes held do not depend on their order"
        );
        assert_eq!(
            forward.vote_keys().collect::<Vec<_>>(),
            state.vote_keys().collect::<Vec<_>>()
        );
    }

    #[test]
    fn an_admission_of_a_key_removed_since_is_stale_not_invalid() {
        let Mesh {
            governors,
            mut state,
        } = mesh(AdmissionRule::AnyMember);
        let sales = id(9);
        let admit = motion(
            &state,
            &governors[0],
            Action::Admit(member(&sales, "sales")),
        );
        let admission = Signed::sign(&governors[0], &admit);
        vote(&mut state, &governors[0], &admit).unwrap();
        assert!(state.is_member(&sales.public_key()));
        let remove = motion(
            &state,
            &governors[1],
            Action::Remove {
                key: sales.public_key(),
                reason: "left".into(),
            },
        );
        vote(&mut state, &governors[1], &remove).unwrap();
        vote(&mut state, &governors[2], &remove).unwrap();
        assert!(state.is_removed(&sales.public_key()));
        // The admission vote, as a peer that missed the removal relays it: not news, and no
        // fault of the relay.
        assert!(
            matches!(state.offer(&admission), Err(VoteRefusal::Stale(_))),
            "{:?}",
            state.offer(&admission)
        );
        // A new motion to admit the removed key is refused with the reason, as before.
        let again = motion(
            &state,
            &governors[1],
            Action::Admit(member(&sales, "sales")),
        );
        assert!(matches!(
            state.check_vote(&again, &governors[1].public_key(), false),
            Err(VoteRefusal::Invalid(_))
        ));
    }

    #[test]
    fn only_governors_vote_on_amendments_and_removals() {
        let Mesh {
            governors,
            mut state,
        } = mesh(AdmissionRule::AnyMember);
        let newcomer = id(9);
        let admit = motion(
            &state,
            &governors[0],
            Action::Admit(member(&newcomer, "sales")),
        );
        let changes = vote(&mut state, &governors[0], &admit).unwrap();
        assert_eq!(changes.admitted, vec![member(&newcomer, "sales")]);
        assert!(state.is_member(&newcomer.public_key()));
        let amend = motion(
            &state,
            &newcomer,
            Action::Amend {
                policies: pii(),
                summary: String::new(),
            },
        );
        assert!(matches!(
            vote(&mut state, &newcomer, &amend),
            Err(VoteRefusal::NotEligible(_))
        ));
        // A stranger cannot even admit.
        let stranger = id(42);
        let sneak = motion(&state, &stranger, Action::Admit(member(&id(43), "x")));
        assert!(matches!(
            vote(&mut state, &stranger, &sneak),
            Err(VoteRefusal::NotEligible(_))
        ));
    }

    #[test]
    fn removal_cascades_to_admissions_nobody_else_signed() {
        let Mesh {
            governors,
            mut state,
        } = mesh(AdmissionRule::AnyMember);
        let (sales, churn, orders) = (id(10), id(11), id(12));
        let admit_sales = motion(
            &state,
            &governors[0],
            Action::Admit(member(&sales, "sales")),
        );
        vote(&mut state, &governors[0], &admit_sales).unwrap();
        let admit_churn = motion(&state, &sales, Action::Admit(member(&churn, "churn")));
        vote(&mut state, &sales, &admit_churn).unwrap();
        let admit_orders = motion(&state, &sales, Action::Admit(member(&orders, "orders")));
        vote(&mut state, &sales, &admit_orders).unwrap();
        // A governor vouches for orders too.
        vote(&mut state, &governors[1], &admit_orders).unwrap();
        assert_eq!(state.member_count(), 6);

        let remove = motion(
            &state,
            &governors[0],
            Action::Remove {
                key: sales.public_key(),
                reason: "leaked data".into(),
            },
        );
        vote(&mut state, &governors[0], &remove).unwrap();
        assert!(state.is_member(&sales.public_key()), "one of three");
        let changes = vote(&mut state, &governors[1], &remove).unwrap();
        let mut removed = changes.removed.clone();
        removed.sort();
        let mut expected = vec![sales.public_key(), churn.public_key()];
        expected.sort();
        assert_eq!(removed, expected, "churn had only sales' signature");
        assert!(state.is_member(&orders.public_key()), "a governor vouched");
        assert!(state.is_removed(&sales.public_key()));
        // The removed key's votes were dropped from the record.
        assert!(
            changes
                .pruned
                .iter()
                .any(|k| k.signer == sales.public_key())
        );
        assert!(state.votes().all(|v| v.signer() != sales.public_key()));
        // It cannot come back (refused as a proposal; as a vote from a peer, not news), and
        // it cannot vote.
        let back = Motion {
            proposed_at_ms: 11,
            ..motion(
                &state,
                &governors[0],
                Action::Admit(member(&sales, "sales")),
            )
        };
        assert!(matches!(
            state.check_vote(&back, &governors[0].public_key(), false),
            Err(VoteRefusal::Invalid(_))
        ));
        assert!(matches!(
            vote(&mut state, &governors[0], &back),
            Err(VoteRefusal::Stale(_))
        ));
        // Governors cannot be removed.
        let coup = motion(
            &state,
            &governors[1],
            Action::Remove {
                key: governors[0].public_key(),
                reason: String::new(),
            },
        );
        assert!(matches!(
            vote(&mut state, &governors[1], &coup),
            Err(VoteRefusal::Invalid(_))
        ));
    }

    #[test]
    fn quorum_admission_waits_for_the_quorum() {
        let Mesh {
            governors,
            mut state,
        } = mesh(AdmissionRule::Quorum);
        let newcomer = id(9);
        let admit = motion(
            &state,
            &governors[0],
            Action::Admit(member(&newcomer, "sales")),
        );
        assert!(
            vote(&mut state, &governors[0], &admit)
                .unwrap()
                .admitted
                .is_empty()
        );
        assert!(!state.is_member(&newcomer.public_key()));
        let changes = vote(&mut state, &governors[1], &admit).unwrap();
        assert_eq!(changes.admitted.len(), 1);
    }

    #[test]
    fn the_outcome_does_not_depend_on_arrival_order() {
        let Mesh { governors, state } = mesh(AdmissionRule::AnyMember);
        let mut scratch = state.clone();
        let (a, b) = (id(20), id(21));
        let mut votes = Vec::new();
        let admit_a = motion(&scratch, &governors[0], Action::Admit(member(&a, "a")));
        votes.push(Signed::sign(&governors[0], &admit_a));
        vote(&mut scratch, &governors[0], &admit_a).unwrap();
        // b is admitted by a: its vote only counts once a is a member.
        let admit_b = motion(&scratch, &a, Action::Admit(member(&b, "b")));
        votes.push(Signed::sign(&a, &admit_b));
        let amend = motion(
            &scratch,
            &governors[1],
            Action::Amend {
                policies: pii(),
                summary: String::new(),
            },
        );
        votes.push(Signed::sign(&governors[1], &amend));
        votes.push(Signed::sign(&governors[2], &amend));

        let charter = state.charter_envelope().clone();
        let (forward, refused) = MeshState::restore(charter.clone(), votes.clone()).unwrap();
        assert!(refused.is_empty());
        votes.reverse();
        let (backward, refused) = MeshState::restore(charter, votes).unwrap();
        assert!(
            refused.is_empty(),
            "b's admission waits for a's, then counts"
        );
        let keys = |s: &MeshState| s.members().map(|(k, _)| *k).collect::<Vec<_>>();
        assert_eq!(keys(&forward), keys(&backward));
        assert_eq!(forward.policies(), backward.policies());
        assert_eq!(
            forward.vote_keys().collect::<Vec<_>>(),
            backward.vote_keys().collect::<Vec<_>>()
        );
        assert_eq!(forward.member_count(), 5);
    }

    #[test]
    fn the_highest_carried_amendment_wins_and_supersedes() {
        let Mesh {
            governors,
            mut state,
        } = mesh(AdmissionRule::AnyMember);
        let v1 = motion(
            &state,
            &governors[0],
            Action::Amend {
                policies: pii(),
                summary: String::new(),
            },
        );
        let v2 = motion(
            &state,
            &governors[0],
            Action::Amend {
                policies: Policies {
                    version: 2,
                    max_contract_days: Some(365),
                    ..pii()
                },
                summary: String::new(),
            },
        );
        for g in &governors[..2] {
            vote(&mut state, g, &v2).unwrap();
        }
        assert_eq!(state.policies().version, 2);
        // v1 is stale now; its votes are refused.
        assert!(matches!(
            vote(&mut state, &governors[0], &v1),
            Err(VoteRefusal::Stale(_))
        ));
    }

    #[test]
    fn a_long_chain_of_admissions_restores_in_any_order() {
        let Mesh { governors, state } = mesh(AdmissionRule::AnyMember);
        let charter = state.charter_envelope().clone();
        // g0 admits k0, k0 admits k1, ... : each admission counts only once its admitter is
        // a member.
        let chain: Vec<Identity> = (0..300u32)
            .map(|i| {
                let mut secret = [7u8; 32];
                secret[..4].copy_from_slice(&i.to_be_bytes());
                Identity::from_secret_bytes(secret)
            })
            .collect();
        let mut votes = Vec::new();
        let mut admitter = &governors[0];
        for (i, newcomer) in chain.iter().enumerate() {
            let m = motion(
                &state,
                admitter,
                Action::Admit(member(newcomer, &format!("d{i}"))),
            );
            votes.push(Signed::sign(admitter, &m));
            admitter = newcomer;
        }
        votes.reverse();
        let (restored, refused) = MeshState::restore(charter, votes).unwrap();
        assert!(refused.is_empty());
        assert_eq!(restored.member_count(), 3 + chain.len());
        // Removing the head of the chain removes every link it alone carried.
        let mut state = restored;
        let remove = motion(
            &state,
            &governors[0],
            Action::Remove {
                key: chain[0].public_key(),
                reason: String::new(),
            },
        );
        vote(&mut state, &governors[0], &remove).unwrap();
        let changes = vote(&mut state, &governors[1], &remove).unwrap();
        assert_eq!(changes.removed.len(), chain.len());
        assert_eq!(state.member_count(), 3);
    }

    #[test]
    fn open_motions_per_signer_are_bounded() {
        let Mesh {
            governors,
            mut state,
        } = mesh(AdmissionRule::Quorum);
        for n in 0..MAX_OPEN_PER_SIGNER {
            let m = motion(
                &state,
                &governors[0],
                Action::Remove {
                    key: id(100).public_key(),
                    reason: format!("{n}"),
                },
            );
            vote(&mut state, &governors[0], &m).unwrap();
        }
        let m = motion(
            &state,
            &governors[0],
            Action::Remove {
                key: id(100).public_key(),
                reason: "one more".into(),
            },
        );
        assert!(matches!(
            vote(&mut state, &governors[0], &m),
            Err(VoteRefusal::OverBudget(_))
        ));
    }

    #[test]
    fn votes_of_another_mesh_and_forgeries_are_refused() {
        let Mesh {
            governors,
            mut state,
        } = mesh(AdmissionRule::AnyMember);
        let mut m = motion(&state, &governors[0], Action::Admit(member(&id(9), "x")));
        m.mesh = MeshId([7; 32]);
        assert_eq!(
            vote(&mut state, &governors[0], &m),
            Err(VoteRefusal::OtherMesh)
        );
        let good = Signed::sign(
            &governors[0],
            &motion(&state, &governors[0], Action::Admit(member(&id(9), "x"))),
        );
        let forged = good.with_claimed_signer(governors[1].public_key());
        assert!(matches!(
            state.offer(&forged),
            Err(VoteRefusal::Envelope(_))
        ));
    }
}
