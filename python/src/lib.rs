//! The `routelab` Python package's native module, `routelab._routelab`: sessions, traces,
//! figures and the analyses over RouteLab's engine. The Python package (`python/routelab/`)
//! wraps it with numpy accessors, DataFrames, progress bars and inline figures.
// Data from outside the process (model files, notebooks, traces, specs, the network) is never
// unwrapped: a failure is an error naming the file. Tests may (clippy.toml); the few internal
// invariants that expect carry an `allow` with the reason.
#![deny(clippy::unwrap_used, clippy::expect_used)]

use pyo3::prelude::*;

mod analyses;
mod call;
mod errors;
mod figure;
mod session;
mod trace;

#[pymodule]
fn _routelab(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    m.add_class::<session::Session>()?;
    m.add_class::<trace::Trace>()?;
    m.add_class::<figure::Figure>()?;
    m.add_class::<figure::TableData>()?;
    m.add_function(wrap_pyfunction!(session::load, m)?)?;
    m.add_function(wrap_pyfunction!(trace::open_trace, m)?)?;
    m.add_function(wrap_pyfunction!(trace::quantities, m)?)?;
    m.add_function(wrap_pyfunction!(analyses::scan_retrieval, m)?)?;
    m.add_function(wrap_pyfunction!(analyses::ablation, m)?)?;
    m.add_function(wrap_pyfunction!(analyses::heads_experts, m)?)?;
    m.add_function(wrap_pyfunction!(analyses::specialization, m)?)?;
    m.add_function(wrap_pyfunction!(analyses::diff, m)?)?;
    m.add_function(wrap_pyfunction!(analyses::compare, m)?)?;
    m.add_function(wrap_pyfunction!(analyses::routing_fidelity, m)?)?;
    m.add_function(wrap_pyfunction!(analyses::patch, m)?)?;
    m.add_function(wrap_pyfunction!(analyses::attribute, m)?)?;
    Ok(())
}
