//! Calls only tests, benchmarks and devnet helpers make; production builds
//! (without the `devnet` feature) do not have them.

use super::SolanaClient;
use crate::Result;

impl SolanaClient {
    /// The raw JSON-RPC answer to `getBlock` for `slot`: the very request
    /// [`Self::blocks`] makes for each block, for measuring the node alone.
    pub async fn block_body(&self, slot: u64) -> Result<bytes::Bytes> {
        self.get_block(slot).await
    }
}
