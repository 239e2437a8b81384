//! Operations routes and the catch-all answers.

use std::any::Any;

use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use sessiond_core::error::codes;
use sessiond_core::{Error, ErrorKind};
use utoipa::ToSchema;

use crate::app::App;
use crate::error::ApiError;

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// The process is up. Also the constant route the benchmark uses as its HTTP ceiling.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Process up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The store answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Store reachable", body = Health),
              (status = 503, description = "Store unreachable", body = crate::error::ErrorBody)))]
pub async fn readyz(State(app): State<App>) -> Result<Json<Health>, ApiError> {
    app.store.ping().await?;
    Ok(Json(Health { status: "ready" }))
}

/// Prometheus text exposition: request counts and latency histograms per route, sessions created.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(app): State<App>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::json(),
    )
}

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError(Error::not_found(
        codes::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    ))
}

pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError(Error::new(
        ErrorKind::MethodNotAllowed,
        codes::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    ))
}

/// Turns a panic in a handler into a 500 in the native envelope (the panic itself is logged).
pub fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "handler panicked");
    let mut resp = ApiError(Error::internal(detail.to_owned())).into_response();
    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    resp
}
