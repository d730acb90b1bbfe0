pub mod farm;
pub mod frames;
pub mod harness;
pub mod predict;
pub mod raw;
pub mod scratch_pins;
pub mod sessions;
pub mod stream;
