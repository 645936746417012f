//! `lb_userspace::config::keepalived` on any UTF-8 text read as a keepalived.conf (from memory,
//! so includes find that file alone): it never panics; every diagnostic names that file and a line
//! within it; the TOML it writes is always TOML, one origin a line; and what it accepts, the
//! TOML reader accepts from that TOML as the same configuration (what `xlb convert` prints
//! passes `xlb check-config`).
#![no_main]

use std::path::Path;

use lb_userspace::config::{
    self,
    keepalived::{self, InMemory},
    Severity, Source,
};
use libfuzzer_sys::fuzz_target;

const FILE: &str = "/etc/keepalived/keepalived.conf";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new(FILE);
    let mut files = InMemory::default();
    files.0.insert(path.to_path_buf(), text.to_string());
    // A line past the end is allowed: a block left open at the end of a file.
    let lines = text.lines().count() + 1;

    let (toml, origins, diagnostics) = keepalived::convert(&files, path, text, None);
    assert!(toml.parse::<toml_edit::DocumentMut>().is_ok(), "the generated TOML does not parse:\n{toml}");
    assert_eq!(origins.lines.len(), toml.lines().count(), "one origin a line");
    // Includes find this file alone (an include of it is a loop, refused).
    assert!(origins.files.iter().all(|f| f == FILE), "{:?}", origins.files);
    assert!(origins.lines.iter().all(|p| p.file < origins.files.len() && p.line <= lines));

    let diagnostics = match keepalived::read(&files, path, text, None) {
        Ok(loaded) => {
            assert!(loaded.warnings.iter().all(|d| d.severity == Severity::Warning), "{:?}", loaded.warnings);
            assert_eq!(loaded.toml, toml, "read and convert write the same TOML");
            let (mut again, _) = config::parse("converted.toml", &loaded.toml).unwrap_or_else(|e| panic!("accepted, but its TOML is refused:\n{e}\n{toml}"));
            let mut cfg = loaded.config;
            (again.file, again.source, cfg.file, cfg.source) = (String::new(), Source::default(), String::new(), Source::default());
            assert_eq!(again, cfg, "the TOML reads back as another configuration");
            loaded.warnings.into_iter().chain(diagnostics).collect::<Vec<_>>()
        }
        Err(e) => {
            assert!(e.diagnostics.iter().any(|d| d.severity == Severity::Error), "refused without an error: {e:?}");
            e.diagnostics.into_iter().chain(diagnostics).collect()
        }
    };
    for d in &diagnostics {
        assert_eq!(d.file, FILE, "{d}");
        assert!(d.line <= lines, "diagnostic past the end ({lines} lines): {d}");
        assert!(!d.message.is_empty());
    }
});
