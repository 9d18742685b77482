//! Offer etiquette: suppress offers while nothing waits, revive when work arrives. The decision
//! is pure ([`OfferGate::decide`]); [`OfferGate::apply`] makes the SDK calls.

use agora_sdk::Framework;

/// What the gate asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateAction {
    Revive,
    Suppress,
}

/// Whether offers are suppressed, and whether some were declined (with a filter) since the last
/// revive: new work must then revive, or it would wait out the filters.
#[derive(Debug, Default)]
pub struct OfferGate {
    suppressed: bool,
    declined_since_revive: bool,
}

impl OfferGate {
    /// Revive when work waits and offers are suppressed, or when `new_work` (an API call) arrived
    /// after offers were declined with filters; suppress when nothing waits.
    pub fn decide(&self, wants: bool, new_work: bool) -> Option<GateAction> {
        if wants && (self.suppressed || (new_work && self.declined_since_revive)) {
            Some(GateAction::Revive)
        } else if !wants && !self.suppressed {
            Some(GateAction::Suppress)
        } else {
            None
        }
    }

    /// Offers were declined with a filter.
    pub fn declined(&mut self) {
        self.declined_since_revive = true;
    }

    /// A new subscription: the master offers again.
    pub fn subscribed(&mut self) {
        self.suppressed = false;
    }

    /// Decides and makes the call; the state changes only when the master took it.
    pub async fn apply(&mut self, fw: &Framework, wants: bool, new_work: bool) {
        match self.decide(wants, new_work) {
            Some(GateAction::Revive) => {
                if fw.revive(&[]).await.is_ok() {
                    self.suppressed = false;
                    self.declined_since_revive = false;
                }
            }
            Some(GateAction::Suppress) => {
                if fw.suppress(&[]).await.is_ok() {
                    self.suppressed = true;
                }
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_revives_for_new_work_after_declines_and_suppresses_when_idle() {
        let mut g = OfferGate::default();
        assert_eq!(g.decide(false, false), Some(GateAction::Suppress));
        assert_eq!(g.decide(true, false), None);
        assert_eq!(g.decide(true, true), None);
        g.declined();
        assert_eq!(g.decide(true, false), None);
        assert_eq!(g.decide(true, true), Some(GateAction::Revive));
        g.suppressed = true;
        assert_eq!(g.decide(true, false), Some(GateAction::Revive));
        assert_eq!(g.decide(false, false), None);
        g.subscribed();
        assert_eq!(g.decide(false, false), Some(GateAction::Suppress));
    }
}
