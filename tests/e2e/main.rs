//! End-to-end tests: one test binary that starts the real `agora` binary and talks to it only through
//! its public interfaces.

mod batch;
mod bench;
mod browser;
mod chronos_client;
mod cli;
mod compose;
mod dns;
mod doors;
mod drain;
mod durability;
mod failover_agents;
mod faults;
mod guide;
mod ha;
mod harness;
mod local;
mod logs;
mod marathon_client;
mod marathon_groups;
mod master;
mod mesh;
mod mesos_api;
mod orphans;
mod python;
mod sdk;
mod secure;
mod security;
mod service_ports;
mod services;
mod services_ui;
mod stack;
mod stops;
mod tls;
mod ui;
mod units;
