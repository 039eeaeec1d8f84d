//! The running mock: binding, the routes, the handle tests and the harness hold
//! ([`MockServer`]), and the route handlers.

use axum::extract::MatchedPath;

use super::*;

/// A running mock. Dropping it stops the server too (without waiting).
pub struct MockServer {
    addr: SocketAddr,
    mock: Arc<Mock>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl MockServer {
    /// Binds `host:port` and serves until [`MockServer::shutdown`] (or drop).
    pub async fn start(config: MockConfig) -> std::io::Result<MockServer> {
        Self::start_with(config, None).await
    }

    /// Like [`MockServer::start`], with `script` in place of the offline model.
    pub async fn start_scripted(config: MockConfig, script: Script) -> std::io::Result<MockServer> {
        Self::start_with(config, Some(script)).await
    }

    async fn start_with(config: MockConfig, script: Option<Script>) -> std::io::Result<MockServer> {
        config
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::new(config.host, config.port)).await?;
        let addr = listener.local_addr()?;
        let now = Instant::now();
        let mock = Arc::new(Mock {
            model: OfflineModel::new(),
            quota: Mutex::new(Quota::new(config.rpm, config.tpm, now)),
            counters: Mutex::new(Counters {
                stats: MockStats::default(),
                epoch: now,
            }),
            draws: AtomicU64::new(0),
            answers: AtomicU64::new(0),
            arrivals: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
            gate: tokio::sync::watch::Sender::new(true),
            script,
            requests: Mutex::new(Vec::new()),
            config,
        });
        let app = Router::new()
            .route(
                "/openai/deployments/{deployment}/chat/completions",
                post(azure_dated),
            )
            .route("/openai/v1/chat/completions", post(azure_v1))
            .route("/v1/chat/completions", post(openai))
            .route(
                "/openai/deployments/{deployment}/embeddings",
                post(azure_dated),
            )
            .route("/openai/v1/embeddings", post(embeddings::openai))
            .route("/v1/embeddings", post(embeddings::openai))
            .route("/stats", get(stats))
            .route("/stats/reset", post(reset_stats))
            .route("/healthz", get(|| async { "ok" }))
            .fallback(|| async {
                json_response(StatusCode::NOT_FOUND, &wire::resource_not_found())
            })
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(mock.clone());
        let stop = mock.shutdown.clone();
        let task = tokio::spawn(async move {
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        Ok(MockServer {
            addr,
            mock,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT`: the Azure endpoint (or, with `/v1`, the OpenAI base URL).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The counters so far.
    pub fn stats(&self) -> MockStats {
        self.mock.counters().stats.clone()
    }

    /// Zeroes the counters (as `POST /stats/reset`).
    pub fn reset_stats(&self) {
        self.mock.reset();
    }

    /// Holds every chat request from now on (after counting it) until [`MockServer::open_gate`].
    pub fn close_gate(&self) {
        self.mock.gate.send_replace(false);
    }

    /// Lets held and later chat requests go on.
    pub fn open_gate(&self) {
        self.mock.gate.send_replace(true);
    }

    /// The body of every chat request a scripted mock received, in arrival order (empty for
    /// a mock without a script).
    pub fn requests(&self) -> Vec<Value> {
        self.mock
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The OpenAI-compatible base URL (`ENDPOINT/v1`).
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.endpoint())
    }

    /// The environment that points a `memento serve` child at this mock as an
    /// OpenAI-compatible provider (the key is [`MockConfig::api_key`]).
    pub fn openai_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("MEMENTO_LLM__PROVIDER", "openai".to_owned()),
            ("MEMENTO_LLM__BASE_URL", self.openai_base_url()),
            ("MEMENTO_LLM__MODEL", "mock".to_owned()),
            ("MEMENTO_LLM__API_KEY", self.mock.config.api_key.clone()),
        ]
    }

    /// Stops accepting, ends hung requests and waits (a few seconds at most) for open
    /// connections to finish.
    pub async fn shutdown(mut self) {
        self.mock.shutdown.cancel();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.mock.shutdown.cancel();
    }
}

/// The dated Azure API, chat completions and embeddings (told apart by the route).
async fn azure_dated(
    State(mock): State<Arc<Mock>>,
    route: MatchedPath,
    Path(deployment): Path<String>,
    Query(query): Query<VersionQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if route.as_str().ends_with("/embeddings") {
        let version = query.api_version.as_deref();
        return embeddings::azure_dated(&mock, deployment, version, &headers, &body).await;
    }
    let flavor = Flavor::AzureDated {
        api_version: query.api_version.clone().unwrap_or_default(),
    };
    mock.clone()
        .chat(flavor, Some(deployment), query.api_version, headers, body)
        .await
}

async fn azure_v1(State(mock): State<Arc<Mock>>, headers: HeaderMap, body: Bytes) -> Response {
    mock.clone()
        .chat(Flavor::AzureV1, None, None, headers, body)
        .await
}

async fn openai(State(mock): State<Arc<Mock>>, headers: HeaderMap, body: Bytes) -> Response {
    mock.clone()
        .chat(Flavor::OpenAi, None, None, headers, body)
        .await
}

async fn stats(State(mock): State<Arc<Mock>>) -> axum::Json<MockStats> {
    axum::Json(mock.counters().stats.clone())
}

async fn reset_stats(State(mock): State<Arc<Mock>>) -> StatusCode {
    mock.reset();
    StatusCode::NO_CONTENT
}
