//! A framework's API port: bound (with its TLS material checked) before the framework starts, then
//! served with an axum router until told to stop.

use crate::config::FrameworkConfig;

/// Why a framework's API could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ApiSetupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// A TLS flag's value is unusable; the message names the flag.
    #[error("{0}")]
    Tls(String),
}

/// A framework's API port, bound but not serving yet: its address, the address standbys send
/// clients to, and its TLS material (checked at start, not at the first connection).
pub struct BoundApi {
    pub address: std::net::SocketAddr,
    /// `host:port` as clients and other instances reach it.
    pub advertised: String,
    /// `https` when the port speaks TLS, else `http`.
    pub scheme: &'static str,
    /// TLS to the master (and to other instances), when `--tls-ca` is given.
    pub client_tls: Option<agora_net::tls::ClientTls>,
    listener: agora_net::tls::Listener,
}

impl BoundApi {
    /// Binds `config.bind` and loads the TLS files.
    ///
    /// # Errors
    /// [`ApiSetupError`] naming the address or the flag.
    pub async fn bind(config: &FrameworkConfig) -> Result<BoundApi, ApiSetupError> {
        let tls_error = |e: agora_net::tls::TlsError| ApiSetupError::Tls(e.to_string());
        let (server_tls, client_tls) = match &config.issued {
            Some(c) => (
                Some(c.server_config().map_err(tls_error)?),
                Some(c.client.get()),
            ),
            None => (
                config.tls.server_config().map_err(tls_error)?,
                config.tls.client().map_err(tls_error)?,
            ),
        };
        let bind_error = |source| ApiSetupError::Bind {
            addr: config.bind.to_string(),
            source,
        };
        let tcp = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(bind_error)?;
        let address = tcp.local_addr().map_err(bind_error)?;
        let advertised = config.advertise.clone().unwrap_or_else(|| {
            if address.ip().is_unspecified() {
                format!("127.0.0.1:{}", address.port())
            } else {
                address.to_string()
            }
        });
        let scheme = agora_net::tls::scheme(server_tls.is_some());
        let listener = agora_net::tls::Listener::new(tcp, server_tls).map_err(bind_error)?;
        Ok(BoundApi {
            address,
            advertised,
            scheme,
            client_tls,
            listener,
        })
    }

    /// Serves `router` until `stop` turns true.
    pub fn serve(
        self,
        router: axum::Router,
        mut stop: tokio::sync::watch::Receiver<bool>,
        what: &'static str,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let serve = agora_net::tls::serve(self.listener, router, async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "{what} API stopped");
            }
        })
    }
}
