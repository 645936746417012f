//! Table rows, the printed table and the JSON files under target/bench/.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde_json::Value;

/// One line of the final table: `kind | measured | baseline/limit | ratio | target | met?`.
#[derive(Clone, Debug)]
pub struct Row {
    pub part: &'static str,
    pub kind: String,
    pub measured: String,
    /// What the measurement is compared with (the baseline program, or the limit).
    pub reference: String,
    pub ratio: Option<f64>,
    pub target: String,
    /// `None`: no target for this row, or nothing to judge.
    pub met: Option<bool>,
}

impl Row {
    pub fn new(part: &'static str, kind: impl Into<String>, measured: impl Into<String>) -> Row {
        Row {
            part,
            kind: kind.into(),
            measured: measured.into(),
            reference: String::new(),
            ratio: None,
            target: String::new(),
            met: None,
        }
    }

    pub fn reference(mut self, reference: impl Into<String>, ratio: Option<f64>) -> Row {
        self.reference = reference.into();
        self.ratio = ratio;
        self
    }

    pub fn target(mut self, target: impl Into<String>, met: Option<bool>) -> Row {
        self.target = target.into();
        self.met = met;
        self
    }

    /// A part that could not produce its numbers.
    pub fn failed(part: &'static str, error: &anyhow::Error) -> Row {
        Row::new(part, "FAILED", format!("{error:#}").replace('\n', " ")).target("runs and produces numbers", Some(false))
    }

    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "part": self.part,
            "kind": self.kind,
            "measured": self.measured,
            "reference": self.reference,
            "ratio": self.ratio,
            "target": self.target,
            "met": self.met,
        })
    }
}

/// The table, as text.
pub fn render(rows: &[Row]) -> String {
    let headers = ["part", "kind", "measured", "baseline/limit", "ratio", "target", "met?"];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.part.to_owned(),
                r.kind.clone(),
                r.measured.clone(),
                r.reference.clone(),
                r.ratio.map(|x| format!("{x:.2}")).unwrap_or_default(),
                r.target.clone(),
                match r.met {
                    Some(true) => "yes".to_owned(),
                    Some(false) => "NO".to_owned(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[String]| -> String {
        let mut s = String::new();
        for (i, (c, w)) in cols.iter().zip(&widths).enumerate() {
            if i > 0 {
                s.push_str(" | ");
            }
            // Numbers right-aligned, text left.
            let pad = w - c.chars().count();
            if i == 4 {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = String::new();
    out.push_str(&line(&headers.map(String::from)));
    out.push('\n');
    out.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-|-"));
    out.push('\n');
    for row in &cells {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

/// target/bench/ of the workspace.
pub fn out_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t).join("bench"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench"),
    }
}

/// Writes `value` as target/bench/<name>.json; returns the path.
pub fn write_json(name: &str, value: &Value) -> Result<PathBuf> {
    let dir = out_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(value)? + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Median of a non-empty list (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The smallest of a list of per-round figures (a path's floor).
pub fn floor(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Median, minimum and maximum of a list of per-round figures.
pub fn spread(values: &[f64]) -> (f64, f64, f64) {
    (median(values), floor(values), values.iter().copied().fold(0.0, f64::max))
}

/// Progress line on stderr (the table goes to stdout at the end).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        eprintln!("bench: {}", format!($($arg)*));
    }};
}
