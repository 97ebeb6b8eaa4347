//! The building blocks of the decoder, each loaded from a checkpoint prefix.

pub mod attend;
pub mod attention;
pub mod blocks;
pub mod context;
pub mod embedding;
pub mod linear;
pub mod mlp;
pub mod moe;
pub mod norm;
