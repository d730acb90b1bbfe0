//! The network-namespace lab.
