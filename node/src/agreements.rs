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
//! - `N consumer nonce` -> id: the nonce replay check.

use mesh_protocol::PublicKey;
use mesh_protocol::Signed;
use mesh_protocol::codec::{self, DecodeError};
use mesh_protocol::contract::effective_state;
use mesh_protocol::contract::{
    Agreement, AgreementId, ContractRequest, ContractState, ContractTerms, Rejection, Revocation,
};
use serde::{Deserialize, Serialize};
use sled::Transactional;

use crate::store::{Store, StoreError};

/// Index key prefixes (see the module docs).
const BY_STATE: u8 = b'S';
const BY_CONSUMER: u8 = b'C';
const BY_NONCE: u8 = b'N';

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
    vec![
        (by_state, Vec::new()),
        (by_consumer, Vec::new()),
        (by_nonce, id.0.to_vec()),
    ]
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

/// Which side of the contract this node is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// We own the product.
    Provider,
    /// We asked for it.
    Consumer,
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
    /// Callers flush before acknowledging.
    pub fn put_agreement(
        &self,
        id: &AgreementId,
        record: &AgreementRecord,
    ) -> Result<(), StoreError> {
        self.write_agreement(id, Some(record))
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
        // The state the record had, from the transaction's last (successful) run.
        let previous = std::cell::Cell::new(None);
        let written = (self.agreements(), self.agreement_index())
            .transaction(|(agreements, index)| {
                let old = match &bytes {
                    Some(b) => agreements.insert(&id.0, b.as_slice())?,
                    None => agreements.remove(&id.0)?,
                };
                previous.set(None);
                if let Some(old) = old.and_then(|b| AgreementRecord::from_bytes(&b).ok()) {
                    previous.set(Some(old.state));
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
        if let (Ok(()), Some(record)) = (&written, record)
            && previous.get() != Some(record.state)
        {
            self.contract_decisions().record(record.role, record.state);
        }
        written
    }

    /// Builds the index when it is empty but records exist (a store written before it).
    pub fn rebuild_agreement_index_if_missing(&self) -> Result<usize, StoreError> {
        if !self.agreement_index().is_empty() || self.agreements().is_empty() {
            return Ok(0);
        }
        let records = self.agreement_records()?;
        for (id, record) in &records {
            for (key, value) in index_keys(id, record) {
                self.agreement_index().insert(key, value)?;
            }
        }
        self.bump_agreement_generation();
        Ok(records.len())
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
            let corrupt = |reason: String| StoreError::Corrupt {
                tree: "agreements",
                key: hex::encode(&key),
                reason,
            };
            let id: [u8; 32] = key
                .as_ref()
                .try_into()
                .map_err(|_| corrupt("key is not an agreement id".into()))?;
            let record = AgreementRecord::from_bytes(&value).map_err(|e| corrupt(e.to_string()))?;
            out.push((AgreementId(id), record));
        }
        Ok(out)
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

    /// Every contract record with its id.
    pub fn agreement_records(&self) -> Result<Vec<(AgreementId, AgreementRecord)>, StoreError> {
        let mut out = Vec::new();
        for item in self.agreements().iter() {
            let (key, value) = item?;
            let id: [u8; 32] = key.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                tree: "agreements",
                key: hex::encode(&key),
                reason: "key is not an agreement id".into(),
            })?;
            let record = AgreementRecord::from_bytes(&value).map_err(|e| StoreError::Corrupt {
                tree: "agreements",
                key: hex::encode(&key),
                reason: e.to_string(),
            })?;
            out.push((AgreementId(id), record));
        }
        Ok(out)
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
