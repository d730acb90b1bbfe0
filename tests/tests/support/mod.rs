pub mod frames;
pub mod harness;
