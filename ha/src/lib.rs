//! Who leads and where the durable state is, for every Agora process that needs one leader among
//! several instances: the master, the services framework and the batch framework.
//!
//! ```text
//!   Contender ──campaign──▶ Term { store, lost, resign }  Leadership<H> ◀── API layers
//!   (Standalone | ZooKeeper)   │        └─ resolves when the term ends: the caller stops
//!                              └─ StateStore (LocalFileStore | ZkStore, fenced on the term)
//!   Detector: where the leading master is (fixed address or ZooKeeper), for agents, frameworks, CLI
//! ```
//!
//! - [`detector`]: finding the leading master (`host:port` or `zk://…/path`).
//! - [`election`]: the ZooKeeper election, the [`election::Contender`] trait and its standalone and
//!   ZooKeeper implementations.
//! - [`store`]: the [`store::StateStore`] trait, the local-file store, [`store::Document`] and the
//!   one atomic-write helper ([`store::write_atomic`]).
//! - [`zk_store`]: the ZooKeeper store (chunked, compare-and-set, fenced on the election znode).
//! - [`secret_store`]: one small secret document written once for the cluster (a 0600 file or a
//!   znode), for the master's cluster CA.
//! - [`leadership`]: [`leadership::Leadership`], standby redirects and the leader proxy.
//!
//! Nothing here exits the process: losing leadership or ZooKeeper is an error or a future that
//! resolves, and the binary decides.
#![forbid(unsafe_code)]

pub mod detector;
pub mod election;
pub mod leadership;
pub mod secret_store;
pub mod store;
pub mod zk_store;
