//! Stored contracts: one record per agreement id in the `agreements` tree, on both sides.
//!
//! The record keeps the envelopes exactly as exchanged (request, co-signed agreement,
//! rejection, revocation) plus the state this node derived from them. The data plane reads
//! these records (and the `revocations` tree) to authorise and to find agreements.
//!
//! Every write of a record also updates the `agreement_index` tree in one sled transaction,
//! so that what a peer can trigger (a request, a status poll) costs lookups, not a scan of
//! every record ever stored. Index keys (values empty unless said):
//!
//! - `S role state id`: records by role and stored state (polls, `share pending`, counts);
//! - `C consumer role state id`: records by consumer key (open requests per consumer);
//! - `N consumer nonce` -> id: the nonce replay check;
//! - `R consumer updated_ms id` and `A updated_ms id`: closed records on the provider's side
//!   (rejected, revoked, expired), oldest first, per consumer and in all, so that what
//!   [`ClosedRetention`](mesh_protocol::retention::ClosedRetention) does not keep is found without reading a record;
//! - `V` -> the index's version, so that a store indexed by an older build is indexed again.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::str::FromStr;

use mesh_protocol::PublicKey;
use mesh_protocol::Signed;
use mesh_protocol::codec::{self, DecodeError};
use mesh_protocol::contract::effective_state;
use mesh_protocol::contract::{
    Agreement, AgreementId, ContractRequest, ContractState, ContractTerms, Rejection, Revocation,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sled::Transactional;

use crate::store::{Store, StoreError};

/// Index key prefixes (see the module docs).
const BY_STATE: u8 = b'S';
const BY_CONSUMER: u8 = b'C';
const BY_NONCE: u8 = b'N';
const CLOSED_OF: u8 = b'R';
const CLOSED: u8 = b'A';
const VERSION: &[u8] = b"V";
/// Version of the index's layout; an index of another version is built again at start.
const INDEX_VERSION: u8 = 2;

/// Largest stored record.
const MAX_RECORD: usize = 512 * 1024;

fn role_byte(role: Role) -> u8 {
    match role {
        Role::Provider => 0,
        Role::Consumer => 1,
    }
}

fn state_byte(state: ContractState) -> u8 {
    ContractState::ALL
        .iter()
        .position(|s| *s == state)
        .unwrap_or(0) as u8
}

/// The index keys of one record (none when its request does not decode).
fn index_keys(id: &AgreementId, record: &AgreementRecord) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Ok(terms) = record.terms() else {
        return Vec::new();
    };
    let (role, state) = (role_byte(record.role), state_byte(record.state));
    let mut by_state = vec![BY_STATE, role, state];
    by_state.extend_from_slice(&id.0);
    let mut by_consumer = vec![BY_CONSUMER];
    by_consumer.extend_from_slice(&terms.consumer.0);
    by_consumer.extend_from_slice(&[role, state]);
    by_consumer.extend_from_slice(&id.0);
    let mut by_nonce = vec![BY_NONCE];
    by_nonce.extend_from_slice(&terms.consumer.0);
    by_nonce.extend_from_slice(&terms.nonce);
    let mut keys = vec![
        (by_state, Vec::new()),
        (by_consumer, Vec::new()),
        (by_nonce, id.0.to_vec()),
    ];
    if is_closed(record.role, record.state) {
        let at = record.updated_ms.to_be_bytes();
        let mut of_consumer = vec![CLOSED_OF];
        of_consumer.extend_from_slice(&terms.consumer.0);
        of_consumer.extend_from_slice(&at);
        of_consumer.extend_from_slice(&id.0);
        let mut closed = vec![CLOSED];
        closed.extend_from_slice(&at);
        closed.extend_from_slice(&id.0);
        keys.push((of_consumer, Vec::new()));
        keys.push((closed, Vec::new()));
    }
    keys
}

/// A record [`ClosedRetention`](mesh_protocol::retention::ClosedRetention) bounds: one of ours as provider, in a state no event leaves.
fn is_closed(role: Role, state: ContractState) -> bool {
    role == Role::Provider && state.is_final()
}

fn ids_of(
    index: &sled::Tree,
    prefix: &[u8],
    skip: usize,
    limit: usize,
) -> Result<Vec<AgreementId>, StoreError> {
    let mut out = Vec::new();
    for key in index.scan_prefix(prefix).keys().take(limit) {
        let key = key?;
        if let Some(id) = key
            .get(skip..skip + 32)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
        {
            out.push(AgreementId(id));
        }
    }
    Ok(out)
}

/// Decodes one entry of the `agreements` tree.
fn decode_agreement(
    key: &[u8],
    value: &[u8],
) -> Result<(AgreementId, AgreementRecord), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        tree: "agreements",
        key: hex::encode(key),
        reason,
    };
    let id: [u8; 32] = key
        .try_into()
        .map_err(|_| corrupt("key is not an agreement id".into()))?;
    let record = AgreementRecord::from_bytes(value).map_err(|e| corrupt(e.to_string()))?;
    Ok((AgreementId(id), record))
}

/// A stored record as a listing reads it: its id, the record and its stored size in bytes.
type Stored = (AgreementId, AgreementRecord, usize);

/// Where a contract comes in a listing (newest first, then by id): a greater rank comes
/// first. The creation time is the start of the terms' validity.
type Rank = (u64, Reverse<[u8; 32]>);

/// Where a listing of contracts resumes (`share list --before`): after the contract created
/// at `created_ms` with id `id` in the listing's order (newest first, then by id), or, with no
/// id, at the contracts created before `created_ms`. Written `MS-ID` (the id in 64 hex
/// digits, as a listing names the next page) or `MS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListCursor {
    /// Creation time (start of validity), ms since the epoch.
    pub created_ms: u64,
    /// The last contract of the newer page, if any.
    pub id: Option<AgreementId>,
}

impl ListCursor {
    /// Whether a contract of `rank` comes after the cursor in a listing.
    fn admits(&self, rank: &Rank) -> bool {
        match self.id {
            Some(id) => *rank < (self.created_ms, Reverse(id.0)),
            None => rank.0 < self.created_ms,
        }
    }
}

impl fmt::Display for ListCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{}-{}", self.created_ms, id.to_hex()),
            None => write!(f, "{}", self.created_ms),
        }
    }
}

/// Why a text is not a [`ListCursor`].
#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` is not a position in the contract list: give a time in ms since the epoch (contracts created before it) or the `MS-ID` a listing names for its next page"
)]
pub struct BadListCursor(String);

impl FromStr for ListCursor {
    type Err = BadListCursor;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadListCursor(text.chars().take(100).collect());
        let (ms, id) = match text.split_once('-') {
            Some((ms, id)) => (ms, Some(id)),
            None => (text, None),
        };
        if ms.is_empty() || !ms.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let created_ms = ms.parse().map_err(|_| bad())?;
        let id = match id {
            None => None,
            Some(hex) => {
                let bytes: [u8; 32] = hex::decode(hex)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(bad)?;
                Some(AgreementId(bytes))
            }
        };
        Ok(Self { created_ms, id })
    }
}

impl Serialize for ListCursor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListCursor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Which contracts a listing shows: of one role, in one state now (an agreed contract past
/// its end is expired), or all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this node's side.
    pub role: Option<Role>,
    /// Only contracts in this state now.
    pub state: Option<ContractState>,
}

/// A page of stored contracts, newest first (see [`Store::agreement_page`]).
#[derive(Debug, Default)]
pub struct AgreementPage {
    /// The page's records, newest first (then by id).
    pub records: Vec<(AgreementId, AgreementRecord)>,
    /// Contracts the filter and the cursor admit that are not on the page (all older).
    pub more: u64,
    /// The cursor of the next page, when there are more.
    pub next_before: Option<ListCursor>,
    /// Records read to choose the page, each decoded once and dropped before the next.
    pub read: u64,
}

/// Which side of the contract this node is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// We own the product.
    Provider,
    /// We asked for it.
    Consumer,
}

impl Role {
    /// Lowercase label used in the CLI and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Provider => "provider",
            Role::Consumer => "consumer",
        }
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        [Role::Provider, Role::Consumer]
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| format!("unknown role `{text}`: provider or consumer"))
    }
}

/// Everything this node knows about one contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgreementRecord {
    /// Our side.
    pub role: Role,
    /// The consumer's signed request, as received or sent.
    pub request: Signed<ContractRequest>,
    /// The co-signed agreement, once agreed.
    pub agreement: Option<Agreement>,
    /// The provider's signed rejection, if rejected.
    pub rejection: Option<Signed<Rejection>>,
    /// The signed revocation, if revoked.
    pub revocation: Option<Signed<Revocation>>,
    /// Stored state (expiry is derived from the clock on read).
    pub state: ContractState,
    /// Last change, Unix ms.
    pub updated_ms: u64,
}

impl AgreementRecord {
    /// The terms (from the request this node verified before storing it).
    pub fn terms(&self) -> Result<ContractTerms, DecodeError> {
        Ok(self.request.decode_trusted()?.terms)
    }

    /// State at `now_ms`: an agreed contract past its end is expired.
    pub fn state_at(&self, now_ms: u64) -> ContractState {
        match self.terms() {
            Ok(t) => effective_state(self.state, t.valid_until_ms, now_ms),
            Err(_) => self.state,
        }
    }

    /// Encodes for the store.
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a stored record.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_RECORD)
    }
}

impl Store {
    /// Stores (or replaces) a contract record and its index entries, in one transaction.
    /// When the record is a closed one of ours as provider, then removes the oldest closed
    /// records past the store's [`ClosedRetention`](mesh_protocol::retention::ClosedRetention): of the same consumer, then of all.
    /// Callers flush before acknowledging.
    pub fn put_agreement(
        &self,
        id: &AgreementId,
        record: &AgreementRecord,
    ) -> Result<(), StoreError> {
        self.write_agreement(id, Some(record))?;
        if !is_closed(record.role, record.state) {
            return Ok(());
        }
        let Ok(terms) = record.terms() else {
            return Ok(());
        };
        let removed = self.prune_closed(&terms.consumer)?;
        if removed > 0 {
            tracing::debug!(removed, "removed the oldest closed contract records");
        }
        Ok(())
    }

    /// Removes a contract record and its index entries, in one transaction.
    pub fn remove_agreement(&self, id: &AgreementId) -> Result<(), StoreError> {
        self.write_agreement(id, None)
    }

    fn write_agreement(
        &self,
        id: &AgreementId,
        record: Option<&AgreementRecord>,
    ) -> Result<(), StoreError> {
        let new_keys = record.map(|r| index_keys(id, r)).unwrap_or_default();
        let bytes = record.map(AgreementRecord::to_bytes);
        // The role and state the record had, from the transaction's last (successful) run.
        let previous = std::cell::Cell::new(None);
        let written = (self.agreements(), self.agreement_index())
            .transaction(|(agreements, index)| {
                let old = match &bytes {
                    Some(b) => agreements.insert(&id.0, b.as_slice())?,
                    None => agreements.remove(&id.0)?,
                };
                previous.set(None);
                if let Some(old) = old.and_then(|b| AgreementRecord::from_bytes(&b).ok()) {
                    previous.set(Some((old.role, old.state)));
                    for (key, _) in index_keys(id, &old) {
                        index.remove(key)?;
                    }
                }
                for (key, value) in &new_keys {
                    index.insert(key.as_slice(), value.as_slice())?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
                sled::transaction::TransactionError::Abort(()) => {
                    StoreError::Sled(sled::Error::ReportableBug("aborted index write".into()))
                }
            });
        // Also after a failed write: a reader rescans rather than trust a guess.
        self.bump_agreement_generation();
        written?;
        let was_closed = previous
            .get()
            .is_some_and(|(role, state)| is_closed(role, state));
        let now_closed = record.is_some_and(|r| is_closed(r.role, r.state));
        self.count_closed(i64::from(now_closed) - i64::from(was_closed));
        if let Some(record) = record
            && previous.get().map(|(_, state)| state) != Some(record.state)
        {
            self.contract_decisions().record(record.role, record.state);
        }
        Ok(())
    }

    /// Adds `delta` to the count of closed records, when it has been counted.
    fn count_closed(&self, delta: i64) {
        let mut count = self.closed_count.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = count.as_mut() {
            *n = n.saturating_add_signed(delta);
        }
    }

    /// Closed records stored, counted on the index the first time.
    fn closed_records(&self) -> Result<u64, StoreError> {
        let mut count = self.closed_count.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = *count {
            return Ok(n);
        }
        let mut n = 0u64;
        for key in self.agreement_index().scan_prefix([CLOSED]).keys() {
            key?;
            n += 1;
        }
        *count = Some(n);
        Ok(n)
    }

    /// Removes the oldest closed records of `consumer` past the store's [`ClosedRetention`](mesh_protocol::retention::ClosedRetention),
    /// then, counting what is left, the oldest of all consumers; at most a batch of each.
    fn prune_closed(&self, consumer: &PublicKey) -> Result<usize, StoreError> {
        let retention = self.retention;
        let mut prefix = vec![CLOSED_OF];
        prefix.extend_from_slice(&consumer.0);
        let of_consumer = self
            .agreement_index()
            .scan_prefix(&prefix)
            .keys()
            .take(retention.consumer_count_limit())
            .count();
        // Keys are ordered oldest first; the id follows the 8 bytes of the time.
        let surplus = retention.surplus_of_consumer(of_consumer);
        let oldest = ids_of(self.agreement_index(), &prefix, prefix.len() + 8, surplus)?;
        let mut removed = self.remove_closed(&oldest)?;
        let surplus = retention.surplus_overall(self.closed_records()?);
        let oldest = ids_of(self.agreement_index(), &[CLOSED], 1 + 8, surplus)?;
        removed += self.remove_closed(&oldest)?;
        Ok(removed)
    }

    /// Removes closed records with their index entries and stored revocations.
    fn remove_closed(&self, ids: &[AgreementId]) -> Result<usize, StoreError> {
        for id in ids {
            self.remove_agreement(id)?;
            self.revocations().remove(id.0)?;
        }
        Ok(ids.len())
    }

    /// Builds the index again when it was written by a build with another layout (or by
    /// one before it); returns the records indexed.
    pub fn rebuild_agreement_index_if_stale(&self) -> Result<usize, StoreError> {
        let index = self.agreement_index();
        if index.get(VERSION)?.as_deref() == Some(&[INDEX_VERSION]) {
            return Ok(0);
        }
        index.clear()?;
        let mut indexed = 0;
        for item in self.agreement_iter() {
            let (id, record) = item?;
            for (key, value) in index_keys(&id, &record) {
                index.insert(key, value)?;
            }
            indexed += 1;
        }
        index.insert(VERSION, &[INDEX_VERSION])?;
        *self.closed_count.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.bump_agreement_generation();
        Ok(indexed)
    }

    /// Ids of the records with `role` in stored `state`, at most `limit`.
    pub fn agreement_ids_in(
        &self,
        role: Role,
        state: ContractState,
        limit: usize,
    ) -> Result<Vec<AgreementId>, StoreError> {
        let prefix = [BY_STATE, role_byte(role), state_byte(state)];
        ids_of(self.agreement_index(), &prefix, 3, limit)
    }

    /// The records with `role`, in any state, found through the index: what this node asked
    /// for (consumer), without reading the records other members' requests leave here.
    pub fn agreement_records_of(
        &self,
        role: Role,
    ) -> Result<Vec<(AgreementId, AgreementRecord)>, StoreError> {
        let mut out = Vec::new();
        for state in ContractState::ALL {
            for id in self.agreement_ids_in(role, state, usize::MAX)? {
                if let Some(record) = self.agreement(&id)? {
                    out.push((id, record));
                }
            }
        }
        Ok(out)
    }

    /// Number of records with `role` in stored `state`, counted on the index keys up to
    /// `limit` (a budget check needs no more than its limit, whatever the store holds).
    pub fn count_agreements_in(&self, role: Role, state: ContractState, limit: usize) -> usize {
        let prefix = [BY_STATE, role_byte(role), state_byte(state)];
        self.agreement_index()
            .scan_prefix(prefix)
            .keys()
            .take(limit)
            .count()
    }

    /// Number of records of `consumer` with `role` in stored `state`, up to `limit`.
    pub fn count_agreements_of(
        &self,
        consumer: &PublicKey,
        role: Role,
        state: ContractState,
        limit: usize,
    ) -> usize {
        let mut prefix = vec![BY_CONSUMER];
        prefix.extend_from_slice(&consumer.0);
        prefix.extend_from_slice(&[role_byte(role), state_byte(state)]);
        self.agreement_index()
            .scan_prefix(prefix)
            .keys()
            .take(limit)
            .count()
    }

    /// The record that already uses `nonce` for `consumer`, if any.
    pub fn agreement_with_nonce(
        &self,
        consumer: &PublicKey,
        nonce: &[u8; 16],
    ) -> Result<Option<AgreementId>, StoreError> {
        let mut key = vec![BY_NONCE];
        key.extend_from_slice(&consumer.0);
        key.extend_from_slice(nonce);
        Ok(self
            .agreement_index()
            .get(key)?
            .and_then(|v| <[u8; 32]>::try_from(v.as_ref()).ok())
            .map(AgreementId))
    }

    /// Records whose id starts with `bytes` (a seek, not a scan), at most `limit`.
    pub fn agreements_with_prefix(
        &self,
        bytes: &[u8],
        limit: usize,
    ) -> Result<Vec<(AgreementId, AgreementRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self.agreements().scan_prefix(bytes).take(limit) {
            let (key, value) = item?;
            out.push(decode_agreement(&key, &value)?);
        }
        Ok(out)
    }

    /// The records whose id, in hex, starts with `prefix` (hex digits, either case), of the
    /// first `limit` whose id starts with its whole bytes: a seek in the tree, not a walk of
    /// it. A prefix that is not hex, or longer than an id, matches nothing.
    pub fn agreements_with_hex_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(AgreementId, AgreementRecord)>, StoreError> {
        if prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Vec::new());
        }
        let prefix = prefix.to_ascii_lowercase();
        let Ok(bytes) = hex::decode(&prefix[..prefix.len() / 2 * 2]) else {
            return Ok(Vec::new());
        };
        Ok(self
            .agreements_with_prefix(&bytes, limit)?
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(&prefix))
            .collect())
    }

    /// One contract record.
    pub fn agreement(&self, id: &AgreementId) -> Result<Option<AgreementRecord>, StoreError> {
        let Some(bytes) = self.agreements().get(id.0)? else {
            return Ok(None);
        };
        AgreementRecord::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                tree: "agreements",
                key: id.to_hex(),
                reason: e.to_string(),
            })
    }

    /// Every contract record with its id, collected: for tests and small stores only; a
    /// reader of a store other members fill goes through [`Self::agreement_iter`] or
    /// [`Self::agreement_page`].
    pub fn agreement_records(&self) -> Result<Vec<(AgreementId, AgreementRecord)>, StoreError> {
        self.agreement_iter().collect()
    }

    /// Every contract record with its id, in id order, each read and decoded when the
    /// iterator reaches it: memory holds one record at a time, whatever the store holds.
    pub fn agreement_iter(
        &self,
    ) -> impl Iterator<Item = Result<(AgreementId, AgreementRecord), StoreError>> + use<> {
        self.stored_agreements(ListFilter::default())
            .map(|item| item.map(|(id, record, _)| (id, record)))
    }

    /// The records a listing with `filter` looks at, read one at a time with their stored
    /// size: every record without a filter (a walk of the tree); else, through the index,
    /// only those of the role and the stored states the filter can admit (an agreed record
    /// may show as expired). The filter's state is not checked here: it depends on the time.
    fn stored_agreements(
        &self,
        filter: ListFilter,
    ) -> Box<dyn Iterator<Item = Result<Stored, StoreError>>> {
        let agreements = self.agreements().clone();
        if filter == ListFilter::default() {
            return Box::new(agreements.iter().map(|item| {
                let (key, value) = item?;
                let (id, record) = decode_agreement(&key, &value)?;
                Ok((id, record, value.len()))
            }));
        }
        let roles: Vec<Role> = match filter.role {
            Some(role) => vec![role],
            None => vec![Role::Provider, Role::Consumer],
        };
        let states: Vec<ContractState> = match filter.state {
            None => ContractState::ALL.to_vec(),
            Some(ContractState::Expired) => vec![ContractState::Agreed, ContractState::Expired],
            Some(state) => vec![state],
        };
        let prefixes: Vec<[u8; 3]> = roles
            .iter()
            .flat_map(|role| {
                states
                    .iter()
                    .map(|state| [BY_STATE, role_byte(*role), state_byte(*state)])
            })
            .collect();
        let index = self.agreement_index().clone();
        Box::new(
            prefixes
                .into_iter()
                .flat_map(move |prefix| index.scan_prefix(prefix).keys())
                .filter_map(move |key| {
                    let key = match key {
                        Ok(key) => key,
                        Err(e) => return Some(Err(e.into())),
                    };
                    // `S role state id`: the id follows the three bytes of the prefix.
                    let id = key.get(3..)?;
                    match agreements.get(id) {
                        // Removed since the index was read.
                        Ok(None) => None,
                        Ok(Some(value)) => {
                            Some(decode_agreement(id, &value).map(|(id, r)| (id, r, value.len())))
                        }
                        Err(e) => Some(Err(e.into())),
                    }
                }),
        )
    }

    /// The newest contracts `filter` admits after `before` (all when `None`), newest first
    /// (then by id): at most `limit` (at least one) and at most `max_bytes` of stored
    /// records (at least one record). Records are read one at a time and only the ids of the
    /// best `limit` so far are kept (a heap); the page's records are read again at the end.
    /// Memory is bounded by the page, time by the records the filter reaches. A blocking
    /// call.
    pub fn agreement_page(
        &self,
        filter: ListFilter,
        before: Option<ListCursor>,
        limit: usize,
        max_bytes: usize,
        now_ms: u64,
    ) -> Result<AgreementPage, StoreError> {
        let limit = limit.max(1);
        // The best candidates so far, the one listed last on top.
        let mut best: BinaryHeap<Reverse<(Rank, usize)>> = BinaryHeap::new();
        let (mut read, mut matched) = (0u64, 0u64);
        for item in self.stored_agreements(filter) {
            let (id, record, bytes) = item?;
            read += 1;
            let terms = record.terms().map_err(|e| StoreError::Corrupt {
                tree: "agreements",
                key: id.to_hex(),
                reason: format!("the request does not decode: {e}"),
            })?;
            if filter.role.is_some_and(|role| role != record.role)
                || filter.state.is_some_and(|state| {
                    effective_state(record.state, terms.valid_until_ms, now_ms) != state
                })
            {
                continue;
            }
            let rank: Rank = (terms.valid_from_ms, Reverse(id.0));
            if before.is_some_and(|cursor| !cursor.admits(&rank)) {
                continue;
            }
            matched += 1;
            if best.len() < limit {
                best.push(Reverse((rank, bytes)));
            } else if best.peek().is_some_and(|Reverse((last, _))| rank > *last) {
                best.pop();
                best.push(Reverse((rank, bytes)));
            }
        }
        // Ascending order of `Reverse`: the newest first.
        let chosen = best.into_sorted_vec();
        let mut page = AgreementPage {
            read,
            ..Default::default()
        };
        let (mut taken, mut bytes_taken) = (0u64, 0usize);
        let mut last = None;
        for Reverse(((created_ms, Reverse(id)), bytes)) in chosen {
            if taken > 0 && bytes_taken.saturating_add(bytes) > max_bytes {
                break;
            }
            taken += 1;
            bytes_taken = bytes_taken.saturating_add(bytes);
            let id = AgreementId(id);
            last = Some(ListCursor {
                created_ms,
                id: Some(id),
            });
            // Removed since it was read: left out.
            if let Some(record) = self.agreement(&id)? {
                page.records.push((id, record));
            }
        }
        page.more = matched - taken;
        page.next_before = if page.more > 0 { last } else { None };
        Ok(page)
    }

    /// The signed revocation of an agreement, if this node has heard of one.
    pub fn revocation(&self, id: &AgreementId) -> Result<Option<Signed<Revocation>>, StoreError> {
        let Some(bytes) = self.revocations().get(id.0)? else {
            return Ok(None);
        };
        Signed::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                tree: "revocations",
                key: id.to_hex(),
                reason: e.to_string(),
            })
    }

    /// Records a verified revocation.
    pub fn put_revocation(
        &self,
        id: &AgreementId,
        revocation: &Signed<Revocation>,
    ) -> Result<(), StoreError> {
        self.revocations().insert(id.0, revocation.to_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use mesh_protocol::contract::{Columns, DAY_MS};
    use mesh_protocol::retention::ClosedRetention;
    use mesh_protocol::{Identity, ProductId};

    use super::*;

    fn provider() -> Identity {
        Identity::from_secret_bytes([1; 32])
    }

    fn consumer(n: u8) -> Identity {
        Identity::from_secret_bytes([10 + n; 32])
    }

    fn open(retention: ClosedRetention) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path())
            .unwrap()
            .with_closed_retention(retention);
        (dir, store)
    }

    /// A record of `consumer`'s request (nonce `n`), in `state` on our `role`, written at
    /// `at_ms`.
    fn record(
        role: Role,
        consumer: &Identity,
        n: u8,
        state: ContractState,
        at_ms: u64,
    ) -> AgreementRecord {
        let terms = ContractTerms {
            product: ProductId {
                owner: provider().public_key(),
                name: "orders".into(),
            },
            provider_domain: "sales".into(),
            consumer_domain: "churn".into(),
            provider: provider().public_key(),
            consumer: consumer.public_key(),
            min_version: 1,
            max_version: None,
            purpose: "marketing".into(),
            columns: Columns::Listed(vec!["order_id".into()]),
            filter: None,
            valid_from_ms: 0,
            valid_until_ms: DAY_MS,
            nonce: [n; 16],
        };
        AgreementRecord {
            role,
            request: Signed::sign(consumer, &ContractRequest { terms }),
            agreement: None,
            rejection: None,
            revocation: None,
            state,
            updated_ms: at_ms,
        }
    }

    /// Writes `record` and returns its id.
    fn put(store: &Store, record: &AgreementRecord) -> AgreementId {
        let id = record.terms().unwrap().id();
        store.put_agreement(&id, record).unwrap();
        id
    }

    fn held(store: &Store, ids: &[AgreementId]) -> Vec<bool> {
        ids.iter()
            .map(|id| store.agreement(id).unwrap().is_some())
            .collect()
    }

    #[test]
    fn a_consumer_keeps_only_its_newest_closed_records_with_their_index_and_revocations() {
        let (_dir, store) = open(ClosedRetention {
            per_consumer: 3,
            total: 100,
        });
        let (a, b) = (consumer(1), consumer(2));
        let open_request = put(
            &store,
            &record(Role::Provider, &a, 0, ContractState::Pending, 0),
        );
        let other = put(
            &store,
            &record(Role::Provider, &b, 1, ContractState::Rejected, 1),
        );
        // A's oldest closed record is a revoked agreement whose revocation is stored.
        let revoked = record(Role::Provider, &a, 1, ContractState::Revoked, 1);
        let revoked_id = revoked.terms().unwrap().id();
        let revocation = Signed::sign(
            &provider(),
            &Revocation {
                agreement_id: revoked_id,
                by: provider().public_key(),
                reason: "test".into(),
                at_ms: 1,
            },
        );
        store.put_revocation(&revoked_id, &revocation).unwrap();
        put(&store, &revoked);
        let mut closed = vec![revoked_id];
        for n in 2..=5 {
            let state = if n % 2 == 0 {
                ContractState::Rejected
            } else {
                ContractState::Expired
            };
            closed.push(put(
                &store,
                &record(Role::Provider, &a, n, state, u64::from(n)),
            ));
        }
        // The two oldest of A's five are gone, with the index keys that name them.
        assert_eq!(held(&store, &closed), [false, false, true, true, true]);
        assert_eq!(store.revocation(&revoked_id).unwrap(), None);
        let a_key = a.public_key();
        assert_eq!(store.agreement_with_nonce(&a_key, &[1; 16]).unwrap(), None);
        assert_eq!(store.agreement_with_nonce(&a_key, &[2; 16]).unwrap(), None);
        assert_eq!(
            store.agreement_with_nonce(&a_key, &[5; 16]).unwrap(),
            Some(closed[4])
        );
        let rejected =
            store.count_agreements_of(&a_key, Role::Provider, ContractState::Rejected, 9);
        assert_eq!(
            rejected, 1,
            "only the request written at 4 is left rejected"
        );
        // Open requests and other consumers' records are not A's closed records.
        assert_eq!(held(&store, &[open_request, other]), [true, true]);
        assert_eq!(store.closed_records().unwrap(), 4);
    }

    #[test]
    fn all_consumers_together_keep_only_the_newest_closed_records() {
        let (_dir, store) = open(ClosedRetention {
            per_consumer: 10,
            total: 4,
        });
        let mut closed = Vec::new();
        for n in 0..7u8 {
            let who = consumer(n % 3);
            closed.push(put(
                &store,
                &record(
                    Role::Provider,
                    &who,
                    n,
                    ContractState::Rejected,
                    u64::from(n),
                ),
            ));
        }
        assert_eq!(
            held(&store, &closed),
            [false, false, false, true, true, true, true]
        );
        assert_eq!(store.closed_records().unwrap(), 4);
        // A record removed otherwise is counted out.
        store.remove_agreement(&closed[6]).unwrap();
        assert_eq!(store.closed_records().unwrap(), 3);
    }

    #[test]
    fn records_of_our_own_requests_are_never_removed() {
        let (_dir, store) = open(ClosedRetention {
            per_consumer: 1,
            total: 1,
        });
        let me = consumer(1);
        let ours: Vec<_> = (0..5u8)
            .map(|n| {
                put(
                    &store,
                    &record(
                        Role::Consumer,
                        &me,
                        n,
                        ContractState::Rejected,
                        u64::from(n),
                    ),
                )
            })
            .collect();
        assert_eq!(held(&store, &ours), [true; 5]);
    }

    #[test]
    fn an_index_of_an_older_layout_is_built_again_and_the_excess_goes_a_batch_at_a_time() {
        let (dir, store) = open(ClosedRetention {
            per_consumer: 1_000,
            total: 1_000,
        });
        let a = consumer(1);
        let written = 150u64;
        for n in 0..written {
            let mut r = record(Role::Provider, &a, 0, ContractState::Rejected, n);
            r.request = {
                let mut terms = r.terms().unwrap();
                terms.nonce[..8].copy_from_slice(&n.to_be_bytes());
                Signed::sign(&a, &ContractRequest { terms })
            };
            put(&store, &r);
        }
        // An index as a build before the closed keys wrote it: no version, no closed keys.
        let index = store.agreement_index();
        for prefix in [[CLOSED_OF], [CLOSED]] {
            for key in index.scan_prefix(prefix).keys() {
                index.remove(key.unwrap()).unwrap();
            }
        }
        index.remove(VERSION).unwrap();
        drop(store);
        let store = Store::open(dir.path())
            .unwrap()
            .with_closed_retention(ClosedRetention {
                per_consumer: 10,
                total: 1_000,
            });
        assert_eq!(
            store.rebuild_agreement_index_if_stale().unwrap(),
            written as usize
        );
        assert_eq!(store.rebuild_agreement_index_if_stale().unwrap(), 0);
        assert_eq!(store.closed_records().unwrap(), written);
        // Each closed record written removes at most a batch of the oldest.
        let next = |n: u8| {
            record(
                Role::Provider,
                &a,
                n,
                ContractState::Rejected,
                1_000 + u64::from(n),
            )
        };
        put(&store, &next(1));
        let batch = mesh_protocol::retention::PRUNE_BATCH as u64;
        assert_eq!(store.closed_records().unwrap(), written + 1 - batch);
        put(&store, &next(2));
        put(&store, &next(3));
        assert_eq!(store.closed_records().unwrap(), 10);
        assert_eq!(store.agreement_records().unwrap().len(), 10);
    }

    #[test]
    fn own_records_and_an_id_prefix_are_found_without_reading_the_others() {
        let (_dir, store) = open(ClosedRetention {
            per_consumer: 1_000,
            total: 10_000,
        });
        let me = consumer(0);
        let mine: Vec<AgreementId> = [
            ContractState::Requested,
            ContractState::Agreed,
            ContractState::Revoked,
        ]
        .into_iter()
        .enumerate()
        .map(|(n, state)| put(&store, &record(Role::Consumer, &me, n as u8, state, 0)))
        .collect();
        let others: Vec<AgreementId> = (0..40)
            .map(|n| {
                let state = [ContractState::Pending, ContractState::Agreed][n % 2];
                put(
                    &store,
                    &record(
                        Role::Provider,
                        &consumer(1 + n as u8 % 4),
                        n as u8,
                        state,
                        0,
                    ),
                )
            })
            .collect();
        let mut found: Vec<AgreementId> = store
            .agreement_records_of(Role::Consumer)
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        found.sort_by_key(|id| id.0);
        let mut want = mine.clone();
        want.sort_by_key(|id| id.0);
        assert_eq!(found, want);

        // A prefix finds exactly the ids it begins, of any role, in either case.
        for id in mine.iter().chain(&others) {
            let hex = id.to_hex();
            for len in [1, 5, 12, 64] {
                let prefix = &hex[..len];
                let expected: Vec<AgreementId> = mine
                    .iter()
                    .chain(&others)
                    .filter(|other| other.to_hex().starts_with(prefix))
                    .copied()
                    .collect();
                for text in [prefix.to_owned(), prefix.to_ascii_uppercase()] {
                    let mut got: Vec<AgreementId> = store
                        .agreements_with_hex_prefix(&text, usize::MAX)
                        .unwrap()
                        .into_iter()
                        .map(|(id, _)| id)
                        .collect();
                    got.sort_by_key(|id| id.0);
                    let mut expected = expected.clone();
                    expected.sort_by_key(|id| id.0);
                    assert_eq!(got, expected, "prefix {text}");
                }
            }
        }
        for nonsense in ["xyz", "0g", &"0".repeat(65)] {
            assert!(
                store
                    .agreements_with_hex_prefix(nonsense, usize::MAX)
                    .unwrap()
                    .is_empty(),
                "{nonsense}"
            );
        }
    }
}
