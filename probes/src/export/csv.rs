//! CSV tables: a header row and rows of fields, written atomically, read back for checks.

use std::path::Path;

use crate::atomic::write_atomic;
use crate::error::{ProbeError, Result};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table { header: header.iter().map(|s| s.to_string()).collect(), rows: vec![] }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub fn to_csv(&self) -> String {
        let mut s = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            s.push_str(&row.iter().map(|f| quote(f)).collect::<Vec<_>>().join(","));
            s.push('\n');
        }
        s
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.to_csv().as_bytes())
    }

    /// Parses RFC 4180 CSV (quoted fields with doubled quotes, embedded newlines).
    pub fn parse(text: &str, path: &Path) -> Result<Table> {
        let mut rows: Vec<Vec<String>> = vec![];
        let mut row = vec![];
        let mut field = String::new();
        let mut chars = text.chars().peekable();
        let mut quoted = false;
        let mut any = false;
        while let Some(c) = chars.next() {
            any = true;
            if quoted {
                match c {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => quoted = false,
                    _ => field.push(c),
                }
                continue;
            }
            match c {
                '"' => quoted = true,
                ',' => row.push(std::mem::take(&mut field)),
                '\r' => {}
                '\n' => {
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                    any = false;
                }
                _ => field.push(c),
            }
        }
        if quoted {
            return Err(ProbeError::format(path, "unterminated quoted field"));
        }
        if any {
            row.push(field);
            rows.push(row);
        }
        let mut it = rows.into_iter();
        let header = it.next().ok_or_else(|| ProbeError::format(path, "empty CSV"))?;
        let rows: Vec<Vec<String>> = it.collect();
        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != header.len()) {
            return Err(ProbeError::format(path, format!("row {} has {} fields, the header {}", i + 2, r.len(), header.len())));
        }
        Ok(Table { header, rows })
    }

    pub fn read(path: &Path) -> Result<Table> {
        let text = std::fs::read_to_string(path).map_err(|e| ProbeError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Column index by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }
}

/// Formats a float for CSV: shortest representation that round-trips.
pub fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else if x.is_nan() {
        "nan".into()
    } else if x > 0.0 {
        "inf".into()
    } else {
        "-inf".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_round_trip_with_awkward_fields() {
        let mut t = Table::new(&["token", "text", "value"]);
        t.push(vec!["1".into(), "a, \"quoted\"\nline".into(), num(0.1)]);
        t.push(vec!["2".into(), "".into(), num(f64::INFINITY)]);
        let back = Table::parse(&t.to_csv(), Path::new("t.csv")).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.rows[0][2].parse::<f64>().unwrap(), 0.1);
        assert!(Table::parse("a,b\n1\n", Path::new("bad.csv")).unwrap_err().to_string().contains("bad.csv"));
    }
}
