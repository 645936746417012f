//! Changes an operator makes at run time (`xlb backend add|remove|weight|drain|enable`,
//! `xlb service add|remove`), as edits of the configuration's text with toml_edit: the same
//! edit gives the running configuration (the edited text is parsed and checked like any file)
//! and, with `--save`, the file itself, its comments and layout kept.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use toml_edit::{value, ArrayOfTables, DocumentMut, Item, Table};

/// One runtime change. Services are named by `name`, backends by their service and address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum Change {
    /// A backend added to a service (like `ipvsadm -a`).
    BackendAdd { service: String, address: IpAddr, weight: u32 },
    /// A backend removed from a service (like `ipvsadm -d`): its flows end.
    BackendRemove { service: String, address: IpAddr },
    /// A backend's weight (like `ipvsadm -e -w`).
    BackendWeight { service: String, address: IpAddr, weight: u32 },
    /// Weight 0 until `BackendEnable`: no new flows, established flows stay.
    BackendDrain { service: String, address: IpAddr },
    /// Ends a drain (the weight before it applies again).
    BackendEnable { service: String, address: IpAddr },
    /// A service added, with its backends (weight 1 each).
    ServiceAdd { name: String, vip: IpAddr, port: u16, protocol: String, backends: Vec<IpAddr> },
    /// A service removed, with its backends: their flows end.
    ServiceRemove { name: String },
}

impl Change {
    /// The service the change is about.
    pub fn service(&self) -> &str {
        match self {
            Change::BackendAdd { service, .. }
            | Change::BackendRemove { service, .. }
            | Change::BackendWeight { service, .. }
            | Change::BackendDrain { service, .. }
            | Change::BackendEnable { service, .. } => service,
            Change::ServiceAdd { name, .. } | Change::ServiceRemove { name } => name,
        }
    }

    /// The backend the change is about, if it is about one.
    pub fn backend(&self) -> Option<IpAddr> {
        match self {
            Change::BackendAdd { address, .. }
            | Change::BackendRemove { address, .. }
            | Change::BackendWeight { address, .. }
            | Change::BackendDrain { address, .. }
            | Change::BackendEnable { address, .. } => Some(*address),
            Change::ServiceAdd { .. } | Change::ServiceRemove { .. } => None,
        }
    }

    /// What the file says of the thing the change is about: the text of its backend's table,
    /// or of its service's table for a service change (`None`: the file does not have it).
    /// A change whose subject the file has changed since no longer applies (the file wins).
    pub fn subject_in(&self, text: &str) -> Option<String> {
        let doc = text.parse::<DocumentMut>().ok()?;
        let service = find_service(&doc, self.service())?;
        match self.backend() {
            Some(address) => {
                let backends = service.get("backend")?.as_array_of_tables()?;
                backends.iter().find(|b| has_address(b, address)).map(table_text)
            }
            None => Some(table_text(service)),
        }
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::BackendAdd { service, address, weight } => write!(f, "{service} {address}: added, weight {weight}"),
            Change::BackendRemove { service, address } => write!(f, "{service} {address}: removed"),
            Change::BackendWeight { service, address, weight } => write!(f, "{service} {address}: weight {weight}"),
            Change::BackendDrain { service, address } => write!(f, "{service} {address}: drained"),
            Change::BackendEnable { service, address } => write!(f, "{service} {address}: enabled"),
            Change::ServiceAdd { name, vip, port, protocol, .. } => write!(f, "service {name} ({vip} port {port} {protocol}): added"),
            Change::ServiceRemove { name } => write!(f, "service {name}: removed"),
        }
    }
}

/// `text` with `changes` made, in order. A drain is weight 0; an enable undoes the drains of
/// its backend before it, so it is only seen through the changes it removes (see
/// [`effective`]). Fails, naming the change, when a change does not fit the text (no such
/// service or backend, a backend or service added twice).
pub fn apply(text: &str, changes: &[Change]) -> Result<String, String> {
    let mut doc = text.parse::<DocumentMut>().map_err(|e| format!("not TOML: {e}"))?;
    for change in effective(changes) {
        apply_one(&mut doc, change).map_err(|e| format!("{change}: {e}"))?;
    }
    Ok(doc.to_string())
}

/// The changes that still act: every drain followed by an enable of its backend drops out.
pub fn effective<'a>(changes: impl IntoIterator<Item = &'a Change>) -> Vec<&'a Change> {
    let mut out: Vec<&Change> = Vec::new();
    for change in changes {
        if let Change::BackendEnable { service, address } = change {
            out.retain(|c| !matches!(c, Change::BackendDrain { service: s, address: a } if s == service && a == address));
        } else {
            out.push(change);
        }
    }
    out
}

fn apply_one(doc: &mut DocumentMut, change: &Change) -> Result<(), String> {
    if let Change::ServiceAdd { name, vip, port, protocol, backends } = change {
        if find_service(doc, name).is_some() {
            return Err(format!("there is already a service \"{name}\""));
        }
        // A table without a position is written right after the table visited before it,
        // which need not be the file's last (a `[service.check]` between two backends, say):
        // the new service and its backends go after every table of the file.
        let end = last_position(doc.as_table());
        let mut table = Table::new();
        table.set_position(Some(end + 1));
        table["name"] = value(name.as_str());
        table["vip"] = value(vip.to_string());
        table["port"] = value(i64::from(*port));
        table["protocol"] = value(protocol.as_str());
        let mut list = ArrayOfTables::new();
        for (i, address) in backends.iter().enumerate() {
            let mut b = Table::new();
            b.set_position(Some(end + 2 + i as isize));
            b["address"] = value(address.to_string());
            list.push(b);
        }
        if !list.is_empty() {
            table["backend"] = Item::ArrayOfTables(list);
        }
        services_mut(doc)?.push(table);
        return Ok(());
    }
    let services = services_mut(doc)?;
    let index = services.iter().position(|s| is_named(s, change.service())).ok_or_else(|| format!("no service \"{}\"", change.service()))?;
    let Some(address) = change.backend() else {
        // ServiceRemove.
        services.remove(index);
        return Ok(());
    };
    let service = services.get_mut(index).expect("found");
    if !service.contains_key("backend") {
        service["backend"] = Item::ArrayOfTables(ArrayOfTables::new());
    }
    let backends = service["backend"].as_array_of_tables_mut().ok_or("its backend key is not a list of tables")?;
    let found = backends.iter().position(|b| has_address(b, address));
    match (change, found) {
        (Change::BackendAdd { weight, .. }, None) => {
            let mut b = Table::new();
            b["address"] = value(address.to_string());
            b["weight"] = value(i64::from(*weight));
            backends.push(b);
        }
        (Change::BackendAdd { .. }, Some(_)) => return Err(format!("the service already has backend {address}")),
        (_, None) => return Err(format!("the service has no backend {address}")),
        (Change::BackendRemove { .. }, Some(i)) => {
            backends.remove(i);
        }
        (Change::BackendWeight { weight, .. }, Some(i)) => set_weight(backends, i, *weight),
        (Change::BackendDrain { .. }, Some(i)) => set_weight(backends, i, 0),
        (Change::BackendEnable { .. } | Change::ServiceAdd { .. } | Change::ServiceRemove { .. }, Some(_)) => {}
    }
    Ok(())
}

/// The largest position of `table` and the tables inside it, as parsed (0 for none).
fn last_position(table: &Table) -> isize {
    let mut last = table.position().unwrap_or(0);
    for (_, item) in table.iter() {
        match item {
            Item::Table(t) => last = last.max(last_position(t)),
            Item::ArrayOfTables(list) => list.iter().for_each(|t| last = last.max(last_position(t))),
            _ => {}
        }
    }
    last
}

/// A table's keys and values with those of the tables inside it (a table's own Display
/// leaves those out).
fn table_text(table: &Table) -> String {
    let mut text = table.to_string();
    for (_, item) in table.iter() {
        match item {
            Item::Table(t) => text += &table_text(t),
            Item::ArrayOfTables(list) => list.iter().for_each(|t| text += &table_text(t)),
            _ => {}
        }
    }
    text
}

fn set_weight(backends: &mut ArrayOfTables, i: usize, weight: u32) {
    if let Some(b) = backends.get_mut(i) {
        b["weight"] = value(i64::from(weight));
    }
}

fn services_mut(doc: &mut DocumentMut) -> Result<&mut ArrayOfTables, String> {
    if !doc.contains_key("service") {
        doc["service"] = Item::ArrayOfTables(ArrayOfTables::new());
    }
    doc["service"].as_array_of_tables_mut().ok_or_else(|| "the service key is not a list of tables".into())
}

fn find_service<'d>(doc: &'d DocumentMut, name: &str) -> Option<&'d Table> {
    doc.get("service")?.as_array_of_tables()?.iter().find(|s| is_named(s, name))
}

fn is_named(service: &Table, name: &str) -> bool {
    service.get("name").and_then(|n| n.as_str()) == Some(name)
}

fn has_address(backend: &Table, address: IpAddr) -> bool {
    backend.get("address").and_then(|a| a.as_str()).and_then(|a| a.parse::<IpAddr>().ok()) == Some(address)
}

#[cfg(test)]
mod tests;
