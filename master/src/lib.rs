//! The Agora master: allocator, offers, agents, frameworks and task bookkeeping.
//!
//! - [`allocator`]: the pure DRF allocator that turns the cluster's free resources into offers.
//!
//! The master actor, its bookkeeping and the gRPC/HTTP services are later issues.
#![forbid(unsafe_code)]

pub mod allocator;

pub use allocator::{
    AllocationStats, Allocator, AllocatorConfig, AllocatorError, Offer, Policy, Quantities,
    RoleShare, SorterKind,
};
