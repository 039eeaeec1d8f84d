//! The LoCoMo-format dataset: conversations (one user each) with their dialog turns and
//! the questions scored against them.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;

pub(super) struct Turn {
    pub(super) dia_id: String,
    pub(super) content: String,
    pub(super) created_at: DateTime<Utc>,
}

pub(super) struct Question {
    pub(super) text: String,
    pub(super) category: u64,
    pub(super) evidence: Vec<String>,
}

pub(super) struct Conversation {
    pub(super) user: String,
    pub(super) turns: Vec<Turn>,
    pub(super) questions: Vec<Question>,
}

/// Every `*.json` conversation in `dir`, in file name order.
pub(super) fn load_dataset(dir: &Path) -> anyhow::Result<Vec<Conversation>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?;
            let value: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            parse_conversation(&stem, &value)
                .with_context(|| format!("{} is not a LoCoMo conversation", path.display()))
        })
        .collect()
}

/// A user id from a file name: `locomo-` and its letters, digits, `.`, `_` and `-`.
fn user_for(stem: &str) -> String {
    let clean: String = stem
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(50)
        .collect();
    format!("locomo-{clean}")
}

fn parse_conversation(stem: &str, value: &Value) -> anyhow::Result<Conversation> {
    let conversation = value.get("conversation").unwrap_or(value);
    let object = conversation.as_object().context("no conversation object")?;
    let mut sessions: Vec<(u64, DateTime<Utc>, &Vec<Value>)> = Vec::new();
    for (key, turns) in object {
        let Some(n) = key
            .strip_prefix("session_")
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let Some(turns) = turns.as_array() else {
            continue;
        };
        let date = object
            .get(&format!("session_{n}_date_time"))
            .and_then(Value::as_str)
            .with_context(|| format!("session_{n} has no date"))?;
        sessions.push((n, parse_date(date)?, turns));
    }
    sessions.sort_by_key(|s| s.0);
    let mut turns = Vec::new();
    for (_, date, list) in sessions {
        for turn in list {
            let text = turn["text"].as_str().unwrap_or_default().trim();
            let speaker = turn["speaker"].as_str().unwrap_or_default();
            let dia_id = turn["dia_id"].as_str().unwrap_or_default();
            if dia_id.is_empty() || (text.is_empty() && turn.get("blip_caption").is_none()) {
                continue;
            }
            let mut content = format!("{speaker}: {text}");
            if let Some(caption) = turn["blip_caption"].as_str() {
                content.push_str(&format!(" [image: {caption}]"));
            }
            turns.push(Turn {
                dia_id: dia_id.to_owned(),
                content,
                created_at: date,
            });
        }
    }
    let qa = value
        .get("qa")
        .or_else(|| conversation.get("qa"))
        .and_then(Value::as_array)
        .context("no qa list")?;
    let questions = qa
        .iter()
        .filter_map(|q| {
            let category = q["category"].as_u64()?;
            if !(1..=4).contains(&category) {
                return None;
            }
            let evidence: Vec<String> = q["evidence"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .flat_map(|e| e.split([';', ',', ' ']))
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect();
            (!evidence.is_empty()).then(|| Question {
                text: q["question"].as_str().unwrap_or_default().to_owned(),
                category,
                evidence,
            })
        })
        .collect();
    Ok(Conversation {
        user: user_for(stem),
        turns,
        questions,
    })
}

/// LoCoMo's session dates: `1:56 pm on 8 May, 2023`.
fn parse_date(raw: &str) -> anyhow::Result<DateTime<Utc>> {
    let normalized = raw.trim().to_uppercase().replace("  ", " ");
    for format in ["%I:%M %p ON %d %B, %Y", "%I:%M %p ON %d %b, %Y"] {
        if let Ok(date) = NaiveDateTime::parse_from_str(&normalized, format) {
            return Ok(date.and_utc());
        }
    }
    bail!("cannot read the session date {raw:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_locomo_conversation() {
        let value = json!({
            "conversation": {
                "speaker_a": "Ann", "speaker_b": "Bo",
                "session_2_date_time": "9:00 am on 9 May, 2023",
                "session_2": [{"speaker": "Bo", "dia_id": "D2:1", "text": "Later."}],
                "session_1_date_time": "1:56 pm on 8 May, 2023",
                "session_1": [
                    {"speaker": "Ann", "dia_id": "D1:1", "text": "Hi!"},
                    {"speaker": "Bo", "dia_id": "D1:2", "text": "Look", "blip_caption": "a dog"}
                ]
            },
            "qa": [
                {"question": "Q1", "evidence": ["D1:2"], "category": 4},
                {"question": "Q2", "evidence": ["D1:1; D2:1"], "category": 1},
                {"question": "Q5", "evidence": [], "category": 5}
            ]
        });
        let c = parse_conversation("conv-26", &value).unwrap();
        assert_eq!(c.user, "locomo-conv-26");
        let ids: Vec<&str> = c.turns.iter().map(|t| t.dia_id.as_str()).collect();
        assert_eq!(ids, ["D1:1", "D1:2", "D2:1"]);
        assert_eq!(c.turns[1].content, "Bo: Look [image: a dog]");
        assert_eq!(
            c.turns[0].created_at.to_rfc3339(),
            "2023-05-08T13:56:00+00:00"
        );
        assert_eq!(c.questions.len(), 2);
        assert_eq!(c.questions[1].evidence, ["D1:1", "D2:1"]);
    }
}
