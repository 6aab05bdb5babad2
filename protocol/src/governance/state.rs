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
//! motions each and [`MAX_VOTES_PER_SIGNER`] in all, the mesh has at most [`MAX_MEMBERS`],
//! and a domain's admission carries at most [`MAX_ADMITTERS`] members' signatures besides the
//! governors', so the votes held grow with the members, not with members times votes.
//!
//! What one vote costs does not grow with the votes held either: a vote that carries nothing
//! new changes nothing, an admission it carries admits one key, and only a removal or an
//! amendment it carries derives the state again from every vote (governors' votes, bounded by
//! their budgets).

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
/// Most members, governors aside, whose signatures a node keeps on the admissions of one
/// domain (all motions admitting its key together). Under `any-member` one signature keeps a
/// domain in; more keep it in when its first admitter leaves. Without this bound every member
/// could co-sign every admission: 4,096 members × 1,024 votes.
pub const MAX_ADMITTERS: usize = 8;

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

/// A vote whose signature was checked: its key, its motion and the vote.
type Checked = (VoteKey, Motion, Signed<Motion>);

/// The motion a vote signs, if its signature holds.
fn verified(vote: &Signed<Motion>) -> Result<Motion, VoteRefusal> {
    vote.verify()
        .map_err(|e| VoteRefusal::Envelope(e.to_string()))
}

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
    index: VoteIndex,
}

/// What the budget checks read, kept as votes come and go so that a check costs no scan of
/// every vote held.
#[derive(Clone, Debug, Default)]
struct VoteIndex {
    /// The motions each key has voted for.
    by_signer: BTreeMap<PublicKey, BTreeSet<MotionId>>,
    /// Per domain key, the signatures of members other than governors on its admissions.
    admitters: BTreeMap<PublicKey, usize>,
}

impl VoteIndex {
    fn add(&mut self, id: MotionId, motion: &Motion, signer: PublicKey, governor: bool) {
        self.by_signer.entry(signer).or_default().insert(id);
        if let Action::Admit(m) = &motion.action
            && !governor
        {
            *self.admitters.entry(m.key).or_default() += 1;
        }
    }

    fn of(motions: &BTreeMap<MotionId, Tally>, charter: &Charter) -> Self {
        let mut index = Self::default();
        for (id, tally) in motions {
            for signer in tally.votes.keys() {
                index.add(*id, &tally.motion, *signer, charter.is_governor(signer));
            }
        }
        index
    }

    fn given(&self, signer: &PublicKey) -> usize {
        self.by_signer.get(signer).map_or(0, BTreeSet::len)
    }

    fn admitters(&self, key: &PublicKey) -> usize {
        self.admitters.get(key).copied().unwrap_or(0)
    }
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
            index: VoteIndex::default(),
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
        // Each signature is checked once, however many passes offer its vote.
        let mut refused = Vec::new();
        let mut checked = Vec::new();
        for vote in votes {
            match verified(&vote) {
                Ok(motion) => checked.push((VoteKey::of(&vote), motion, vote)),
                Err(e) => refused.push((vote, e)),
            }
        }
        // First pass: every vote once. A vote whose signer is not a member yet waits, filed
        // under its signer, and is offered again as soon as that signer is admitted: a
        // chain of admissions in any order costs one offer per vote, not one per vote and
        // link.
        let mut by_signer: BTreeMap<PublicKey, Vec<Checked>> = BTreeMap::new();
        let mut waiting: Vec<Checked> = Vec::new();
        let mut admitted: Vec<PublicKey> = Vec::new();
        for vote in checked {
            match state.offer_checked(&vote) {
                Ok(VoteOutcome::Accepted(changes)) => {
                    admitted.extend(changes.admitted.iter().map(|m| m.key));
                }
                Ok(VoteOutcome::Duplicate) => {}
                Err(VoteRefusal::NotEligible(_)) => {
                    by_signer.entry(vote.2.signer()).or_default().push(vote);
                }
                Err(_) => waiting.push(vote),
            }
        }
        while let Some(key) = admitted.pop() {
            for vote in by_signer.remove(&key).unwrap_or_default() {
                match state.offer_checked(&vote) {
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
            let mut left = Vec::new();
            for vote in waiting {
                if let Err(e) = state.offer_checked(&vote) {
                    left.push((vote, e));
                }
            }
            if left.len() == before || left.is_empty() {
                refused.extend(left.into_iter().map(|((_, _, vote), e)| (vote, e)));
                return Ok((state, refused));
            }
            waiting = left.into_iter().map(|(v, _)| v).collect();
        }
    }

    /// [`Self::offer`] of a vote whose signature was checked.
    fn offer_checked(&mut self, (key, motion, vote): &Checked) -> Result<VoteOutcome, VoteRefusal> {
        if self.vote(key).is_some_and(|held| held == vote) {
            return Ok(VoteOutcome::Duplicate);
        }
        self.admissible(motion, &vote.signer(), &key.motion)?;
        Ok(VoteOutcome::Accepted(self.insert(
            vote,
            *key,
            motion.clone(),
        )))
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

    /// How many votes are held.
    pub fn vote_count(&self) -> usize {
        self.motions.values().map(|t| t.votes.len()).sum()
    }

    /// Every vote held, those a newcomer needs to derive the mesh's state first: the votes
    /// carrying the removals on record and the policies in force, then, member by member in
    /// the order of their admission from the founders, the votes carrying each admission,
    /// then the rest. A join answer is cut at a byte bound: a mesh of 4,096 members needs
    /// about one vote each, which fits, while all it holds (up to 8 admitters per domain)
    /// does not, and a cut in another order could leave out the newcomer's own admission
    /// or its inviter's.
    pub fn votes_for_newcomer(&self) -> Vec<&Signed<Motion>> {
        let mut placed: BTreeSet<VoteKey> = BTreeSet::new();
        let mut out: Vec<VoteKey> = Vec::new();
        let mut place = |id: &MotionId, signer: &PublicKey, out: &mut Vec<VoteKey>| {
            let key = VoteKey {
                motion: *id,
                signer: *signer,
            };
            if placed.insert(key) {
                out.push(key);
            }
        };
        // The first `quorum` governors' signatures on a motion: what carries it.
        let quorum = |id: &MotionId| -> Vec<PublicKey> {
            self.motions.get(id).map_or_else(Vec::new, |t| {
                t.votes
                    .keys()
                    .filter(|k| self.charter.is_governor(k))
                    .take(usize::from(self.charter.quorum))
                    .copied()
                    .collect()
            })
        };
        let decisive = self
            .canonical_removals()
            .into_values()
            .chain(self.policy_winner().map(|(id, _)| id));
        for id in decisive {
            for signer in quorum(&id) {
                place(&id, &signer, &mut out);
            }
        }
        // Admissions, breadth first from the founders, as `recompute` admits them.
        let mut admitted: BTreeSet<PublicKey> = BTreeSet::new();
        let mut queue: std::collections::VecDeque<PublicKey> = self
            .members
            .keys()
            .filter(|k| self.is_founder(k))
            .copied()
            .collect();
        if self.charter.admission == AdmissionRule::AnyMember {
            while let Some(signer) = queue.pop_front() {
                for id in self.index.by_signer.get(&signer).into_iter().flatten() {
                    if let Some(Tally {
                        motion:
                            Motion {
                                action: Action::Admit(m),
                                ..
                            },
                        ..
                    }) = self.motions.get(id)
                        && self.members.contains_key(&m.key)
                        && !self.is_founder(&m.key)
                        && admitted.insert(m.key)
                    {
                        place(id, &signer, &mut out);
                        queue.push_back(m.key);
                    }
                }
            }
        } else {
            for (id, tally) in &self.motions {
                if let Action::Admit(m) = &tally.motion.action
                    && self.members.contains_key(&m.key)
                    && admitted.insert(m.key)
                {
                    for signer in quorum(id) {
                        place(id, &signer, &mut out);
                    }
                }
            }
        }
        for (id, tally) in &self.motions {
            for signer in tally.votes.keys() {
                place(id, signer, &mut out);
            }
        }
        out.iter().filter_map(|key| self.vote(key)).collect()
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
        // Refused on what it claims before its signature is checked: each refusal below
        // holds whoever signed, so a flood of votes a node would not keep (a signer past its
        // budget, a domain whose admission has its signers, a non-member) costs a decode,
        // not an Ed25519 check. Only a vote that would be taken is verified.
        let claimed = vote
            .decode_trusted()
            .map_err(|e| VoteRefusal::Envelope(e.to_string()))?;
        self.admissible(&claimed, &vote.signer(), &key.motion)?;
        // The signature covers the very bytes `claimed` was decoded from.
        verified(vote)?;
        Ok(VoteOutcome::Accepted(self.insert(vote, key, claimed)))
    }

    /// Adds a vote found admissible, whose signature holds, and says what it changed.
    fn insert(&mut self, vote: &Signed<Motion>, key: VoteKey, motion: Motion) -> Changes {
        let signer = vote.signer();
        let governor = self.charter.is_governor(&signer);
        let was_carried = self
            .motions
            .get(&key.motion)
            .is_some_and(|t| self.is_carried(t, &self.members));
        self.index.add(key.motion, &motion, signer, governor);
        let tally = self.motions.entry(key.motion).or_insert_with(|| Tally {
            motion,
            votes: BTreeMap::new(),
        });
        tally.votes.insert(signer, vote.clone());
        let carried = self.is_carried(&self.motions[&key.motion], &self.members);
        // A vote that carries nothing new changes nothing (every vote held has a member or
        // governor signer and a motion not superseded); an admission it carries admits one
        // key, whose own votes cannot be held yet (they were refused: it was no member).
        // Only a removal or an amendment it carries needs the state derived again.
        match &self.motions[&key.motion].motion.action {
            _ if was_carried || !carried => Changes::default(),
            Action::Admit(m) => {
                let mut changes = Changes::default();
                if !self.members.contains_key(&m.key) && self.members.len() < MAX_MEMBERS {
                    debug_assert_eq!(self.index.given(&m.key), 0);
                    self.members.insert(m.key, m.domain.clone());
                    changes.admitted.push(m.clone());
                }
                changes
            }
            Action::Remove { .. } | Action::Amend { .. } => self.recompute_changes(),
        }
    }

    /// Whether `signer` may add a vote for `motion` (id `id`) now: eligibility, staleness
    /// and the budgets, without changing anything.
    fn admissible(
        &self,
        motion: &Motion,
        signer: &PublicKey,
        id: &MotionId,
    ) -> Result<(), VoteRefusal> {
        // A vote on a motion already held (carried or not) is one more signature on the
        // record: only the signer's eligibility is checked, not whether it is still news.
        let held = self.motions.contains_key(id);
        self.check_vote(motion, signer, held).map_err(|refusal| {
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
        if !held && self.superseded(id, &motion.action) {
            return Err(VoteRefusal::Stale(
                "a motion of the same effect is carried already".into(),
            ));
        }
        let governor = self.charter.is_governor(signer);
        if self.index.given(signer) >= MAX_VOTES_PER_SIGNER {
            return Err(VoteRefusal::OverBudget(format!(
                "the signer has given {MAX_VOTES_PER_SIGNER} votes, the most a node keeps"
            )));
        }
        if let Action::Admit(m) = &motion.action
            && !governor
            && self.index.admitters(&m.key) >= MAX_ADMITTERS
        {
            return Err(VoteRefusal::OverBudget(format!(
                "the domain's admission has {MAX_ADMITTERS} members' signatures besides the governors', the most a node keeps"
            )));
        }
        let open = self.index.by_signer.get(signer).map_or(0, |ids| {
            ids.iter()
                .filter_map(|id| self.motions.get(id))
                .filter(|t| !self.is_carried(t, &self.members))
                .count()
        });
        if open >= MAX_OPEN_PER_SIGNER {
            return Err(VoteRefusal::OverBudget(format!(
                "the signer has {MAX_OPEN_PER_SIGNER} open motions, the most a node keeps"
            )));
        }
        Ok(())
    }

    /// Derives the state again from every vote and says what changed.
    fn recompute_changes(&mut self) -> Changes {
        let before_members = self.members.clone();
        let before_version = self.policies.version;
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
        Changes {
            admitted,
            removed,
            policies: (self.policies.version != before_version).then_some(self.policies.version),
            pruned,
        }
    }

    /// Whether `key` is a governor or founding member (a member unless removed).
    pub fn is_founder(&self, key: &PublicKey) -> bool {
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
        self.index = VoteIndex::of(&self.motions, &self.charter);
        self.members = members;
        self.removed = removed;
        self.policies = policies;
        pruned
    }
}

#[cfg(test)]
mod tests;
