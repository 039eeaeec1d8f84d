//! The daemon's edge, before any handler: the shared origin policy (browser and proxy rules,
//! see [`crate::shared::edge`]), then the caller's token for `/v1/` routes, both before the
//! body is read. On the OpenAI-compatible routes its refusals take OpenAI's error shape.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::ApiState;
use super::error::ApiError;
use super::openai;

/// The daemon's edge: the shared origin policy, then the caller's token for `/v1/` routes.
// A refusal is an axum `Response`, built only for refused requests: not worth boxing.
#[allow(clippy::result_large_err)]
pub(super) async fn edge(
    state: ApiState,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let openai_path = is_openai_path(request.uri().path());
    let response =
        crate::shared::edge::guard::enforce_with(&state.policy, request, next, |request| {
            let path = request.uri().path();
            // The page's sign-in asks which mode the daemon is in before it has a token.
            if !path.starts_with("/v1/") || path == "/v1/auth/mode" {
                return Ok(());
            }
            let openai = is_openai_path(path);
            let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
            else {
                return Err(super::no_peer().into_response());
            };
            state
                .auth
                .caller(*peer, request.headers())
                .map(|_| ())
                .map_err(|error| {
                    if openai {
                        openai::OpenAiError::from_api(error).into_response()
                    } else {
                        error.into_response()
                    }
                })
        })
        .await;
    if openai_path && response.status().as_u16() >= 400 {
        return edge_error_as_openai(response).await;
    }
    response
}

/// The OpenAI-compatible routes, whose errors take OpenAI's body shape.
fn is_openai_path(path: &str) -> bool {
    path == "/v1/chat/completions" || path == "/v1/models" || path.starts_with("/v1/models/")
}

/// The edge's own refusals (403, 408, 413, 415) in OpenAI's error shape, for OpenAI clients.
/// Answers already in that shape (the endpoint's own) pass unchanged.
async fn edge_error_as_openai(response: Response) -> Response {
    const EDGE_CODES: &[&str] = &[
        "body_too_large",
        "request_timeout",
        "invalid_body",
        "unsupported_media_type",
        "forbidden_host",
        "forbidden_origin",
        "proxied_without_tokens",
    ];
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let native = serde_json::from_slice::<Refusal>(&bytes)
        .ok()
        .filter(|refusal| refusal.error.kind.is_none())
        .and_then(|refusal| {
            let code = EDGE_CODES.iter().find(|c| **c == refusal.error.code)?;
            Some((*code, refusal.error.message))
        });
    match native {
        Some((code, message)) => {
            let mut converted =
                openai::OpenAiError::from_api(ApiError::new(parts.status, code, message))
                    .into_response();
            for name in [header::CONNECTION, header::RETRY_AFTER] {
                if let Some(value) = parts.headers.get(&name) {
                    converted.headers_mut().insert(name, value.clone());
                }
            }
            converted
        }
        None => Response::from_parts(parts, axum::body::Body::from(bytes)),
    }
}

/// An error body as the edge wrote it: the native `{"error": {"code", "message"}}`
/// ([`crate::shared::api::ErrorBody`]), or, with a `type`, already OpenAI's.
#[derive(Deserialize)]
struct Refusal {
    error: RefusalDetail,
}

#[derive(Deserialize)]
struct RefusalDetail {
    code: String,
    message: String,
    #[serde(rename = "type", default)]
    kind: Option<serde_json::Value>,
}
