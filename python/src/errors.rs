//! RouteLab's errors as Python exceptions: one hierarchy under `routelab.Error`, with the
//! message the CLI prints for the same failure (its context first, as `context: cause`).

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use routelab_model::ModelError as CoreError;
use routelab_probes::ProbeError;

pyo3::create_exception!(routelab, Error, PyException, "Base class of every error RouteLab raises.");
pyo3::create_exception!(
    routelab,
    FileError,
    Error,
    "A file is missing, unreadable or malformed (model weights, config.json, tokenizer, trace, CSV); the message names it."
);
pyo3::create_exception!(
    routelab,
    ModelError,
    Error,
    "The model cannot be used as asked: unknown architecture, missing or misshapen tensor, a source that names nothing loadable."
);
pyo3::create_exception!(routelab, OutOfMemory, Error, "The model would not fit in the memory available; the message lists the options.");
pyo3::create_exception!(
    routelab,
    InvalidArgument,
    Error,
    "An argument does not fit the model or cannot be parsed: a capture or intervention spec, a layer out of range, a prompt too long."
);
pyo3::create_exception!(routelab, Cancelled, Error, "The call was cancelled with `Session.cancel()` from another thread.");
pyo3::create_exception!(
    routelab,
    DeviceError,
    Error,
    "A tensor operation failed on the device: a RouteLab bug or a device problem, not bad input."
);

/// The Python exception for `e`, its message `context: e` when there is a context (as the CLI's
/// `anyhow` context prints it).
pub fn to_py(e: impl Into<ProbeError>, context: Option<&str>) -> PyErr {
    let e = e.into();
    let message = match context {
        Some(c) => format!("{c}: {e}"),
        None => e.to_string(),
    };
    let err = match &e {
        ProbeError::Io { .. } | ProbeError::Format { .. } => FileError::new_err(message),
        ProbeError::Invalid(_) => InvalidArgument::new_err(message),
        ProbeError::Model(m) => match m {
            CoreError::Io { .. } | CoreError::Config { .. } | CoreError::Weights { .. } | CoreError::Tokenizer { .. } => {
                FileError::new_err(message)
            }
            CoreError::UnknownArchitecture { .. }
            | CoreError::MissingTensor { .. }
            | CoreError::TensorShape { .. }
            | CoreError::Source(_) => ModelError::new_err(message),
            CoreError::Memory { .. } => OutOfMemory::new_err(message),
            CoreError::ContextOverflow { .. } | CoreError::Invalid(_) => InvalidArgument::new_err(message),
            CoreError::Cancelled => Cancelled::new_err(message),
            CoreError::Candle(_) => DeviceError::new_err(message),
        },
    };
    // What to do about it, as the CLI's `hint:` line says it (None where the message says it).
    Python::attach(|py| {
        let _ = err.value(py).setattr("hint", e.next_step());
    });
    err
}

/// An argument that does not parse (the parsers' own message, as the CLI prints it).
pub fn invalid(message: impl Into<String>) -> PyErr {
    InvalidArgument::new_err(message.into())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("FileError", py.get_type::<FileError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("OutOfMemory", py.get_type::<OutOfMemory>())?;
    m.add("InvalidArgument", py.get_type::<InvalidArgument>())?;
    m.add("Cancelled", py.get_type::<Cancelled>())?;
    m.add("DeviceError", py.get_type::<DeviceError>())?;
    Ok(())
}
