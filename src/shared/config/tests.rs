use super::*;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn shipped_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_FILE)
}

#[test]
fn shipped_file_equals_defaults() {
    let config = load(Some(&shipped_file()), &env(&[])).unwrap();
    assert_eq!(config, Config::default());
}

#[test]
fn env_overrides_file_and_parses_types() {
    let config = load(
        Some(&shipped_file()),
        &env(&[
            ("MEMENTO_MCP_SERVER__PORT", "9001"),
            (
                "MEMENTO_MCP_SERVER__ALLOWED_HOSTS",
                "[\"memento.internal\"]",
            ),
            ("MEMENTO_STORAGE__DATA_DIR", "/tmp/memento data"),
            ("MEMENTO_MCP_SERVER__SESSION_IDLE_TIMEOUT", "90s"),
            ("UNRELATED", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(config.mcp_server.port, 9001);
    assert_eq!(config.mcp_server.allowed_hosts, vec!["memento.internal"]);
    assert_eq!(config.storage.data_dir, PathBuf::from("/tmp/memento data"));
    assert_eq!(
        config.mcp_server.session_idle_timeout,
        Duration::from_secs(90)
    );
}

#[test]
fn unknown_keys_and_bad_types_are_errors() {
    let err = load(None, &env(&[("MEMENTO_MCP_SERVER__PROT", "1")])).unwrap_err();
    assert!(err.to_string().contains("prot"), "{err}");
    let err = load(None, &env(&[("MEMENTO_MCP_SERVER__PORT", "eighty")])).unwrap_err();
    assert!(matches!(err, ConfigError::Invalid(_)), "{err}");
    let err = load(None, &env(&[("MEMENTO_NOPE__X", "1")])).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn storage_sync_is_full_unless_set_to_normal() {
    assert_eq!(
        load(None, &env(&[])).unwrap().storage.sync,
        StorageSync::Full
    );
    let config = load(None, &env(&[("MEMENTO_STORAGE__SYNC", "normal")])).unwrap();
    assert_eq!(config.storage.sync, StorageSync::Normal);
    let err = load(None, &env(&[("MEMENTO_STORAGE__SYNC", "fast")])).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("full") && message.contains("normal"),
        "{message}"
    );
}

#[test]
fn missing_named_file_is_an_error() {
    let err = load(Some(Path::new("/nonexistent/memento.toml")), &env(&[])).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
}

#[test]
fn mcp_token_variable_sets_the_token() {
    let config = load(None, &env(&[(ENV_MCP_TOKEN, "s3cret-token")])).unwrap();
    assert_eq!(config.mcp_server.token.as_deref(), Some("s3cret-token"));
}

#[test]
fn non_loopback_bind_needs_token_or_insecure() {
    let mut config = Config::default();
    config.mcp_server.host = "0.0.0.0".parse().unwrap();
    assert!(config.validate().is_err());
    config.mcp_server.insecure = true;
    assert!(config.validate().is_ok());
    config.mcp_server.insecure = false;
    config.mcp_server.token = Some("long-enough-token".into());
    assert!(config.validate().is_ok());
}

#[test]
fn azure_variables_switch_to_azure() {
    let config = load(
        None,
        &env(&[
            (ENV_AZURE_ENDPOINT, "https://res.openai.azure.com"),
            (ENV_AZURE_API_KEY, "azure-key"),
            (ENV_AZURE_DEPLOYMENT, "gpt-4o"),
        ]),
    )
    .unwrap();
    assert_eq!(config.llm.provider, crate::daemon::llm::Provider::Azure);
    assert_eq!(config.llm.deployment.as_deref(), Some("gpt-4o"));
    assert_eq!(config.llm.api_version, "2024-10-21");
    assert!(config.validate().is_ok());
    // Without a key it stays offline.
    let config = load(
        None,
        &env(&[(ENV_AZURE_ENDPOINT, "https://res.openai.azure.com")]),
    )
    .unwrap();
    assert_eq!(config.llm.provider, crate::daemon::llm::Provider::Offline);
    // An explicit provider wins.
    let config = load(
        None,
        &env(&[
            (ENV_AZURE_ENDPOINT, "https://res.openai.azure.com"),
            (ENV_AZURE_API_KEY, "azure-key"),
            ("MEMENTO_LLM__PROVIDER", "offline"),
        ]),
    )
    .unwrap();
    assert_eq!(config.llm.provider, crate::daemon::llm::Provider::Offline);
}

/// Issue 13, item 7: a provider chosen in the config file is kept, whatever the
/// `AZURE_OPENAI_*` variables say (they still fill in the Azure settings).
#[test]
fn a_provider_chosen_in_the_file_wins_over_azure_variables() {
    let dir = tempfile::tempdir().unwrap();
    let azure = [
        (ENV_AZURE_ENDPOINT, "https://res.openai.azure.com"),
        (ENV_AZURE_API_KEY, "azure-key"),
    ];
    for (provider, expected) in [
        ("offline", crate::daemon::llm::Provider::Offline),
        ("openai", crate::daemon::llm::Provider::Openai),
    ] {
        let file = dir.path().join(format!("{provider}.toml"));
        std::fs::write(
            &file,
            format!(
                "[llm]\nprovider = \"{provider}\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodel = \"m\"\n"
            ),
        )
        .unwrap();
        let config = load(Some(&file), &env(&azure)).unwrap();
        assert_eq!(config.llm.provider, expected, "{provider}");
        assert_eq!(
            config.llm.endpoint.as_deref(),
            Some("https://res.openai.azure.com")
        );
    }
    // The shipped file names no provider: the variables still switch it to Azure.
    let config = load(Some(&shipped_file()), &env(&azure)).unwrap();
    assert_eq!(config.llm.provider, crate::daemon::llm::Provider::Azure);
}
