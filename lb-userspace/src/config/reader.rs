//! The TOML reader the section walkers share: a value with the line it was written on
//! ([`Located`]), the diagnostics of one file ([`Report`]), and [`TableReader`], which takes a
//! table's keys with their types, ranges and defaults and then reports every key nobody took.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::{Diagnostic, Severity};

/// "syntax error: duplicate key (at \"port\")": toml's message, with the text it points at
/// when that is short (toml does not name a duplicate key in its message).
pub(super) fn syntax_error(e: &toml::de::Error, text: &str) -> String {
    let at = e.span().and_then(|span| text.get(span)).unwrap_or("");
    if at.is_empty() || at.len() > 40 || at.contains('\n') {
        format!("syntax error: {}", e.message())
    } else {
        format!("syntax error: {} (at \"{at}\")", e.message())
    }
}

/// A value and the line it was written on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Located<T> {
    pub(super) value: T,
    pub(super) line: usize,
}

/// Diagnostics of one file, and how to turn byte offsets into its line numbers.
pub(super) struct Report {
    pub(super) file: String,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
    diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub(super) fn new(file: &str, text: &str) -> Report {
        let mut line_starts = vec![0];
        line_starts.extend(text.bytes().enumerate().filter(|&(_, b)| b == b'\n').map(|(i, _)| i + 1));
        Report { file: file.to_string(), line_starts, diagnostics: Vec::new() }
    }

    /// The 1-based line of byte `offset`.
    pub(super) fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset)
    }

    pub(super) fn error(&mut self, line: usize, message: impl Into<String>) {
        self.push(line, Severity::Error, message.into());
    }

    pub(super) fn warning(&mut self, line: usize, message: impl Into<String>) {
        self.push(line, Severity::Warning, message.into());
    }

    fn push(&mut self, line: usize, severity: Severity, message: String) {
        self.diagnostics.push(Diagnostic { file: self.file.clone(), line, severity, message });
    }

    pub(super) fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.severity == Severity::Error)
    }

    /// The diagnostics sorted by line (in the order found within a line).
    pub(super) fn finish(mut self) -> Vec<Diagnostic> {
        self.diagnostics.sort_by_key(|d| d.line);
        self.diagnostics
    }
}

/// Reads one TOML table. The walker takes each key it knows with one call (`required_string`,
/// `integer_or`, `table_array`, ...), which reports a wrong type, a value out of range or a
/// missing required key, and returns the value with its line, or `None` after reporting.
/// Optional keys get their default, located at the table's header. [`TableReader::finish`]
/// then reports every key of the table that was not taken.
#[must_use = "call finish() to report the keys nobody took"]
pub(super) struct TableReader<'r, 't> {
    report: &'r mut Report,
    table: &'t DeTable<'t>,
    /// How diagnostics name the table: `[agent]`, `[[service]]`; empty for the root.
    section: String,
    /// Line of the table's header.
    line: usize,
    /// Keys taken so far (whether present or not).
    taken: Vec<String>,
}

impl<'r, 't> TableReader<'r, 't> {
    pub(super) fn new(report: &'r mut Report, table: Located<&'t DeTable<'t>>, section: &str) -> Self {
        TableReader { report, table: table.value, section: section.to_string(), line: table.line, taken: Vec::new() }
    }

    pub(super) fn error(&mut self, line: usize, message: impl Into<String>) {
        self.report.error(line, message);
    }

    pub(super) fn warning(&mut self, line: usize, message: impl Into<String>) {
        self.report.warning(line, message);
    }

    /// Takes `key`. Absent: `default` at the header's line, or, without a default, a "missing
    /// required key" error. Present: `convert` turns the value (whose key is on `line`) into a
    /// `T`, or reports why it cannot and returns `None`.
    pub(super) fn take<T>(
        &mut self,
        key: &str,
        default: Option<T>,
        convert: impl FnOnce(&mut Self, &str, &'t Spanned<DeValue<'t>>, usize) -> Option<T>,
    ) -> Option<Located<T>> {
        if !self.taken.iter().any(|k| k == key) {
            self.taken.push(key.to_string());
        }
        let table = self.table;
        match table.get_key_value(key) {
            Some((k, v)) => {
                let line = self.report.line_of(k.span().start);
                let value = convert(self, key, v, line)?;
                Some(Located { value, line })
            }
            None => match default {
                Some(value) => Some(Located { value, line: self.line }),
                None => {
                    let message = if self.section.is_empty() {
                        format!("missing required section [{key}]")
                    } else {
                        format!("missing required key \"{key}\" in {}", self.section)
                    };
                    self.error(self.line, message);
                    None
                }
            },
        }
    }

    /// Passes `item` through `valid`, reporting its error at the item's line.
    pub(super) fn check<T>(&mut self, item: Located<T>, valid: impl FnOnce(&T) -> Result<(), String>) -> Option<Located<T>> {
        match valid(&item.value) {
            Ok(()) => Some(item),
            Err(message) => {
                self.error(item.line, message);
                None
            }
        }
    }

    pub(super) fn required_string(&mut self, key: &str) -> Option<Located<String>> {
        self.take(key, None, Self::string_value)
    }

    pub(super) fn required_string_array(&mut self, key: &str) -> Option<Located<Vec<Located<String>>>> {
        self.take(key, None, Self::string_array_value)
    }

    pub(super) fn required_integer<T: Integer>(&mut self, key: &str, range: RangeInclusive<T>) -> Option<Located<T>> {
        self.take(key, None, |r, key, v, line| r.integer_value(key, v, line, range))
    }

    pub(super) fn integer_or<T: Integer>(&mut self, key: &str, range: RangeInclusive<T>, default: T) -> Option<Located<T>> {
        self.take(key, Some(default), |r, key, v, line| r.integer_value(key, v, line, range))
    }

    pub(super) fn bool_or(&mut self, key: &str, default: bool) -> Option<Located<bool>> {
        self.take(key, Some(default), |r, key, v, line| match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => r.wrong_type(key, line, "a boolean (true or false)", other),
        })
    }

    /// A string that must be one of `options` (names and the values they stand for).
    pub(super) fn choice_or<T: Copy>(&mut self, key: &str, options: &[(&str, T)], default: T) -> Option<Located<T>> {
        self.take(key, Some(default), |r, key, v, line| r.choice_value(key, v, line, options))
    }

    /// One of `options` by name, or absent.
    pub(super) fn optional_choice<T: Copy>(&mut self, key: &str, options: &[(&str, T)]) -> Option<Located<Option<T>>> {
        self.optional(key, |r, key, v, line| r.choice_value(key, v, line, options))
    }

    fn choice_value<T: Copy>(&mut self, key: &str, v: &'t Spanned<DeValue<'t>>, line: usize, options: &[(&str, T)]) -> Option<T> {
        let s = self.string_value(key, v, line)?;
        if let Some(&(_, value)) = options.iter().find(|(name, _)| *name == s) {
            return Some(value);
        }
        let names: Vec<String> = options.iter().map(|(name, _)| format!("\"{name}\"")).collect();
        self.error(line, format!("invalid {key} \"{s}\": expected {}", names.join(" or ")));
        None
    }

    pub(super) fn required_ip(&mut self, key: &str) -> Option<Located<IpAddr>> {
        self.take(key, None, Self::ip_value)
    }

    /// A key that may be absent: `Some(Located(None))` when absent, `None` after an error.
    pub(super) fn optional<T>(
        &mut self,
        key: &str,
        convert: impl FnOnce(&mut Self, &str, &'t Spanned<DeValue<'t>>, usize) -> Option<T>,
    ) -> Option<Located<Option<T>>> {
        self.take(key, Some(None), |r, key, v, line| convert(r, key, v, line).map(Some))
    }

    pub(super) fn optional_string(&mut self, key: &str) -> Option<Located<Option<String>>> {
        self.optional(key, Self::string_value)
    }

    pub(super) fn optional_ip(&mut self, key: &str) -> Option<Located<Option<IpAddr>>> {
        self.optional(key, Self::ip_value)
    }

    pub(super) fn optional_integer<T: Integer>(&mut self, key: &str, range: RangeInclusive<T>) -> Option<Located<Option<T>>> {
        self.optional(key, |r, key, v, line| r.integer_value(key, v, line, range))
    }

    /// A user name for scripts to run as (`script_user`, `notify_user`, `user`); whether it
    /// exists is a check against this host.
    pub(super) fn optional_user(&mut self, key: &str) -> Option<Located<Option<String>>> {
        self.optional(key, |r, key, v, line| {
            let name = r.string_value(key, v, line)?;
            if name.is_empty() || name.contains(|c: char| c == ':' || c == '/' || c.is_whitespace()) {
                r.error(line, format!("invalid {key} \"{name}\": expected a user name"));
                return None;
            }
            Some(name)
        })
    }

    pub(super) fn optional_duration(&mut self, key: &str) -> Option<Located<Option<Duration>>> {
        self.optional(key, Self::duration_value)
    }

    pub(super) fn duration_or(&mut self, key: &str, default: Duration) -> Option<Located<Duration>> {
        self.take(key, Some(default), Self::duration_value)
    }

    /// A duration written as a string with a unit: "2s", "500ms", "1.5s", "1m".
    fn duration_value(&mut self, key: &str, v: &'t Spanned<DeValue<'t>>, line: usize) -> Option<Duration> {
        let DeValue::String(s) = v.get_ref() else {
            return self.wrong_type(key, line, "a duration string such as \"2s\" or \"500ms\"", v.get_ref());
        };
        match parse_duration(s) {
            Ok(d) => Some(d),
            Err(problem) => {
                self.error(line, format!("invalid duration \"{s}\" for {key}: {problem}"));
                None
            }
        }
    }

    fn ip_value(&mut self, key: &str, v: &'t Spanned<DeValue<'t>>, line: usize) -> Option<IpAddr> {
        let s = self.string_value(key, v, line)?;
        match s.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(line, format!("invalid IP address \"{s}\" for {key}"));
                None
            }
        }
    }

    /// A sub-table that may be absent.
    pub(super) fn optional_table(&mut self, key: &str) -> Option<Located<Option<&'t DeTable<'t>>>> {
        self.optional(key, |r, key, v, line| match v.get_ref() {
            DeValue::Table(table) => Some(table),
            other => r.wrong_type(key, line, "a table", other),
        })
    }

    pub(super) fn absolute_path_or(&mut self, key: &str, default: &str) -> Option<Located<PathBuf>> {
        self.take(key, Some(PathBuf::from(default)), |r, key, v, line| {
            let s = r.string_value(key, v, line)?;
            if Path::new(&s).is_absolute() {
                Some(PathBuf::from(s))
            } else {
                r.error(line, format!("{key} must be an absolute path, not \"{s}\""));
                None
            }
        })
    }

    /// A sub-table (`[key]`, or `key = { ... }`); its line is its header's.
    pub(super) fn required_table(&mut self, key: &str) -> Option<Located<&'t DeTable<'t>>> {
        self.take(key, None, |r, key, v, line| match v.get_ref() {
            DeValue::Table(table) => Some(table),
            other => r.wrong_type(key, line, "a table", other),
        })
    }

    /// An array of tables (`[[key]]`), empty when absent; each with its header's line.
    pub(super) fn table_array(&mut self, key: &str) -> Vec<Located<&'t DeTable<'t>>> {
        let tables = self.take(key, Some(Vec::new()), |r, key, v, line| {
            let DeValue::Array(items) = v.get_ref() else {
                return r.wrong_type(key, line, &format!("an array of tables ([[{key}]])"), v.get_ref());
            };
            let mut tables = Vec::new();
            for item in items.iter() {
                let item_line = r.report.line_of(item.span().start);
                match item.get_ref() {
                    DeValue::Table(table) => tables.push(Located { value: table, line: item_line }),
                    other => {
                        r.error(item_line, format!("expected a table in array \"{key}\", found {}", a(other)));
                    }
                }
            }
            Some(tables)
        });
        tables.map(|t| t.value).unwrap_or_default()
    }

    pub(super) fn string_value(&mut self, key: &str, v: &'t Spanned<DeValue<'t>>, line: usize) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            other => self.wrong_type(key, line, "a string", other),
        }
    }

    /// An array of strings, each with its own line; `None` if any element is not a string.
    pub(super) fn string_array_value(
        &mut self,
        key: &str,
        v: &'t Spanned<DeValue<'t>>,
        line: usize,
    ) -> Option<Vec<Located<String>>> {
        let DeValue::Array(items) = v.get_ref() else {
            return self.wrong_type(key, line, "an array of strings", v.get_ref());
        };
        let mut strings = Vec::new();
        let mut ok = true;
        for item in items.iter() {
            let item_line = self.report.line_of(item.span().start);
            match item.get_ref() {
                DeValue::String(s) => strings.push(Located { value: s.to_string(), line: item_line }),
                other => {
                    self.error(item_line, format!("expected a string in array \"{key}\", found {}", a(other)));
                    ok = false;
                }
            }
        }
        ok.then_some(strings)
    }

    /// An array whose elements are strings or integers, as text with their lines.
    pub(super) fn string_or_integer_array(
        &mut self,
        key: &str,
        v: &'t Spanned<DeValue<'t>>,
        line: usize,
    ) -> Option<Vec<(String, usize)>> {
        let DeValue::Array(items) = v.get_ref() else {
            return self.wrong_type(key, line, "an array", v.get_ref());
        };
        let mut out = Vec::new();
        for item in items.iter() {
            let item_line = self.report.line_of(item.span().start);
            match item.get_ref() {
                DeValue::String(s) => out.push((s.to_string(), item_line)),
                DeValue::Integer(i) => out.push((i.as_str().to_string(), item_line)),
                other => {
                    self.error(item_line, format!("expected a string or an integer in array \"{key}\", found {}", a(other)));
                    return None;
                }
            }
        }
        Some(out)
    }

    fn integer_value<T: Integer>(
        &mut self,
        key: &str,
        v: &'t Spanned<DeValue<'t>>,
        line: usize,
        range: RangeInclusive<T>,
    ) -> Option<T> {
        let DeValue::Integer(int) = v.get_ref() else {
            return self.wrong_type(key, line, "an integer", v.get_ref());
        };
        let (low, high) = ((*range.start()).into(), (*range.end()).into());
        match i64::from_str_radix(int.as_str(), int.radix()) {
            Ok(n) if (low..=high).contains(&n) => T::try_from(n).ok(),
            _ => {
                self.error(line, format!("{key} = {int} is out of range {low}..={high}"));
                None
            }
        }
    }

    pub(super) fn wrong_type<T>(&mut self, key: &str, line: usize, expected: &str, found: &DeValue<'_>) -> Option<T> {
        self.error(line, format!("expected {expected} for key \"{key}\", found {}", a(found)));
        None
    }

    /// Reports every key of the table that no call took.
    pub(super) fn finish(self) {
        for (key, value) in self.table.iter() {
            let name: &str = key.get_ref();
            if self.taken.iter().any(|k| k == name) {
                continue;
            }
            let mut message = if !self.section.is_empty() {
                format!("unknown key \"{name}\" in {}", self.section)
            } else {
                match value.get_ref() {
                    DeValue::Table(_) => format!("unknown section [{name}]"),
                    DeValue::Array(items) if !items.is_empty() && items.iter().all(|i| i.get_ref().is_table()) => {
                        format!("unknown section [[{name}]]")
                    }
                    _ => format!("unknown key \"{name}\" at the top level"),
                }
            };
            let closest = self.taken.iter().map(|known| (edit_distance(known, name), known)).min();
            if let Some((_, known)) = closest.filter(|&(distance, _)| distance <= 2 && distance < name.len()) {
                message.push_str(&format!(" (did you mean \"{known}\"?)"));
            }
            let line = self.report.line_of(key.span().start);
            self.report.error(line, message);
        }
    }
}

/// Parses "2s", "500ms", "1.5s", "1m", "100us": a number (decimals allowed) and a unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale = match unit.trim() {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "" => return Err("give a unit: us, ms, s, m or h".into()),
        other => return Err(format!("unknown unit \"{other}\" (us, ms, s, m or h)")),
    };
    let value: f64 = number.parse().map_err(|_| format!("\"{number}\" is not a number"))?;
    let secs = value * scale;
    if !secs.is_finite() || secs > 86400.0 {
        return Err("longer than a day".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The integer types keys are read as.
pub(super) trait Integer: Copy + Into<i64> + TryFrom<i64> {}
impl Integer for u8 {}
impl Integer for u16 {}
impl Integer for u32 {}
impl Integer for i32 {}

/// "a string", "an integer", ...: how messages name a value's type.
fn a(value: &DeValue<'_>) -> String {
    let kind = value.type_str();
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {kind}")
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers_follow_newlines() {
        let report = Report::new("f", "a\nbc\n\nd");
        let lines: Vec<usize> = (0..8).map(|offset| report.line_of(offset)).collect();
        assert_eq!(lines, [1, 1, 2, 2, 2, 3, 4, 4]);
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("protcol", "protocol"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("weigth", "weight"), 2);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
        assert!(parse_duration("2").unwrap_err().contains("unit"));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("x s").is_err());
    }
}
