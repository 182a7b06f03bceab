//! The loops that drive the withdrawal pipeline's rows on chain: sign
//! with `signer`, send and track with `chains`, and move each row through
//! [`crate::withdrawals`]' transitions. One module per chain.

pub mod bitcoin;
pub mod ethereum;
