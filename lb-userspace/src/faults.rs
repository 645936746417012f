//! Fault injection for the lab tests: with `XLB_FAULTS` naming a file, every operation of a
//! kind the file names (`map-write`, `netlink`) fails while the file says so, as a real fault
//! would, and works again once the kind is removed from it. Without the variable (as in
//! production) nothing is injected and it costs one environment lookup per operation.

/// Whether operations of `kind` are to fail now.
pub fn injected(kind: &str) -> bool {
    let Some(path) = std::env::var_os("XLB_FAULTS") else { return false };
    std::fs::read_to_string(path).is_ok_and(|text| text.split_whitespace().any(|k| k == kind))
}

/// The error an injected fault returns.
pub fn error(kind: &str) -> std::io::Error {
    std::io::Error::other(format!("injected fault: {kind} (XLB_FAULTS)"))
}
