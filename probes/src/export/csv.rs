//! CSV tables: a header row and rows of fields, written atomically, read back for checks.

use std::path::Path;

use crate::atomic::write_atomic;
use crate::error::{ProbeError, Result};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table { header: header.iter().map(|s| s.to_string()).collect(), rows: vec![] }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// RFC 4180 with `\n` line ends; a field is quoted only when it holds a comma, a quote or
    /// a line break.
    pub fn to_csv(&self) -> String {
        // Flexible: a ragged table is written as it is (and refused when read back).
        let mut w = ::csv::WriterBuilder::new().flexible(true).from_writer(vec![]);
        for row in std::iter::once(&self.header).chain(&self.rows) {
            // Writing to memory cannot fail.
            let _ = w.write_record(row);
        }
        let bytes = w.into_inner().unwrap_or_default();
        // Fields are Strings, so the bytes are UTF-8.
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.to_csv().as_bytes())
    }

    /// Parses RFC 4180 CSV (quoted fields with doubled quotes, embedded newlines); every row
    /// must have as many fields as the header.
    pub fn parse(text: &str, path: &Path) -> Result<Table> {
        // The reader ends a quoted field at the end of input without complaint; a well-formed
        // file has an even number of quotes (each field's pair plus doubled ones).
        if text.matches('"').count() % 2 == 1 {
            return Err(ProbeError::format(path, "unterminated quoted field"));
        }
        let mut reader = ::csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
        let mut records = reader
            .records()
            .map(|r| r.map(|r| r.iter().map(str::to_string).collect::<Vec<String>>()).map_err(|e| ProbeError::format(path, e.to_string())));
        let header = records.next().transpose()?.ok_or_else(|| ProbeError::format(path, "empty CSV"))?;
        let rows = records.collect::<Result<Vec<_>>>()?;
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

    #[test]
    fn only_fields_with_commas_quotes_or_line_breaks_are_quoted() {
        let mut t = Table::new(&["id", "text"]);
        t.push(vec!["1".into(), "a, b".into()]);
        t.push(vec!["2".into(), "say \"hi\"".into()]);
        t.push(vec!["3".into(), "two\nlines\r".into()]);
        t.push(vec!["4".into(), "plain 'text' with spaces".into()]);
        t.push(vec!["".into(), "".into()]);
        let csv = t.to_csv();
        assert_eq!(csv, "id,text\n1,\"a, b\"\n2,\"say \"\"hi\"\"\"\n3,\"two\nlines\r\"\n4,plain 'text' with spaces\n,\n");
        assert_eq!(Table::parse(&csv, Path::new("t.csv")).unwrap(), t);
        // Windows line ends read the same.
        assert_eq!(Table::parse(&csv.replace("s\n", "s\r\n"), Path::new("t.csv")).unwrap().rows[3][1], "plain 'text' with spaces");
        let e = Table::parse("a,b\n1,\"open\n", Path::new("cut.csv")).unwrap_err().to_string();
        assert!(e.contains("cut.csv") && e.contains("unterminated"), "{e}");
        assert!(Table::parse("", Path::new("empty.csv")).unwrap_err().to_string().contains("empty CSV"));
    }
}
