//! xlb's agent: configuration, Maglev tables, the XDP data plane's maps, neighbour learning,
//! and the control socket. The binary (`src/main.rs`) is a thin CLI over these modules.
//!
//! Pure logic (config, maglev, model) has no I/O; dataplane, net and control are the edges to
//! the kernel and the operator; agent ties them together.

pub mod agent;
pub mod announce;
pub mod cli;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod faults;
pub mod flowscan;
pub mod health;
pub mod logging;
pub mod model;
pub mod maglev;
pub mod net;
pub mod script;
pub mod view;
pub mod web;
pub mod vrrp;
