//! The scenario: what the simulated users say (`--scenario FILE` or the built-in default).

use super::*;

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name in the report.
    pub name: String,
    /// Pause between a user's turns, ms.
    #[serde(default)]
    pub think_ms: u64,
    /// Users start evenly over this many seconds.
    #[serde(default)]
    pub ramp_up_s: f64,
    /// Relative weights of turn kinds.
    pub mix: Mix,
    /// Text sizes.
    pub text: TextSize,
}

/// Turn kinds and their weights.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    /// "store this: ..."
    pub store: u32,
    /// "what did I store about ...?"
    pub retrieve: u32,
    /// "search my notes for ..."
    pub search: u32,
    /// "forget ..."
    pub delete: u32,
    /// small talk
    pub chat: u32,
}

/// Words per stored text.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSize {
    /// Fewest words.
    pub min_words: usize,
    /// Most words.
    pub max_words: usize,
}

impl Default for Scenario {
    fn default() -> Self {
        toml::from_str(include_str!("../../scenarios/default.toml")).unwrap_or(Scenario {
            name: "default".into(),
            think_ms: 0,
            ramp_up_s: 0.0,
            mix: Mix {
                store: 40,
                retrieve: 30,
                search: 15,
                delete: 5,
                chat: 10,
            },
            text: TextSize {
                min_words: 8,
                max_words: 60,
            },
        })
    }
}

/// Reads the scenario file, or the built-in default.
pub(crate) fn scenario(args: &RunArgs) -> anyhow::Result<Scenario> {
    Ok(match &args.scenario {
        Some(path) => toml::from_str::<Scenario>(
            &std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?,
        )
        .with_context(|| format!("parse scenario {}", path.display()))?,
        None => Scenario::default(),
    })
}
