//! `routelab.Figure`: one view of RouteLab (a table and the plot drawn from it), as `routelab
//! export` and the GUI's export buttons write it.

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use routelab_probes::export::csv::Table;
use routelab_probes::export::views::View;

use crate::errors::to_py;

#[pyclass(frozen, module = "routelab._routelab")]
pub struct Figure {
    view: View,
}

impl Figure {
    pub fn new(view: View) -> Self {
        Figure { view }
    }
}

/// A table alone (results that have no plot), with the same accessors as a figure's table.
#[pyclass(frozen, module = "routelab._routelab")]
pub struct TableData {
    table: Table,
}

impl TableData {
    pub fn new(table: Table) -> Self {
        TableData { table }
    }
}

#[pymethods]
impl TableData {
    #[getter]
    fn header(&self) -> Vec<String> {
        self.table.header.clone()
    }

    #[getter]
    fn rows(&self) -> Vec<Vec<String>> {
        self.table.rows.clone()
    }

    fn csv(&self) -> String {
        self.table.to_csv()
    }

    fn save(&self, path: std::path::PathBuf) -> PyResult<()> {
        self.table.write(&path).map_err(|e| to_py(e, Some(&format!("writing {}", path.display()))))
    }
}

#[pymethods]
impl Figure {
    #[getter]
    fn title(&self) -> String {
        self.view.title().to_string()
    }

    /// The table's column names.
    #[getter]
    fn header(&self) -> Vec<String> {
        self.view.table().header.clone()
    }

    /// The table's rows, as the CSV's fields.
    #[getter]
    fn rows(&self) -> Vec<Vec<String>> {
        self.view.table().rows.clone()
    }

    fn csv(&self) -> String {
        self.view.table().to_csv()
    }

    fn png<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = py.detach(|| self.view.png()).map_err(|e| to_py(e, None))?;
        Ok(PyBytes::new(py, &bytes))
    }

    fn svg(&self, py: Python<'_>) -> PyResult<String> {
        py.detach(|| self.view.svg()).map_err(|e| to_py(e, None))
    }

    /// Writes the plot (.png, .svg) or the table (.csv), by the file's extension.
    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        py.detach(|| self.view.write(&path)).map_err(|e| to_py(e, Some(&format!("writing {}", path.display()))))
    }
}
