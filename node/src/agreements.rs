//! Stored contracts: one record per agreement id in the `agreements` tree, on both sides.
//!
//! The record keeps the envelopes exactly as exchanged (request, co-signed agreement,
//! rejection, revocation) plus the state this node derived from them. The data plane reads
//! these records (and the `revocations` tree) to authorise and to find agreements.

use mesh_protocol::Signed;
use mesh_protocol::codec::{self, DecodeError};
use mesh_protocol::contract::effective_state;
use mesh_protocol::contract::{
    Agreement, AgreementId, ContractRequest, ContractState, ContractTerms, Rejection, Revocation,
};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// Largest stored record.
const MAX_RECORD: usize = 512 * 1024;

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
    /// Stores (or replaces) a contract record. Callers flush before acknowledging.
    pub fn put_agreement(
        &self,
        id: &AgreementId,
        record: &AgreementRecord,
    ) -> Result<(), StoreError> {
        self.agreements().insert(id.0, record.to_bytes())?;
        Ok(())
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
