# Shared settings for the devnet and test scripts. Sourced, not run.
# Pinned tool versions live here and only here.

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${COFFER_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/coffer}"
DEVNET_DIR="${COFFER_DEVNET_DIR:-$REPO_ROOT/.devnet}"
export COFFER_TOOLS_DIR="$TOOLS_DIR"

BTCD_VERSION="v0.24.2"
GRPCURL_VERSION="v1.9.3"
ANVIL_VERSION="1.7.1"
SOLC_VERSION="0.8.30"
AGAVE_VERSION="3.0.14"
KAFKA_VERSION="3.9.1"

# Devnet ports, fixed so docs, defaults and dashboards agree.
PG_PORT=55432
BTCD_RPC_PORT=18334
BTCD_P2P_PORT=18444
ANVIL_PORT=8545
SOLANA_RPC_PORT=8899
SOLANA_FAUCET_PORT=9900
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093
PROMETHEUS_PORT=9090
COFFER_METRICS_PORT=9464
COFFER_GRPC_PORT=50051

BTCD_RPC_USER="coffer"
BTCD_RPC_PASSWORD="coffer-devnet"
# Regtest P2WPKH of the public test key 0x11…11 (chains::devnet::Btcd::mining_key).
BTCD_MINING_ADDRESS="bcrt1ql3e9pgs3mmwuwrh95fecme0s0qtn2880hlwwpw"

# Cargo: one target directory outside the work tree, reused across clones and
# runs; mold links when it is installed.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$TOOLS_DIR/target}"
if command -v mold >/dev/null 2>&1; then
  export RUSTFLAGS="${RUSTFLAGS:--C link-arg=-fuse-ld=mold}"
fi
export PATH="$TOOLS_DIR/bin:$HOME/.cargo/bin:/usr/local/go/bin:$PATH"

log() { printf '\033[1;34m[%s]\033[0m %s\n' "$(basename "$0")" "$*" >&2; }
die() { printf '\033[1;31m[%s] error:\033[0m %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
