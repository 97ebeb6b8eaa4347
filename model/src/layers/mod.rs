//! The building blocks of the decoder, each loaded from a checkpoint prefix.

pub mod attention;
pub mod attend;
pub mod linear;
pub mod mlp;
pub mod moe;
pub mod norm;
