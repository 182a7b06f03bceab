//! Integration tests of the `coffer` daemon.
