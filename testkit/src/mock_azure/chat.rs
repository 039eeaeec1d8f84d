//! One chat request, from the gate and the key check through quota, faults, the model (or
//! a test's script) and latency to the JSON or streamed answer.

use super::*;

impl Mock {
    pub(super) async fn chat(
        self: Arc<Self>,
        flavor: Flavor,
        path_deployment: Option<String>,
        api_version: Option<String>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let flight = self.arrive();
        let mut response = self
            .clone()
            .serve(flavor, path_deployment, api_version, &headers, body, flight)
            .await;
        let n = self.arrivals.fetch_add(1, Ordering::Relaxed);
        let request_id = format!(
            "{:016x}{:016x}",
            splitmix64(self.config.seed ^ n),
            splitmix64(n)
        );
        set_header(response.headers_mut(), "apim-request-id", &request_id);
        set_header(response.headers_mut(), "x-request-id", &request_id);
        response
    }

    pub(super) async fn serve(
        self: Arc<Self>,
        flavor: Flavor,
        path_deployment: Option<String>,
        api_version: Option<String>,
        headers: &HeaderMap,
        body: Bytes,
        flight: Flight,
    ) -> Response {
        if !*self.gate.borrow() {
            let mut gate = self.gate.subscribe();
            tokio::select! {
                _ = gate.wait_for(|open| *open) => {}
                () = self.shutdown.cancelled() => {}
            }
        }
        if self.script.is_some()
            && let Ok(raw) = serde_json::from_slice::<Value>(&body)
        {
            self.requests
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(raw);
        }
        if !self.key_ok(headers) {
            self.count(|s| s.auth_failures += 1);
            flight.finish();
            return json_response(StatusCode::UNAUTHORIZED, &wire::unauthorized(&flavor));
        }
        if path_deployment.is_some() {
            match api_version.as_deref() {
                None | Some("") => {
                    self.count(|s| s.bad_requests += 1);
                    flight.finish();
                    return json_response(StatusCode::NOT_FOUND, &wire::resource_not_found());
                }
                Some(version) if !wire::plausible_api_version(version) => {
                    self.count(|s| s.bad_requests += 1);
                    flight.finish();
                    return json_response(
                        StatusCode::BAD_REQUEST,
                        &wire::unsupported_api_version(),
                    );
                }
                Some(_) => {}
            }
        }
        let parsed = match wire::parse_request(&body) {
            Ok(parsed) => parsed,
            Err(error) => {
                self.count(|s| s.bad_requests += 1);
                flight.finish();
                return json_response(StatusCode::BAD_REQUEST, &wire::bad_request(&flavor, &error));
            }
        };
        let model = match (&flavor, path_deployment, parsed.model.clone()) {
            (Flavor::AzureDated { .. }, Some(deployment), _) => deployment,
            (_, _, Some(model)) => model,
            (_, _, None) => {
                self.count(|s| s.bad_requests += 1);
                flight.finish();
                let error = wire::BodyError {
                    message: "you must provide a model parameter".into(),
                    param: Some("model"),
                };
                return json_response(StatusCode::BAD_REQUEST, &wire::bad_request(&flavor, &error));
            }
        };
        // An OpenAI-compatible server serves whatever model it is asked for.
        if flavor != Flavor::OpenAi && self.config.deployment.as_ref().is_some_and(|d| *d != model)
        {
            self.count(|s| s.bad_requests += 1);
            flight.finish();
            return json_response(StatusCode::NOT_FOUND, &wire::deployment_not_found());
        }

        let estimate = wire::estimate_tokens(&parsed.request);
        let admission = self
            .quota
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(Instant::now(), estimate);
        let (remaining_requests, remaining_tokens) = match admission {
            Admission::Admitted {
                remaining_requests,
                remaining_tokens,
                admitted_in_window,
            } => {
                self.count(|s| {
                    s.max_admitted_in_any_10s = s.max_admitted_in_any_10s.max(admitted_in_window)
                });
                (remaining_requests, remaining_tokens)
            }
            Admission::Throttled {
                limit,
                retry_after,
                remaining_requests,
                remaining_tokens,
            } => {
                self.count(|s| {
                    s.rate_limited += 1;
                    if limit == Limit::Tokens {
                        s.rate_limited_tokens += 1;
                    }
                });
                flight.finish();
                let millis = retry_after.as_millis().max(1);
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                let seconds = seconds.max(1);
                let mut response = json_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    &wire::rate_limited(&flavor, limit, seconds),
                );
                let headers = response.headers_mut();
                set_header(headers, "retry-after-ms", millis);
                set_header(headers, "retry-after", seconds);
                set_remaining(headers, remaining_requests, remaining_tokens);
                return response;
            }
        };

        let (fault_draw, malformed_draw) = self.draw();
        match self.fault(fault_draw) {
            Fault::Hang => {
                self.count(|s| s.hung += 1);
                // Held until the client gives up (this future is dropped) or the mock stops.
                self.shutdown.cancelled().await;
                flight.finish();
                return json_response(StatusCode::SERVICE_UNAVAILABLE, &wire::unavailable(&flavor));
            }
            Fault::ServerError => {
                self.count(|s| s.server_errors_500 += 1);
                flight.finish();
                return json_response(StatusCode::INTERNAL_SERVER_ERROR, &wire::server_error());
            }
            Fault::Unavailable => {
                self.count(|s| s.unavailable_503 += 1);
                flight.finish();
                return json_response(StatusCode::SERVICE_UNAVAILABLE, &wire::unavailable(&flavor));
            }
            Fault::None => {}
        }

        let action = match &self.script {
            Some(script) => script(&parsed.request),
            None => Action::Offline,
        };
        let mut answer: ChatResponse = match action {
            Action::Offline => self.model.complete(&parsed.request),
            Action::Say(message) => said(message),
            Action::Hold => {
                self.count(|s| s.hung += 1);
                self.shutdown.cancelled().await;
                flight.finish();
                return json_response(StatusCode::SERVICE_UNAVAILABLE, &wire::unavailable(&flavor));
            }
        };
        answer.model = model.clone();
        let mut malformed = false;
        if malformed_draw < self.config.malformed_rate
            && let ChatMessage::Assistant { tool_calls, .. } = &mut answer.message
            && !tool_calls.is_empty()
        {
            for call in tool_calls.iter_mut() {
                wire::cut_arguments(&mut call.function.arguments);
            }
            malformed = true;
        }
        let usage = answer.usage.unwrap_or_default();
        let n = self.answers.fetch_add(1, Ordering::Relaxed);
        let meta = wire::Meta {
            id: completion_id(self.config.seed, n),
            created: unix_now(),
            model,
            flavor,
        };

        if parsed.stream {
            let chunks = wire::chunks(&meta, &answer, parsed.include_usage);
            self.pause(Duration::from_millis(self.config.latency_ms))
                .await;
            self.count(|s| {
                s.answered_ok += 1;
                s.streamed += 1;
                s.malformed_tool_args += u64::from(malformed);
                record_answer(s, &answer);
            });
            let mut response = self.clone().stream(chunks, flight);
            set_remaining(response.headers_mut(), remaining_requests, remaining_tokens);
            return response;
        }

        self.pause(
            Duration::from_millis(self.config.latency_ms) + self.per_token(usage.completion_tokens),
        )
        .await;
        self.count(|s| {
            s.answered_ok += 1;
            s.malformed_tool_args += u64::from(malformed);
            record_answer(s, &answer);
        });
        flight.finish();
        let mut response = json_response(StatusCode::OK, &wire::completion(&meta, &answer));
        set_remaining(response.headers_mut(), remaining_requests, remaining_tokens);
        response
    }

    /// The chunks as an SSE body, each after its share of the per-token latency.
    pub(super) fn stream(self: Arc<Self>, chunks: Vec<wire::Chunk>, flight: Flight) -> Response {
        let events: Vec<(Duration, String)> = chunks
            .into_iter()
            .map(|chunk| (self.per_token(chunk.tokens), wire::sse(&chunk.data)))
            .chain(std::iter::once((Duration::ZERO, wire::DONE.to_owned())))
            .collect();
        let events = events.into_iter();
        let state = (events, Some(flight), self);
        let body = futures::stream::unfold(state, |(mut events, flight, mock)| async move {
            match events.next() {
                Some((delay, event)) => {
                    mock.pause(delay).await;
                    Some((
                        Ok::<Bytes, Infallible>(Bytes::from(event)),
                        (events, flight, mock),
                    ))
                }
                None => {
                    if let Some(flight) = flight {
                        flight.finish();
                    }
                    None
                }
            }
        });
        (
            [
                (header::CONTENT_TYPE, "text/event-stream; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(body),
        )
            .into_response()
    }
}

/// A scripted message as an answer (fixed small usage).
fn said(message: ChatMessage) -> ChatResponse {
    let finish_reason = match &message {
        ChatMessage::Assistant { tool_calls, .. } if !tool_calls.is_empty() => {
            FinishReason::ToolCalls
        }
        _ => FinishReason::Stop,
    };
    ChatResponse {
        model: String::new(),
        message,
        finish_reason,
        usage: Some(Usage {
            prompt_tokens: 10,
            completion_tokens: 5,
            total_tokens: 15,
        }),
        id: None,
        provider_time: Duration::ZERO,
    }
}

fn record_answer(stats: &mut MockStats, answer: &ChatResponse) {
    let usage = answer.usage.unwrap_or_default();
    stats.prompt_tokens += u64::from(usage.prompt_tokens);
    stats.completion_tokens += u64::from(usage.completion_tokens);
    if let ChatMessage::Assistant { tool_calls, .. } = &answer.message {
        for call in tool_calls {
            *stats
                .tool_calls_by_name
                .entry(call.function.name.clone())
                .or_default() += 1;
        }
    }
}

fn set_remaining(headers: &mut HeaderMap, requests: Option<u64>, tokens: Option<u64>) {
    if let Some(requests) = requests {
        set_header(headers, "x-ratelimit-remaining-requests", requests);
    }
    if let Some(tokens) = tokens {
        set_header(headers, "x-ratelimit-remaining-tokens", tokens);
    }
}

/// `chatcmpl-` and 29 letters and digits, unique per answer of one mock.
pub(super) fn completion_id(seed: u64, n: u64) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut id = String::from("chatcmpl-");
    let mut state = splitmix64(seed ^ 0x5bd1_e995) ^ n;
    for i in 0..29u64 {
        state = splitmix64(state.wrapping_add(i));
        id.push(char::from(
            ALPHABET[(state % ALPHABET.len() as u64) as usize],
        ));
    }
    id
}
