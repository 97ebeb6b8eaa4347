//! Analyses that run the model: needle trials, the retrieval-head scan, the experts selected where
//! heads copy, ablations, corpus specialization; and the run diff over two traces.

pub mod ablation;
pub mod attribution;
pub mod corpus;
pub mod diff;
pub mod fidelity;
pub mod heads_experts;
pub mod needle;
pub mod patching;
pub mod retrieval;
