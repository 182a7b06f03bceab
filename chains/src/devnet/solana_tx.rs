//! Building, signing and sending Solana transactions for tests, with just
//! what they need: legacy messages, ed25519 keys, and the System, SPL Token
//! and Associated Token Account instructions, encoded by hand from their
//! published layouts.

use std::str::FromStr;
use std::time::{Duration, Instant};

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use solana_commitment_config::CommitmentConfig;
use solana_pubkey::Pubkey;
use solana_rpc_client_api::request::RpcRequest;

use super::{DevnetError, Result, SolanaValidator};

pub const SYSTEM_PROGRAM: &str = "11111111111111111111111111111111";
pub const TOKEN_PROGRAM: &str = crate::solana::TOKEN_PROGRAM;
pub const ASSOCIATED_TOKEN_PROGRAM: &str = crate::solana::ASSOCIATED_TOKEN_PROGRAM;
/// An SPL mint account's size.
pub const MINT_SPACE: u64 = 82;

fn key(text: &str) -> Pubkey {
    Pubkey::from_str(text).expect("constant program id")
}

/// An ed25519 key pair.
#[derive(Debug)]
pub struct Keypair(SigningKey);

impl Keypair {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    pub fn pubkey(&self) -> Pubkey {
        Pubkey::new_from_array(self.0.verifying_key().to_bytes())
    }
}

#[derive(Clone, Debug)]
pub struct AccountMeta {
    pub pubkey: Pubkey,
    pub signer: bool,
    pub writable: bool,
}

impl AccountMeta {
    fn new(pubkey: Pubkey, signer: bool, writable: bool) -> Self {
        Self {
            pubkey,
            signer,
            writable,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Instruction {
    pub program: Pubkey,
    pub accounts: Vec<AccountMeta>,
    pub data: Vec<u8>,
}

/// How an instruction uses one of its accounts.
#[derive(Clone, Copy)]
enum Role {
    /// Signs and is written: a payer, or a new account.
    Payer,
    /// Signs, is only read: an owner or authority.
    Signer,
    Writable,
    Readonly,
}

/// An instruction of `program` (base58) on `accounts`, in order, with the
/// concatenation of `data` as its data.
fn instruction(program: &str, accounts: &[(&Pubkey, Role)], data: &[&[u8]]) -> Instruction {
    Instruction {
        program: key(program),
        accounts: accounts
            .iter()
            .map(|&(pubkey, role)| {
                let (signer, writable) = match role {
                    Role::Payer => (true, true),
                    Role::Signer => (true, false),
                    Role::Writable => (false, true),
                    Role::Readonly => (false, false),
                };
                AccountMeta::new(*pubkey, signer, writable)
            })
            .collect(),
        data: data.concat(),
    }
}

/// System `Transfer` (index 2).
pub fn system_transfer(from: &Pubkey, to: &Pubkey, lamports: u64) -> Instruction {
    instruction(
        SYSTEM_PROGRAM,
        &[(from, Role::Payer), (to, Role::Writable)],
        &[&2u32.to_le_bytes(), &lamports.to_le_bytes()],
    )
}

/// System `CreateAccount` (index 0).
pub fn create_account(
    payer: &Pubkey,
    new: &Pubkey,
    lamports: u64,
    space: u64,
    owner: &Pubkey,
) -> Instruction {
    instruction(
        SYSTEM_PROGRAM,
        &[(payer, Role::Payer), (new, Role::Payer)],
        &[
            &0u32.to_le_bytes(),
            &lamports.to_le_bytes(),
            &space.to_le_bytes(),
            owner.as_ref(),
        ],
    )
}

/// SPL Token `InitializeMint2` (20) without a freeze authority.
pub fn initialize_mint(mint: &Pubkey, decimals: u8, authority: &Pubkey) -> Instruction {
    instruction(
        TOKEN_PROGRAM,
        &[(mint, Role::Writable)],
        &[&[20, decimals], authority.as_ref(), &[0]],
    )
}

/// An SPL token account's size.
pub const TOKEN_ACCOUNT_SPACE: u64 = 165;

/// SPL Token `InitializeAccount3` (18): a plain (not associated) token
/// account of `mint` owned by `owner`.
pub fn initialize_account(account: &Pubkey, mint: &Pubkey, owner: &Pubkey) -> Instruction {
    instruction(
        TOKEN_PROGRAM,
        &[(account, Role::Writable), (mint, Role::Readonly)],
        &[&[18], owner.as_ref()],
    )
}

/// System `CreateAccount` of `space` bytes for the SPL Token program, paid
/// by `payer` with `lamports`, followed by `init` on the new account.
fn token_program_account(
    payer: &Pubkey,
    new: &Pubkey,
    lamports: u64,
    space: u64,
    init: Instruction,
) -> [Instruction; 2] {
    let program = key(TOKEN_PROGRAM);
    [create_account(payer, new, lamports, space, &program), init]
}

/// A plain token account `account` of `mint` owned by `owner`, created
/// and initialized; `lamports` make it rent-exempt
/// ([`TOKEN_ACCOUNT_SPACE`] bytes).
pub fn create_token_account(
    payer: &Pubkey,
    account: &Pubkey,
    mint: &Pubkey,
    owner: &Pubkey,
    lamports: u64,
) -> [Instruction; 2] {
    let init = initialize_account(account, mint, owner);
    token_program_account(payer, account, lamports, TOKEN_ACCOUNT_SPACE, init)
}

/// SPL Token `SetAuthority` (6) of type `AccountOwner` (2): hands the token
/// account to `new_owner`.
pub fn set_account_owner(account: &Pubkey, owner: &Pubkey, new_owner: &Pubkey) -> Instruction {
    instruction(
        TOKEN_PROGRAM,
        &[(account, Role::Writable), (owner, Role::Signer)],
        &[&[6, 2, 1], new_owner.as_ref()],
    )
}

/// SPL Token `CloseAccount` (9): an empty token account's lamports go to
/// `destination`.
pub fn close_account(account: &Pubkey, destination: &Pubkey, owner: &Pubkey) -> Instruction {
    instruction(
        TOKEN_PROGRAM,
        &[
            (account, Role::Writable),
            (destination, Role::Writable),
            (owner, Role::Signer),
        ],
        &[&[9]],
    )
}

/// SPL Token `MintTo` (7).
pub fn mint_to(mint: &Pubkey, to: &Pubkey, authority: &Pubkey, amount: u64) -> Instruction {
    instruction(
        TOKEN_PROGRAM,
        &[
            (mint, Role::Writable),
            (to, Role::Writable),
            (authority, Role::Signer),
        ],
        &[&[7], &amount.to_le_bytes()],
    )
}

/// SPL Token `TransferChecked` (12).
pub fn transfer_checked(
    source: &Pubkey,
    mint: &Pubkey,
    destination: &Pubkey,
    owner: &Pubkey,
    amount: u64,
    decimals: u8,
) -> Instruction {
    instruction(
        TOKEN_PROGRAM,
        &[
            (source, Role::Writable),
            (mint, Role::Readonly),
            (destination, Role::Writable),
            (owner, Role::Signer),
        ],
        &[&[12], &amount.to_le_bytes(), &[decimals]],
    )
}

/// Associated Token Account `CreateIdempotent` (1).
pub fn create_associated_token_account(
    payer: &Pubkey,
    owner: &Pubkey,
    mint: &Pubkey,
) -> Instruction {
    instruction(
        ASSOCIATED_TOKEN_PROGRAM,
        &[
            (payer, Role::Payer),
            (&associated_token_address(owner, mint), Role::Writable),
            (owner, Role::Readonly),
            (mint, Role::Readonly),
            (&key(SYSTEM_PROGRAM), Role::Readonly),
            (&key(TOKEN_PROGRAM), Role::Readonly),
        ],
        &[&[1]],
    )
}

/// The associated token account of `owner` for `mint`: the program address
/// of (owner, token program, mint) under the ATA program.
pub fn associated_token_address(owner: &Pubkey, mint: &Pubkey) -> Pubkey {
    let program = key(ASSOCIATED_TOKEN_PROGRAM);
    for bump in (0..=255u8).rev() {
        let mut hasher = Sha256::new();
        hasher.update(owner.as_ref());
        hasher.update(key(TOKEN_PROGRAM).as_ref());
        hasher.update(mint.as_ref());
        hasher.update([bump]);
        hasher.update(program.as_ref());
        hasher.update(b"ProgramDerivedAddress");
        let candidate: [u8; 32] = hasher.finalize().into();
        let on_curve = curve25519_dalek::edwards::CompressedEdwardsY(candidate)
            .decompress()
            .is_some();
        if !on_curve {
            return Pubkey::new_from_array(candidate);
        }
    }
    unreachable!("a bump below 256 always yields an off-curve address")
}

fn compact_u16(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let mut byte = (value & 0x7f) as u8;
        value >>= 7;
        if value != 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            break;
        }
    }
}

/// A signed legacy transaction, serialized.
fn compile(
    instructions: &[Instruction],
    signers: &[&Keypair],
    blockhash: [u8; 32],
) -> Result<Vec<u8>> {
    let payer = signers
        .first()
        .ok_or_else(|| DevnetError::Other("a transaction needs a payer".into()))?
        .pubkey();
    // Accounts with merged flags, payer first.
    let mut accounts: Vec<AccountMeta> = vec![AccountMeta::new(payer, true, true)];
    let mut add = |meta: AccountMeta| match accounts.iter_mut().find(|a| a.pubkey == meta.pubkey) {
        Some(existing) => {
            existing.signer |= meta.signer;
            existing.writable |= meta.writable;
        }
        None => accounts.push(meta),
    };
    for ix in instructions {
        for meta in &ix.accounts {
            add(meta.clone());
        }
        add(AccountMeta::new(ix.program, false, false));
    }
    // Stable: signers writable, signers read-only, writable, read-only.
    accounts.sort_by_key(|a| match (a.signer, a.writable) {
        (true, true) => 0,
        (true, false) => 1,
        (false, true) => 2,
        (false, false) => 3,
    });
    let required = accounts.iter().filter(|a| a.signer).count();
    let readonly_signed = accounts.iter().filter(|a| a.signer && !a.writable).count();
    let readonly_unsigned = accounts.iter().filter(|a| !a.signer && !a.writable).count();
    let index = |key: &Pubkey| {
        accounts
            .iter()
            .position(|a| a.pubkey == *key)
            .map(|i| i as u8)
            .ok_or_else(|| DevnetError::Other(format!("account {key} missing")))
    };
    let mut message = vec![
        required as u8,
        readonly_signed as u8,
        readonly_unsigned as u8,
    ];
    compact_u16(&mut message, accounts.len());
    for account in &accounts {
        message.extend_from_slice(account.pubkey.as_ref());
    }
    message.extend_from_slice(&blockhash);
    compact_u16(&mut message, instructions.len());
    for ix in instructions {
        message.push(index(&ix.program)?);
        compact_u16(&mut message, ix.accounts.len());
        for meta in &ix.accounts {
            message.push(index(&meta.pubkey)?);
        }
        compact_u16(&mut message, ix.data.len());
        message.extend_from_slice(&ix.data);
    }
    let mut tx = Vec::new();
    compact_u16(&mut tx, required);
    for account in accounts.iter().take(required) {
        let signer = signers
            .iter()
            .find(|s| s.pubkey() == account.pubkey)
            .ok_or_else(|| DevnetError::Other(format!("no key for signer {}", account.pubkey)))?;
        tx.extend_from_slice(&signer.0.sign(&message).to_bytes());
    }
    tx.extend_from_slice(&message);
    Ok(tx)
}

/// `call`, tried again after a transport failure: a validator busy on a
/// loaded test machine now and then drops a connection.
async fn retried<T, F, Fut>(method: &'static str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, solana_rpc_client_api::client_error::Error>>,
{
    let mut tries = 0;
    loop {
        match call().await.map_err(|e| crate::solana::classify(method, e)) {
            Err(crate::Error::Transport { .. }) if tries < 4 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(250 * tries)).await;
            }
            other => return other.map_err(Into::into),
        }
    }
}

impl SolanaValidator {
    /// Signs and sends `instructions` (the first signer pays) without a
    /// preflight check, so a transaction that fails on chain still lands,
    /// and waits until it is confirmed. Returns its signature and whether
    /// it succeeded.
    pub async fn send(
        &self,
        instructions: &[Instruction],
        signers: &[&Keypair],
    ) -> Result<(String, bool)> {
        let rpc = self.client().rpc();
        let blockhash = retried("getLatestBlockhash", || {
            rpc.get_latest_blockhash_with_commitment(CommitmentConfig::confirmed())
        })
        .await?
        .0;
        let tx = compile(instructions, signers, blockhash.to_bytes())?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(tx);
        // The same signed bytes each time: a resend cannot pay twice.
        let signature: String = retried("sendTransaction", || {
            rpc.send(
                RpcRequest::SendTransaction,
                json!([encoded, {"encoding": "base64", "skipPreflight": true}]),
            )
        })
        .await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let statuses: Value = retried("getSignatureStatuses", || {
                rpc.send(RpcRequest::GetSignatureStatuses, json!([[signature]]))
            })
            .await?;
            let status = &statuses["value"][0];
            if matches!(
                status["confirmationStatus"].as_str(),
                Some("confirmed" | "finalized")
            ) {
                return Ok((signature, status["err"].is_null()));
            }
            if Instant::now() > deadline {
                return Err(DevnetError::Other(format!(
                    "{signature} not confirmed within 60 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Lamports for a rent-exempt account of `space` bytes.
    pub async fn rent_exempt(&self, space: u64) -> Result<u64> {
        self.client()
            .rpc()
            .get_minimum_balance_for_rent_exemption(space as usize)
            .await
            .map_err(|e| crate::solana::classify("getMinimumBalanceForRentExemption", e).into())
    }

    /// Creates an SPL mint with `decimals`, `authority` minting.
    pub async fn create_mint(&self, payer: &Keypair, mint: &Keypair, decimals: u8) -> Result<()> {
        let lamports = self.rent_exempt(MINT_SPACE).await?;
        let init = initialize_mint(&mint.pubkey(), decimals, &payer.pubkey());
        let instructions =
            token_program_account(&payer.pubkey(), &mint.pubkey(), lamports, MINT_SPACE, init);
        let (_, ok) = self.send(&instructions, &[payer, mint]).await?;
        if ok {
            Ok(())
        } else {
            Err(DevnetError::Other("creating the mint failed".into()))
        }
    }
}
