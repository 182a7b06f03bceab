// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// A minimal ERC-20 for the deposit tests and benchmark. Anyone may mint.
/// `transferThenRevert` emits a `Transfer` and then reverts, so tests can
/// send a failed transaction whose trace carries the event.
contract TestToken {
    uint8 public immutable decimals;
    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;

    event Transfer(address indexed from, address indexed to, uint256 value);

    constructor(uint8 decimals_) {
        decimals = decimals_;
    }

    function mint(address to, uint256 value) external {
        totalSupply += value;
        balanceOf[to] += value;
        emit Transfer(address(0), to, value);
    }

    function transfer(address to, uint256 value) public returns (bool) {
        balanceOf[msg.sender] -= value;
        balanceOf[to] += value;
        emit Transfer(msg.sender, to, value);
        return true;
    }

    /// One `Transfer` per recipient, so a block can carry many deposits.
    function transferEach(address[] calldata recipients, uint256 value) external {
        for (uint256 i = 0; i < recipients.length; i++) {
            transfer(recipients[i], value);
        }
    }

    function transferThenRevert(address to, uint256 value) external {
        transfer(to, value);
        revert("reverted on purpose");
    }
}
