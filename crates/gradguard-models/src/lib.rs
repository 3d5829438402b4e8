//! # gradguard-models: dfdx models and training for gradguard
//!
//! (crate doc to be written by the models owner)

pub mod recurrent;
