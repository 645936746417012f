//! xlb's agent: configuration, Maglev tables, the XDP data plane's maps, neighbour learning,
//! and the control socket. The binary (`src/main.rs`) is a thin CLI over these modules.

pub mod dataplane;
