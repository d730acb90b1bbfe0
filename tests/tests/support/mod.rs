pub mod farm;
pub mod flood;
pub mod frames;
pub mod harness;
pub mod predict;
pub mod raw;
pub mod sessions;
pub mod stream;
