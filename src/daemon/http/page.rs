//! The web page for people: `GET /` and its assets under `/assets/`, plus the two small auth
//! endpoints the page signs in with (`GET /v1/auth/mode`, `GET /v1/auth/whoami`).
//!
//! The page is plain HTML, CSS and JavaScript in `web/`, embedded in the binary with
//! `include_str!`: no build step, no CDN, nothing fetched at run time. It talks only to this
//! daemon (same origin): the turn API (SSE), history and the memory endpoints.
//!
//! **Invariant:** every page response carries a strict Content-Security-Policy (everything
//! from `'self'` only, no inline script or style, no framing), `X-Content-Type-Options:
//! nosniff` and `Referrer-Policy: no-referrer`. The page builds its DOM with `textContent`
//! only, so stored memories can never become markup.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::auth::Caller;
use super::error::ApiError;
use crate::shared::api::{AuthMode, WhoAmI};

/// The page's Content-Security-Policy.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_str!("../../../web/index.html"),
};

/// What `/assets/{name}` serves; nothing else is reachable, so the name needs no path checks.
const ASSETS: [Asset; 3] = [
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../../web/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../../web/app.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_str!("../../../web/icon.svg"),
    },
];

/// `GET /`: the page.
pub async fn index() -> Response {
    serve(&INDEX)
}

/// `GET /assets/{name}`: the page's script, style sheet and icon.
pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => serve(asset),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such asset; the page is at /",
        )
        .into_response(),
    }
}

/// The headers every page response carries (see the module's invariant).
const PAGE_HEADERS: [(header::HeaderName, &str); 5] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    // The files change with the binary only; revalidating keeps an upgrade visible at once.
    (header::CACHE_CONTROL, "no-cache"),
];

fn serve(asset: &Asset) -> Response {
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    for (name, value) in PAGE_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// `GET /v1/auth/mode`: `{"mode": "token"}` when API tokens are configured (sign in with
/// one), `{"mode": "loopback"}` when none are (local clients only; they name the user).
/// It reveals no token and no user, so it needs no authentication.
pub async fn auth_mode(State(state): State<ApiState>) -> axum::Json<AuthMode> {
    let mode = if state.auth.is_open() {
        "loopback"
    } else {
        "token"
    };
    axum::Json(AuthMode { mode: mode.into() })
}

/// `GET /v1/auth/whoami`: who the caller's credentials make it. `{"caller": "user",
/// "user_id": "alice"}` for a user token, `{"caller": "service"}` for a service token (it may
/// act for any user), `{"caller": "local"}` in loopback mode; 401 for a missing or unknown
/// token.
pub async fn whoami(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<axum::Json<WhoAmI>, ApiError> {
    let (caller, user_id) = match state.auth.caller(peer, &headers)? {
        Caller::User(user) => ("user", Some(user.to_string())),
        Caller::Service => ("service", None),
        Caller::Local => ("local", None),
    };
    Ok(axum::Json(WhoAmI {
        caller: caller.into(),
        user_id,
    }))
}
