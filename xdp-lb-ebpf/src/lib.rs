// The agent build-depends on this crate so cargo rebuilds it when the data plane changes;
// the program itself is the `xdp-lb` binary target (src/main.rs), built by aya-build.
#![no_std]
