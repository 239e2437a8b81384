//! The application state, the router with its layers, and `serve`: the one entry point used by
//! the binary and by every test.

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::Router;
use sessiond_core::limits::JSON_BODY_DEFAULT_BYTES;
use sessiond_core::Error;
use sessiond_store::{Hub, Store};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::{Authenticator, TokenSigner};
use crate::service::Services;
use crate::{api, telemetry};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct AppOptions {
    /// The admin key's secret, when one is configured.
    pub admin_key: Option<String>,
    /// Whether requests without credentials are refused (false: open mode).
    pub auth_required: bool,
    pub max_body_bytes: usize,
    /// The secret that signs session tokens; a random one (valid for this process only) when
    /// unset.
    pub token_secret: Option<Vec<u8>>,
    /// How far back a `reuse: true` job may find an earlier success, in seconds.
    pub job_reuse_window_seconds: i64,
    /// Largest document upload, in bytes.
    pub max_upload_bytes: usize,
    /// How many documents the server processes at once (0: none on this node).
    pub document_processors: usize,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            admin_key: None,
            auth_required: false,
            max_body_bytes: JSON_BODY_DEFAULT_BYTES,
            token_secret: None,
            job_reuse_window_seconds: sessiond_core::limits::JOB_REUSE_WINDOW_DEFAULT_SECONDS,
            max_upload_bytes: sessiond_core::limits::UPLOAD_DEFAULT_BYTES,
            document_processors: 2,
        }
    }
}

pub struct AppInner {
    pub store: Arc<dyn Store>,
    pub services: Services,
    pub auth: Authenticator,
    pub options: AppOptions,
    pub hub: Arc<Hub>,
    /// Cancelled when the server shuts down: live streams and long-polls end.
    pub shutdown: CancellationToken,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

/// Shared state of one server. Cheap to clone.
#[derive(Clone)]
pub struct App(Arc<AppInner>);

impl Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl App {
    pub async fn new(store: Arc<dyn Store>, options: AppOptions) -> Result<App, Error> {
        Self::with_hub(store, Hub::new(), options).await
    }

    /// Like [`App::new`] with a hub the store also feeds (multi-node backends).
    pub async fn with_hub(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        options: AppOptions,
    ) -> Result<App, Error> {
        let shutdown = CancellationToken::new();
        let secret = match &options.token_secret {
            Some(s) => s.clone(),
            None => {
                let mut s = vec![0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rng(), &mut s);
                s
            }
        };
        let services = Services::new(
            store.clone(),
            hub.clone(),
            shutdown.clone(),
            options.job_reuse_window_seconds,
            &secret,
        );
        services.accounts.ensure_default().await?;
        services.jobs.spawn_sweeper();
        services
            .documents
            .spawn_processors(options.document_processors);
        let auth = Authenticator::new(
            store.clone(),
            options.admin_key.as_deref(),
            options.auth_required,
            TokenSigner::new(&secret),
        );
        Ok(App(Arc::new(AppInner {
            store,
            services,
            auth,
            options,
            hub,
            shutdown,
            metrics: telemetry::prometheus(),
        })))
    }

    pub fn router(&self) -> Router {
        let request_id = HeaderName::from_static("x-request-id");
        Router::new()
            .merge(api::router())
            .merge(crate::compat::recoupable::router())
            .merge(crate::compat::trigger::router())
            .merge(crate::compat::midpilot::router())
            .fallback(api::ops::not_found)
            .method_not_allowed_fallback(api::ops::method_not_allowed)
            .layer(DefaultBodyLimit::max(self.options.max_body_bytes))
            .layer(axum::middleware::from_fn(telemetry::track))
            .layer(CatchPanicLayer::custom(api::ops::panic_response))
            .layer(
                TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::debug_span!("request", method = %req.method(), uri = %req.uri(), request_id = id)
                }),
            )
            .layer(PropagateRequestIdLayer::new(request_id.clone()))
            .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
            .with_state(self.clone())
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, lets in-flight requests finish (for at
/// most `drain` after the signal), then closes the store.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = app.router();
    let token = app.shutdown.clone();
    // Each SSE event is a small write. With Nagle's algorithm one written while an earlier one
    // is unacknowledged waits for that ACK, which a receiver that never sends may delay.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    // `into_make_service` finishes the router once; serving the `Router` itself would rebuild
    // its route table for every connection (tens of KiB each, held as long as an SSE stream).
    let result = axum::serve(listener, router.into_make_service())
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Live streams would otherwise hold the graceful shutdown open.
            token.cancel();
        })
        .await;
    app.store.shutdown().await;
    result
}

/// How long `serve` waits for in-flight requests after a shutdown signal (used by the binary).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
