//! The mock's embeddings endpoints: `POST /openai/deployments/{deployment}/embeddings`
//! (dated Azure API: `api-version` required), `POST /openai/v1/embeddings` and
//! `POST /v1/embeddings` (OpenAI-compatible). Same key check as chat; the chat fault
//! generator's 500/503 apply (hangs are answered 503), so clients' retries can be tested.
//!
//! Vectors are deterministic and carry some meaning for tests of the wire path: each word
//! (lower-cased letters and digits) is hashed to a few signed positions of the vector (feature
//! hashing), the sum is L2-normalised. Two texts sharing words are close; the same text always
//! gives the same vector. `dimensions` in the body picks the size (default 1536, as
//! text-embedding-3-small). Quality comes from the local model, not from here.

use super::*;

/// Default vector size (text-embedding-3-small's).
const DEFAULT_DIMENSIONS: usize = 1536;
/// Largest `dimensions` accepted.
const MAX_DIMENSIONS: usize = 4096;
/// Most inputs in one request (OpenAI's limit).
const MAX_INPUTS: usize = 2048;

#[derive(Deserialize)]
struct EmbeddingsBody {
    input: Input,
    model: Option<String>,
    dimensions: Option<usize>,
    encoding_format: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

/// The dated Azure API (`api-version` required); the route handler is the chat one's
/// (`server.rs`), which sends embeddings requests here.
pub(super) async fn azure_dated(
    mock: &Arc<Mock>,
    deployment: String,
    api_version: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if api_version.is_none_or(str::is_empty) {
        mock.count(|s| s.bad_requests += 1);
        return json_response(StatusCode::NOT_FOUND, &wire::resource_not_found());
    }
    answer(mock, Some(deployment), headers, body).await
}

pub(super) async fn openai(
    State(mock): State<Arc<Mock>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    answer(&mock, None, &headers, &body).await
}

async fn answer(
    mock: &Arc<Mock>,
    deployment: Option<String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    mock.count(|s| s.embedding_requests += 1);
    if !mock.key_ok(headers) {
        mock.count(|s| s.auth_failures += 1);
        return json_response(
            StatusCode::UNAUTHORIZED,
            &wire::unauthorized(&Flavor::OpenAi),
        );
    }
    let bad = |message: String| {
        mock.count(|s| s.bad_requests += 1);
        json_response(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({ "error": {
                "message": message, "type": "invalid_request_error", "param": "input", "code": null
            }}),
        )
    };
    let parsed: EmbeddingsBody = match serde_json::from_slice(body) {
        Ok(parsed) => parsed,
        Err(error) => return bad(format!("invalid body: {error}")),
    };
    if parsed
        .encoding_format
        .as_deref()
        .is_some_and(|f| f != "float")
    {
        return bad("this mock answers encoding_format \"float\" only".into());
    }
    let inputs = match parsed.input {
        Input::One(text) => vec![text],
        Input::Many(texts) => texts,
    };
    if inputs.is_empty() || inputs.len() > MAX_INPUTS || inputs.iter().any(String::is_empty) {
        return bad(format!("input must be 1 to {MAX_INPUTS} non-empty strings"));
    }
    let dimensions = parsed.dimensions.unwrap_or(DEFAULT_DIMENSIONS);
    if !(1..=MAX_DIMENSIONS).contains(&dimensions) {
        return bad(format!("dimensions must be 1 to {MAX_DIMENSIONS}"));
    }
    let model = deployment
        .or(parsed.model)
        .unwrap_or_else(|| "text-embedding-3-small".into());
    let (draw, _) = mock.draw();
    match mock.fault(draw) {
        Fault::ServerError => {
            mock.count(|s| s.server_errors_500 += 1);
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({ "error": { "code": "InternalServerError", "message": "injected failure" } }),
            );
        }
        Fault::Unavailable | Fault::Hang => {
            mock.count(|s| s.unavailable_503 += 1);
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "error": { "code": "ServiceUnavailable", "message": "injected failure" } }),
            );
        }
        Fault::None => {}
    }
    mock.pause(Duration::from_millis(mock.config.latency_ms))
        .await;
    let mut tokens = 0u64;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let (vector, words) = vectorize(text, dimensions);
            tokens += words;
            serde_json::json!({ "object": "embedding", "index": index, "embedding": vector })
        })
        .collect();
    mock.count(|s| {
        s.embedding_inputs += inputs.len() as u64;
        s.prompt_tokens += tokens;
    });
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
        }),
    )
}

/// The deterministic vector of `text`, and its word count.
pub fn vectorize(text: &str, dimensions: usize) -> (Vec<f32>, u64) {
    let mut vector = vec![0.0f32; dimensions];
    let mut words = 0;
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        words += 1;
        let word = word.to_lowercase();
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for byte in word.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        for k in 0..4u64 {
            let h = splitmix64(hash ^ k);
            let slot = (h % dimensions as u64) as usize;
            vector[slot] += if h >> 63 == 0 { 1.0 } else { -1.0 };
        }
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    (vector, words)
}
