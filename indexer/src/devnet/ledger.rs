//! Balances for ledger tests, posted through the ledger's public API.

use uuid::Uuid;

use crate::ledger::{
    AccountPurpose, AccountRef, Amount, EntryKind, IdempotencyKey, Ledger, Leg, NewEntry,
};

/// An entry of `kind` moving `amount` of `asset` from the system account
/// `source` to `user`'s available balance, with empty metadata.
pub fn credit_entry(
    kind: EntryKind,
    source: AccountPurpose,
    user: Uuid,
    asset: &str,
    amount: u64,
    reference: impl Into<String>,
) -> NewEntry {
    NewEntry {
        kind,
        reference: reference.into(),
        metadata: serde_json::json!({}),
        legs: vec![
            Leg::decrease(AccountRef::system(asset, source), Amount::from_u64(amount)),
            Leg::increase(AccountRef::available(user, asset), Amount::from_u64(amount)),
        ],
    }
}

/// Credits `amount` to the user's available balance from the external world.
pub async fn fund(ledger: &Ledger, user: Uuid, asset: &str, amount: u64) {
    let reference = format!("fund:{user}:{asset}:{}", Uuid::new_v4());
    let entry = credit_entry(
        EntryKind::Adjustment,
        AccountPurpose::External,
        user,
        asset,
        amount,
        reference.clone(),
    );
    ledger
        .post(&IdempotencyKey::new("test", reference), &entry)
        .await
        .expect("fund");
}
