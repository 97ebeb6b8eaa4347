//! Lists of layers or positions as typed in a cell (`3`, `0-5`, `1+4+7`, the CLI's form), and
//! back to that form for display.

/// Highest index a list may name: past any context, so a typo cannot allocate without bound.
const MAX: usize = 1 << 20;

/// The indices, ascending, each once; empty text is `None` (every index).
pub fn parse(s: &str) -> Result<Option<Vec<usize>>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let mut out = std::collections::BTreeSet::new();
    for part in s.split('+') {
        let num = |x: &str| match x.trim().parse::<usize>() {
            Ok(n) if n < MAX => Ok(n),
            Ok(n) => Err(format!("{n} is too large")),
            Err(_) => Err(format!("{:?} is not a number (write 3, 0-5 or 1+4)", x.trim())),
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if b < a {
                    return Err(format!("{part:?}: the range ends before it starts"));
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(num(part)?);
            }
        }
    }
    Ok(Some(out.into_iter().collect()))
}

/// `[0, 1, 2, 3, 7]` as `0-3+7`; `None` as empty text.
pub fn format(v: Option<&[usize]>) -> String {
    let Some(v) = v else { return String::new() };
    let mut parts = vec![];
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        parts.push(if j > i { format!("{}-{}", v[i], v[j]) } else { v[i].to_string() });
        i = j + 1;
    }
    parts.join("+")
}

/// A text field for a list, kept as typed (`typed`) while it does not parse, with the error
/// beside it; true when it changed `value`.
pub fn field(ui: &mut egui::Ui, name: &str, typed: &mut Option<String>, value: &mut Option<Vec<usize>>) -> bool {
    let text = typed.get_or_insert_with(|| format(value.as_deref()));
    let l = ui.label(name);
    let r = ui.add(egui::TextEdit::singleline(text).desired_width(120.0).hint_text("all (e.g. 0-3+6)")).labelled_by(l.id);
    match parse(text) {
        Ok(v) => {
            if r.changed() && v != *value {
                *value = v;
                return true;
            }
        }
        Err(e) => {
            ui.colored_label(super::patching::WARN, e);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_in_the_cli_form() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse(" 3 ").unwrap(), Some(vec![3]));
        assert_eq!(parse("4+0-2+1").unwrap(), Some(vec![0, 1, 2, 4]));
        assert!(parse("0-").is_err());
        assert!(parse("5-2").unwrap_err().contains("ends before"));
        assert!(parse("x").is_err());
        assert!(parse("99999999").is_err());
    }

    #[test]
    fn lists_format_as_ranges_and_parse_back() {
        assert_eq!(format(None), "");
        assert_eq!(format(Some(&[0, 1, 2, 3, 7, 9, 10])), "0-3+7+9-10");
        assert_eq!(parse(&format(Some(&[0, 1, 2, 3, 7, 9, 10]))).unwrap(), Some(vec![0, 1, 2, 3, 7, 9, 10]));
    }
}
