//! The end-to-end suite: real `meshnode` processes on 127.0.0.1 ports, driven through the CLI,
//! the HTTP API and the data plane, in one test binary so that the daemon library and its query
//! engine are linked once. `scripts/test -p mesh-tests --test e2e fetch::` runs one module.

mod contracts;
mod control_flood;
mod conventions;
mod dataplane_flood;
mod demo;
mod deploy;
mod fetch;
mod fidelity;
mod filters;
mod flight;
mod foundation;
mod governance;
mod hostile;
mod integrity;
mod local;
mod mesh;
mod metrics;
mod sql;
mod terminal;
