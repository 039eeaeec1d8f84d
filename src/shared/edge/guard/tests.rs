use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    map
}

fn status(result: Result<Verdict, Response>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(response) => response.status().as_u16(),
    }
}

fn body_status(policy: &OriginPolicy, method: &Method, headers: &HeaderMap) -> u16 {
    match policy.check(method, headers) {
        Err(response) => response.status().as_u16(),
        Ok(_) => match policy.check_body(method, headers) {
            Ok(()) => 200,
            Err(response) => response.status().as_u16(),
        },
    }
}

fn default_policy() -> OriginPolicy {
    OriginPolicy::new("server", &[], &[], true)
}

#[test]
fn host_and_origin_rules() {
    let policy = default_policy();
    let ok: &[&[(&str, &str)]] = &[
        &[("host", "127.0.0.1:8000")],
        &[("host", "localhost")],
        &[("host", "[::1]:8000")],
        &[
            ("host", "localhost:8000"),
            ("origin", "http://localhost:6274"),
        ],
        &[
            ("host", "LOCALHOST:8080"),
            ("origin", "http://127.0.0.1:8080/"),
        ],
    ];
    for case in ok {
        assert_eq!(
            status(policy.check(&Method::GET, &headers(case))),
            200,
            "{case:?}"
        );
    }
    let bad: &[&[(&str, &str)]] = &[
        &[],
        &[("host", "evil.example:8080")],
        &[("host", "127.0.0.1.evil.example")],
        &[("host", "localhost.evil.example:8080")],
        &[
            ("host", "localhost:8080"),
            ("origin", "http://evil.example"),
        ],
        &[("host", "localhost:8080"), ("origin", "null")],
        &[
            ("host", "localhost:8080"),
            ("origin", "http://localhost.evil.example"),
        ],
        &[("host", "localhost:8080"), ("origin", "file://")],
    ];
    for case in bad {
        assert_eq!(
            status(policy.check(&Method::GET, &headers(case))),
            403,
            "{case:?}"
        );
    }
}

#[test]
fn the_issue_curl_pair_is_refused() {
    let policy = default_policy();
    let post = headers(&[
        ("host", "evil.example:8080"),
        ("origin", "http://evil.example"),
        ("content-type", "text/plain"),
    ]);
    assert_eq!(status(policy.check(&Method::POST, &post)), 403);
    let rebinding = headers(&[("host", "evil.example")]);
    assert_eq!(status(policy.check(&Method::GET, &rebinding)), 403);
}

#[test]
fn bodies_must_be_json() {
    let policy = default_policy();
    for (content_type, expected) in [
        ("application/json", 200),
        ("application/json; charset=utf-8", 200),
        ("Application/JSON", 200),
        ("application/x-ndjson", 200),
        ("application/merge-patch+json", 200),
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
        ("application/jsonp", 415),
    ] {
        let case = headers(&[("host", "localhost"), ("content-type", content_type)]);
        assert_eq!(
            body_status(&policy, &Method::POST, &case),
            expected,
            "{content_type}"
        );
    }
    let none = headers(&[("host", "localhost")]);
    assert_eq!(body_status(&policy, &Method::POST, &none), 415);
    assert_eq!(body_status(&policy, &Method::DELETE, &none), 200);
    assert_eq!(body_status(&policy, &Method::GET, &none), 200);
}

#[test]
fn proxy_headers_are_refused_only_in_no_token_mode() {
    for name in [
        "forwarded",
        "x-forwarded-for",
        "x-real-ip",
        "X-Forwarded-For",
    ] {
        let case = headers(&[("host", "localhost"), (name, "203.0.113.9")]);
        let Err(response) = default_policy().check(&Method::GET, &case) else {
            panic!("{name} accepted");
        };
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let with_tokens = OriginPolicy::new("server", &[], &[], false);
        assert_eq!(
            status(with_tokens.check(&Method::GET, &case)),
            200,
            "{name}"
        );
    }
}

#[test]
fn listed_origins_get_exact_cors_and_preflight() {
    let policy = OriginPolicy::new(
        "server",
        &["memento.example.com".into()],
        &["https://app.example.com/".into()],
        false,
    );
    let simple = headers(&[
        ("host", "memento.example.com"),
        ("origin", "https://app.example.com"),
    ]);
    assert_eq!(
        policy.check(&Method::GET, &simple).ok(),
        Some(Verdict::Serve {
            cors_origin: Some("https://app.example.com".into())
        })
    );
    let preflight = headers(&[
        ("host", "memento.example.com"),
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "POST"),
    ]);
    assert_eq!(
        policy.check(&Method::OPTIONS, &preflight).ok(),
        Some(Verdict::Preflight {
            origin: "https://app.example.com".into()
        })
    );
    // Loopback origins are accepted but get no CORS headers.
    let local = headers(&[("host", "localhost"), ("origin", "http://localhost:3000")]);
    assert_eq!(
        policy.check(&Method::GET, &local).ok(),
        Some(Verdict::Serve { cors_origin: None })
    );
    let other = headers(&[
        ("host", "memento.example.com"),
        ("origin", "https://app.example.com.evil.example"),
    ]);
    assert_eq!(status(policy.check(&Method::GET, &other)), 403);
}

#[test]
fn wildcards() {
    let policy = OriginPolicy::new("mcp_server", &["*".into()], &["*".into()], false);
    let case = headers(&[
        ("host", "anything.example"),
        ("origin", "https://x.example"),
    ]);
    assert_eq!(
        policy.check(&Method::GET, &case).ok(),
        Some(Verdict::Serve { cors_origin: None })
    );
    assert!(policy.allowed_hosts().is_none());
}
