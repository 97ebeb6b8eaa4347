// Platforms whose linkers refuse undefined symbols in a shared library (macOS) are told they
// come from the interpreter at load time.
fn main() {
    pyo3_build_config::add_extension_module_link_args();
}
