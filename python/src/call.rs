//! Long calls: the engine works with the GIL released, reports progress to a Python callable,
//! and stops at its next step on Ctrl-C (a kernel interrupt), when the callable raises, or when
//! `Session.cancel()` is called from another thread.

use std::sync::Mutex;

use pyo3::prelude::*;
use routelab_probes::jobs::Cancel;
use routelab_probes::ProbeError;

use crate::errors::{to_py, Cancelled};

/// What a step reports: `what` is the phase (`"generate"`, `"scan"`, `"downloading FILE"`, …),
/// `text` a generated token's text.
pub struct Report<'a> {
    pub what: &'a str,
    pub done: usize,
    pub total: usize,
    pub text: Option<&'a str>,
}

/// The cancel flags of a session's calls in progress, so `Session.cancel()` reaches each.
#[derive(Default)]
pub struct Calls(Mutex<Vec<Cancel>>);

impl Calls {
    pub fn cancel_all(&self) {
        for c in self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
            c.cancel();
        }
    }

    fn start(&self) -> Cancel {
        let c = Cancel::new();
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(c.clone());
        c
    }

    fn finish(&self, c: &Cancel) {
        let mut v = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Cancel flags share one `Arc`: the same flag is the one whose address matches.
        if let Some(i) = v.iter().position(|x| x.same(c)) {
            v.swap_remove(i);
        }
    }
}

/// Runs `work` with the GIL released. `progress` (a Python callable taking `what, done, total,
/// text`) is called at each step the work reports, with the GIL held; so are Python's signal
/// handlers, so Ctrl-C raises `KeyboardInterrupt` in the caller once the work has stopped at that
/// step. An error `work` returns becomes the `routelab` exception for it, `context` first.
pub fn detached<T: Send>(
    py: Python<'_>,
    calls: &Calls,
    progress: Option<&Bound<'_, PyAny>>,
    context: Option<&str>,
    work: impl FnOnce(&Cancel, &mut dyn FnMut(Report)) -> Result<T, ProbeError> + Send,
) -> PyResult<T> {
    let cancel = calls.start();
    let callback: Option<Py<PyAny>> = progress.map(|p| p.clone().unbind());
    let mut raised: Option<PyErr> = None;
    let result = py.detach(|| {
        let mut report = |r: Report| {
            if raised.is_some() {
                return;
            }
            Python::attach(|py| {
                let outcome = match &callback {
                    Some(cb) => cb.call1(py, (r.what, r.done, r.total, r.text)).map(|_| ()),
                    None => Ok(()),
                };
                if let Err(e) = outcome.and_then(|_| py.check_signals()) {
                    raised = Some(e);
                    cancel.cancel();
                }
            });
        };
        work(&cancel, &mut report)
    });
    calls.finish(&cancel);
    if let Some(e) = raised {
        return Err(e);
    }
    if cancel.is_cancelled() {
        return Err(Cancelled::new_err("cancelled"));
    }
    result.map_err(|e| to_py(e, context))
}
