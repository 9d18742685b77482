//! End-to-end tests: one test binary that starts the real `agora` binary and talks to it only through
//! its public interfaces.

mod batch;
mod bench;
mod cli;
mod compose;
mod doors;
mod durability;
mod failover_agents;
mod faults;
mod ha;
mod harness;
mod local;
mod master;
mod mesos_api;
mod python;
mod sdk;
mod security;
mod services;
mod tls;
mod ui;
