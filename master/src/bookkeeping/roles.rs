//! Roles: weights and quotas, kept in the allocator and the registry.

use agora_proto::v1;
use agora_proto::Resources;

use super::{limits, Bookkeeping};
use crate::error::MasterError;

impl Bookkeeping {
    /// Sets role weights (all or nothing).
    ///
    /// # Errors
    /// [`MasterError::InvalidArgument`] naming the bad entry.
    pub fn update_weights(&mut self, weights: &[v1::WeightInfo]) -> Result<(), MasterError> {
        if weights.len() > limits::MAX_WEIGHTS {
            return Err(MasterError::invalid(
                "weights",
                format!(
                    "must have at most {} entries (got {})",
                    limits::MAX_WEIGHTS,
                    weights.len()
                ),
            ));
        }
        for (i, w) in weights.iter().enumerate() {
            agora_proto::resources::validate_role(&w.role)
                .map_err(|p| MasterError::invalid(format!("weights[{i}].role"), p))?;
            if !(w.weight.is_finite() && w.weight > 0.0 && w.weight <= limits::MAX_WEIGHT) {
                return Err(MasterError::invalid(
                    format!("weights[{i}].weight"),
                    format!(
                        "must be a number above 0 and at most {} (got {})",
                        limits::MAX_WEIGHT,
                        w.weight
                    ),
                ));
            }
        }
        for w in weights {
            let _ = self.allocator.update_weight(&w.role, w.weight);
            self.registry.weights.insert(w.role.clone(), w.weight);
        }
        self.registry_dirty = true;
        Ok(())
    }

    /// Sets (or with no resources removes) a role's quota guarantee.
    ///
    /// # Errors
    /// [`MasterError::InvalidArgument`] for a bad role or resources.
    pub fn set_quota(&mut self, req: v1::SetQuotaRequest) -> Result<(), MasterError> {
        agora_proto::resources::validate_role(&req.role)
            .map_err(|p| MasterError::invalid("role", p))?;
        if req.role == "*" {
            return Err(MasterError::invalid(
                "role",
                "the default role '*' cannot have a quota",
            ));
        }
        limits::resource_list("guarantee", &req.guarantee)?;
        let q = Resources::from_proto(&req.guarantee)
            .map_err(|e| MasterError::invalid("guarantee", e.to_string()))?
            .flatten();
        self.allocator.set_quota(&req.role, &q);
        if q.is_empty() {
            self.registry.quotas.remove(&req.role);
        } else {
            self.registry.quotas.insert(req.role.clone(), q.to_string());
        }
        self.registry_dirty = true;
        Ok(())
    }
}
