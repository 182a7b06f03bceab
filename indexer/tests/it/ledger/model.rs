//! A proptest state machine: random sequences of ledger operations, run
//! against the real ledger and an in-memory model side by side. After every
//! step the balances match the model and every invariant holds.

use std::collections::HashMap;

use indexer::Error;
use indexer::ledger::{
    AccountPurpose, AccountRef, Amount, EntryKind, HoldStatus, IdempotencyKey, Ledger, Leg,
    NewEntry, PlaceHold, ReleaseHold, SettleHold,
};
use proptest::collection::vec;
use proptest::prelude::*;
use uuid::Uuid;

use crate::support::{Property, assert_invariants, transfer};

const USERS: u8 = 3;
const ASSETS: [&str; 2] = ["BTC", "USDC"];

#[derive(Clone, Debug)]
enum Op {
    Deposit {
        user: u8,
        asset: usize,
        amount: u64,
    },
    Transfer {
        from: u8,
        hop: u8,
        asset: usize,
        amount: u64,
    },
    PlaceHold {
        user: u8,
        asset: usize,
        amount: u64,
    },
    SettleHold {
        pick: usize,
        fee: u64,
    },
    ReleaseHold {
        pick: usize,
    },
    Replay {
        pick: usize,
    },
    ConflictingReplay {
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS;
    let asset = 0..ASSETS.len();
    prop_oneof![
        (user.clone(), asset.clone(), 1..1_000u64).prop_map(|(user, asset, amount)| Op::Deposit {
            user,
            asset,
            amount
        }),
        (user.clone(), 1..USERS, asset.clone(), 1..600u64).prop_map(
            |(from, hop, asset, amount)| Op::Transfer {
                from,
                hop,
                asset,
                amount
            }
        ),
        (user, asset, 1..600u64).prop_map(|(user, asset, amount)| Op::PlaceHold {
            user,
            asset,
            amount
        }),
        (any::<usize>(), 0..5u64).prop_map(|(pick, fee)| Op::SettleHold { pick, fee }),
        any::<usize>().prop_map(|pick| Op::ReleaseHold { pick }),
        any::<usize>().prop_map(|pick| Op::Replay { pick }),
        any::<usize>().prop_map(|pick| Op::ConflictingReplay { pick }),
    ]
}

/// A request that succeeded, kept to be replayed.
#[derive(Clone, Debug)]
enum Done {
    Post(IdempotencyKey, NewEntry, serde_json::Value),
    Hold(IdempotencyKey, PlaceHold, serde_json::Value),
    Settle(IdempotencyKey, SettleHold, serde_json::Value),
    Release(IdempotencyKey, ReleaseHold, serde_json::Value),
}

#[derive(Default)]
struct Model {
    /// (user, asset) -> (available, held)
    balances: HashMap<(u8, usize), (u64, u64)>,
    /// (hold id, user, asset, amount, still held)
    holds: Vec<(i64, u8, usize, u64, bool)>,
    done: Vec<Done>,
}

struct Case {
    ledger: Ledger,
    users: Vec<Uuid>,
    tag: Uuid,
    step: usize,
    model: Model,
}

fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("serializable")
}

impl Case {
    fn next_key(&mut self) -> (IdempotencyKey, String) {
        self.step += 1;
        let reference = format!("model-{}-{}", self.tag, self.step);
        (IdempotencyKey::new("model", reference.clone()), reference)
    }

    async fn apply(&mut self, op: &Op) {
        match *op {
            Op::Deposit {
                user,
                asset,
                amount,
            } => {
                let (key, reference) = self.next_key();
                let entry = NewEntry {
                    kind: EntryKind::DepositCredit,
                    reference,
                    metadata: serde_json::json!({}),
                    legs: vec![
                        Leg::decrease(
                            AccountRef::system(ASSETS[asset], AccountPurpose::Custody),
                            Amount::from_u64(amount),
                        ),
                        Leg::increase(
                            AccountRef::available(self.users[user as usize], ASSETS[asset]),
                            Amount::from_u64(amount),
                        ),
                    ],
                };
                let posted = self.ledger.post(&key, &entry).await.expect("deposit");
                self.model.balances.entry((user, asset)).or_default().0 += amount;
                self.model.done.push(Done::Post(key, entry, json(&posted)));
            }
            Op::Transfer {
                from,
                hop,
                asset,
                amount,
            } => {
                let to = (from + hop) % USERS;
                let (key, reference) = self.next_key();
                let entry = transfer(
                    self.users[from as usize],
                    self.users[to as usize],
                    ASSETS[asset],
                    amount,
                    &reference,
                );
                let available = self.model.balances.entry((from, asset)).or_default().0;
                match self.ledger.post(&key, &entry).await {
                    Ok(posted) => {
                        assert!(
                            available >= amount,
                            "transfer of {amount} from {available} succeeded"
                        );
                        self.model.balances.entry((from, asset)).or_default().0 -= amount;
                        self.model.balances.entry((to, asset)).or_default().0 += amount;
                        self.model.done.push(Done::Post(key, entry, json(&posted)));
                    }
                    Err(Error::InsufficientFunds) => {
                        assert!(available < amount, "refused {amount} of {available}")
                    }
                    Err(other) => panic!("transfer: {other}"),
                }
            }
            Op::PlaceHold {
                user,
                asset,
                amount,
            } => {
                let (key, reference) = self.next_key();
                let request = PlaceHold {
                    owner: self.users[user as usize],
                    asset: ASSETS[asset].into(),
                    amount: Amount::from_u64(amount),
                    kind: EntryKind::WithdrawalHold,
                    reference,
                    metadata: serde_json::json!({}),
                };
                let available = self.model.balances.entry((user, asset)).or_default().0;
                match self.ledger.place_hold(&key, &request).await {
                    Ok(hold) => {
                        assert!(available >= amount);
                        let balance = self.model.balances.entry((user, asset)).or_default();
                        balance.0 -= amount;
                        balance.1 += amount;
                        self.model.holds.push((hold.id, user, asset, amount, true));
                        self.model.done.push(Done::Hold(key, request, json(&hold)));
                    }
                    Err(Error::InsufficientFunds) => assert!(available < amount),
                    Err(other) => panic!("hold: {other}"),
                }
            }
            Op::SettleHold { pick, fee } => {
                let Some(index) = pick_index(pick, self.model.holds.len()) else {
                    return;
                };
                let (id, user, asset, amount, open) = self.model.holds[index];
                let fee = fee.min(amount.saturating_sub(1));
                let (key, reference) = self.next_key();
                let mut destinations = vec![(
                    AccountRef::system(ASSETS[asset], AccountPurpose::External),
                    Amount::from_u64(amount - fee),
                )];
                if fee > 0 {
                    destinations.push((
                        AccountRef::system(ASSETS[asset], AccountPurpose::Fees),
                        Amount::from_u64(fee),
                    ));
                }
                let request = SettleHold {
                    hold_id: id,
                    destinations,
                    kind: EntryKind::WithdrawalSettle,
                    reference,
                    metadata: serde_json::json!({}),
                };
                match self.ledger.settle_hold(&key, &request).await {
                    Ok(hold) => {
                        assert!(open, "settled a finished hold");
                        assert_eq!(hold.status, HoldStatus::Settled);
                        self.model.balances.entry((user, asset)).or_default().1 -= amount;
                        self.model.holds[index].4 = false;
                        self.model
                            .done
                            .push(Done::Settle(key, request, json(&hold)));
                    }
                    Err(Error::HoldFinalized { .. }) => {
                        assert!(!open, "refused to settle an open hold")
                    }
                    Err(other) => panic!("settle: {other}"),
                }
            }
            Op::ReleaseHold { pick } => {
                let Some(index) = pick_index(pick, self.model.holds.len()) else {
                    return;
                };
                let (id, user, asset, amount, open) = self.model.holds[index];
                let (key, reference) = self.next_key();
                let request = ReleaseHold {
                    hold_id: id,
                    kind: EntryKind::WithdrawalRelease,
                    reference,
                    metadata: serde_json::json!({}),
                };
                match self.ledger.release_hold(&key, &request).await {
                    Ok(hold) => {
                        assert!(open);
                        assert_eq!(hold.status, HoldStatus::Released);
                        let balance = self.model.balances.entry((user, asset)).or_default();
                        balance.0 += amount;
                        balance.1 -= amount;
                        self.model.holds[index].4 = false;
                        self.model
                            .done
                            .push(Done::Release(key, request, json(&hold)));
                    }
                    Err(Error::HoldFinalized { .. }) => assert!(!open),
                    Err(other) => panic!("release: {other}"),
                }
            }
            Op::Replay { pick } => {
                let Some(index) = pick_index(pick, self.model.done.len()) else {
                    return;
                };
                let replayed = match self.model.done[index].clone() {
                    Done::Post(key, entry, original) => (
                        json(&self.ledger.post(&key, &entry).await.expect("replay")),
                        original,
                    ),
                    Done::Hold(key, request, original) => (
                        json(
                            &self
                                .ledger
                                .place_hold(&key, &request)
                                .await
                                .expect("replay"),
                        ),
                        original,
                    ),
                    Done::Settle(key, request, original) => (
                        json(
                            &self
                                .ledger
                                .settle_hold(&key, &request)
                                .await
                                .expect("replay"),
                        ),
                        original,
                    ),
                    Done::Release(key, request, original) => (
                        json(
                            &self
                                .ledger
                                .release_hold(&key, &request)
                                .await
                                .expect("replay"),
                        ),
                        original,
                    ),
                };
                assert_eq!(
                    replayed.0, replayed.1,
                    "a replay returns the original response"
                );
            }
            Op::ConflictingReplay { pick } => {
                let Some(index) = pick_index(pick, self.model.done.len()) else {
                    return;
                };
                let outcome = match self.model.done[index].clone() {
                    Done::Post(key, mut entry, _) => {
                        entry.metadata = serde_json::json!({ "tampered": true });
                        self.ledger.post(&key, &entry).await.map(|_| ())
                    }
                    Done::Hold(key, mut request, _) => {
                        request.amount = request
                            .amount
                            .checked_add(Amount::from_u64(1))
                            .expect("small");
                        self.ledger.place_hold(&key, &request).await.map(|_| ())
                    }
                    Done::Settle(key, mut request, _) => {
                        request.reference.push('x');
                        self.ledger.settle_hold(&key, &request).await.map(|_| ())
                    }
                    Done::Release(key, mut request, _) => {
                        request.metadata = serde_json::json!({ "tampered": true });
                        self.ledger.release_hold(&key, &request).await.map(|_| ())
                    }
                };
                assert!(
                    matches!(outcome, Err(Error::IdempotencyConflict { .. })),
                    "{outcome:?}"
                );
            }
        }
    }

    async fn check(&self) {
        for (index, user) in self.users.iter().enumerate() {
            let balances = self.ledger.balances(*user).await.expect("balances");
            for (asset_index, asset) in ASSETS.iter().enumerate() {
                let (available, held) = self
                    .model
                    .balances
                    .get(&(index as u8, asset_index))
                    .copied()
                    .unwrap_or_default();
                let actual = balances.iter().find(|b| b.asset == *asset);
                let (actual_available, actual_held) =
                    actual.map_or((Amount::ZERO, Amount::ZERO), |b| (b.available, b.held));
                assert_eq!(
                    actual_available,
                    Amount::from_u64(available),
                    "user {index} {asset} available"
                );
                assert_eq!(
                    actual_held,
                    Amount::from_u64(held),
                    "user {index} {asset} held"
                );
            }
        }
        assert_invariants(self.ledger.pool()).await;
    }
}

fn pick_index(pick: usize, len: usize) -> Option<usize> {
    (len > 0).then(|| pick % len)
}

#[test]
fn random_operation_sequences_match_the_model() {
    let Property {
        runtime,
        db: _db,
        ledger,
        mut runner,
    } = Property::new(24);
    let result = runner.run(&vec(op(), 1..48), |ops| {
        runtime.block_on(async {
            let mut case = Case {
                ledger: ledger.clone(),
                users: (0..USERS).map(|_| Uuid::new_v4()).collect(),
                tag: Uuid::new_v4(),
                step: 0,
                model: Model::default(),
            };
            for op in &ops {
                case.apply(op).await;
                case.check().await;
            }
        });
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
