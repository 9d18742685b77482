//! Integration tests of the agent with real processes, cgroups and a real Docker engine. One test
//! binary (see STYLE.md §6). Tests run as root here and in CI.

mod common;
mod docker;
mod fuzz;
mod health;
mod hostile;
mod http;
mod master_link;
mod native;
mod recovery;
mod users;
