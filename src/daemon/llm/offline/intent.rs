//! Reading a person's message: [`classify`] and the intent parsers (store, retrieve,
//! delete, show), all linear, on a case-folded copy that keeps the original's offsets.

use super::*;

/// Classifies a person's message. Never panics; linear in the message's length.
pub fn classify(message: &str) -> Intent {
    let original = message.trim();
    let lower = fold_case(original);
    let start = skip_fillers(&lower, 0);
    let s = &lower[start..];
    if s.trim_matches(is_separator).is_empty()
        || [
            "yourself",
            "who are you",
            "what are you",
            "what can you do",
            "how do you work",
        ]
        .iter()
        .any(|p| contains_phrase(s, p))
    {
        return Intent::Chat;
    }
    if let Some(id) = find_uuid(s) {
        if strip_any_word(s, DELETE_VERBS).is_some() {
            return Intent::Delete {
                id: Some(id),
                query: None,
            };
        }
        let bare = s.trim_matches(|c: char| !c.is_ascii_hexdigit()) == id;
        if bare || strip_any_word(s, SHOW_VERBS).is_some() {
            return Intent::Show { id };
        }
    }
    if let Some(intent) = store_intent(original, &lower, start) {
        return intent;
    }
    if let Some(rest) = strip_any_word(s, DELETE_VERBS) {
        return Intent::Delete {
            id: None,
            query: key_terms(rest),
        };
    }
    if asks_for_tags(s) {
        return Intent::ListTags;
    }
    retrieve_intent(s).unwrap_or(Intent::Chat)
}

/// A store request at `start`, or one closed by a suffix ("..., remember that").
pub(super) fn store_intent(original: &str, lower: &str, start: usize) -> Option<Intent> {
    let s = &lower[start..];
    if let Some(verb) = STORE_VERBS.iter().find(|v| strip_word(s, v).is_some()) {
        let rest = strip_word(s, verb).unwrap_or("");
        let after = lower.len() - rest.len();
        let next = first_word(rest);
        // "keep going", "log in": these verbs store only "this ...", "the ..." or "...: x".
        if matches!(*verb, "keep" | "log" | "record")
            && !rest.trim_start().starts_with(':')
            && !matches!(
                next,
                "this" | "that" | "these" | "the" | "my" | "a" | "an" | "our"
            )
        {
            return None;
        }
        // "remember what I said about X?" and "save?" are questions, not requests.
        if rest.trim_end().ends_with('?')
            || matches!(
                next,
                "what" | "where" | "when" | "which" | "who" | "how" | "if" | "whether"
            )
        {
            return None;
        }
        return Some(store_from(original, lower, after, original.len()));
    }
    let trimmed = s.trim_end_matches(|c: char| c.is_whitespace() || matches!(c, '.' | '!'));
    if trimmed.ends_with('?') || starts_with_any_word(s, QUESTION_OPENINGS) {
        return None;
    }
    let suffix = STORE_SUFFIXES.iter().find(|suffix| {
        trimmed.strip_suffix(*suffix).is_some_and(|before| {
            before.is_empty()
                || before.ends_with(|c: char| c.is_whitespace() || matches!(c, ',' | '-' | ';'))
        })
    })?;
    let end = start + trimmed.len() - suffix.len();
    Some(store_from(original, lower, start, end))
}

/// Builds the store intent for the text `original[from..to]` (offsets shared with `lower`).
pub(super) fn store_from(original: &str, lower: &str, from: usize, to: usize) -> Intent {
    let (Some(region), Some(region_lower)) = (original.get(from..to), lower.get(from..to)) else {
        return Intent::Chat;
    };
    // "store this recipe: ..." names the kind of thing before a colon; a colon between
    // digits ("at 10:30") or after a long stretch of text is part of the content.
    let colon = region_lower.char_indices().find(|&(i, c)| {
        c == ':'
            && !(region_lower[..i].ends_with(|p: char| p.is_ascii_digit())
                && region_lower[i + 1..].starts_with(|n: char| n.is_ascii_digit()))
    });
    let (head, content) = match colon {
        Some((i, _)) if region_lower[..i].split_whitespace().count() <= 6 => {
            (&region_lower[..i], &region[i + 1..])
        }
        _ => ("", strip_leading_connector(region, region_lower)),
    };
    let content = content
        .trim()
        .trim_start_matches(['-', '—', '–'])
        .trim_end_matches([',', ';', '-'])
        .trim();
    if content.is_empty() {
        return Intent::Chat;
    }
    let content_lower = fold_case(content);
    // The kind of thing, when the content opens with it ("the wifi password is ...").
    let opening: String = content_lower
        .split_whitespace()
        .skip_while(|w| matches!(*w, "the" | "my" | "a" | "an" | "our" | "this" | "that"))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let kind = KINDS
        .iter()
        .find(|(words, ..)| contains_phrase(head, words))
        .or_else(|| {
            KINDS
                .iter()
                .find(|(words, ..)| contains_phrase(&opening, words))
        });
    let mut tags: Vec<String> = Vec::new();
    let add = |tags: &mut Vec<String>, tag: &str| {
        if tags.len() < MAX_TAGS && !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
    };
    if let Some((_, _, _, kind_tags)) = kind {
        kind_tags.iter().for_each(|t| add(&mut tags, t));
    }
    for word in words(head).chain(words(&content_lower).take(MAX_TOPIC_SCAN_WORDS)) {
        if let Some((_, tag)) = TOPICS.iter().find(|(w, _)| *w == word) {
            add(&mut tags, tag);
        }
    }
    if tags.is_empty() {
        add(&mut tags, "note");
    }
    let (filename, description) = match kind {
        Some((_, stem, label, _)) => (
            format!("{stem}.txt"),
            format!("{}: {}", capitalize(label), clip(content, 60)),
        ),
        None => (slug(&content_lower), clip(content, 80)),
    };
    Intent::Store {
        content: content.to_owned(),
        filename,
        description,
        tags,
    }
}

/// Drops "that"/"this"/"the following" before content given without a colon.
pub(super) fn strip_leading_connector<'a>(region: &'a str, region_lower: &str) -> &'a str {
    let trimmed = region_lower.trim_start();
    let offset = region_lower.len() - trimmed.len();
    for connector in ["that", "this", "the following", "following", "to"] {
        if let Some(rest) = strip_word(trimmed, connector)
            && rest.starts_with(char::is_whitespace)
            && !rest.trim().is_empty()
        {
            return region
                .get(region_lower.len() - rest.len()..)
                .unwrap_or(region);
        }
    }
    region.get(offset..).unwrap_or(region)
}

pub(super) fn asks_for_tags(s: &str) -> bool {
    if !split_tagged(s).1.is_empty() {
        return false;
    }
    let has_tags = words(s).any(|w| w == "tags" || w == "labels");
    has_tags
        && (s.trim_matches(is_separator) == "tags"
            || s.contains("my tags")
            || s.contains("tag list")
            || starts_with_any_word(
                s,
                &[
                    "list", "show", "what", "which", "give", "display", "tell", "how many", "get",
                ],
            ))
}

pub(super) fn retrieve_intent(s: &str) -> Option<Intent> {
    let (main, tags) = split_tagged(s);
    if let Some(opening) = RETRIEVE_OPENINGS
        .iter()
        .find(|o| strip_word(main, o).is_some())
    {
        let rest = strip_word(main, opening).unwrap_or("");
        return Some(Intent::Retrieve {
            query: key_terms(rest),
            tags,
        });
    }
    // "remember what I said about X?"
    if let Some(rest) = strip_word(main, "remember") {
        return Some(Intent::Retrieve {
            query: key_terms(rest),
            tags,
        });
    }
    let personal = PERSONAL_QUESTIONS
        .iter()
        .find_map(|q| strip_word(main, q).map(|rest| (q, rest)));
    if let Some((_, rest)) = personal {
        return Some(Intent::Retrieve {
            query: key_terms(rest),
            tags,
        });
    }
    let about_memory = MEMORY_WORDS.iter().any(|w| contains_phrase(main, w));
    let question = main.trim_end().ends_with('?')
        || starts_with_any_word(main, QUESTION_OPENINGS)
        || [
            "retrieve", "search", "find", "show", "list", "look up", "recall",
        ]
        .iter()
        .any(|verb| contains_phrase(main, verb));
    if (about_memory && question) || !tags.is_empty() {
        let topic = ["about", "regarding", "concerning", "on"]
            .iter()
            .find_map(|w| main.split_once(&format!(" {w} ")).map(|(_, after)| after))
            .unwrap_or(main);
        return Some(Intent::Retrieve {
            query: key_terms(topic),
            tags,
        });
    }
    None
}

/// Splits "notes tagged work and travel" into ("notes", ["work", "travel"]).
pub(super) fn split_tagged(s: &str) -> (&str, Vec<String>) {
    let markers = [
        " tagged as ",
        " tagged with ",
        " tagged ",
        " with the tags ",
        " with the tag ",
        " with tags ",
        " with tag ",
        " under the tag ",
        " under tag ",
    ];
    let found = markers
        .iter()
        .filter_map(|m| s.find(m).map(|i| (i, m.len())))
        .min_by_key(|&(i, len)| (i, usize::MAX - len));
    let Some((i, len)) = found else {
        return (s, Vec::new());
    };
    let mut tags = Vec::new();
    for word in s[i + len..]
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '&' | '/' | '+'))
        .map(|w| w.trim_matches(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_')))
        .filter(|w| !w.is_empty())
    {
        if matches!(word, "and" | "or" | "tag" | "tags") {
            continue;
        }
        // "tagged work about the budget": the tags end where ordinary words start.
        if STOP_WORDS.contains(&word) || tags.len() == MAX_TAGS {
            break;
        }
        tags.push(word.to_owned());
    }
    (&s[..i], tags)
}

/// The meaningful words of a query ("the Q4 plan?" -> "q4 plan"), with the singular of a
/// plural added so "recipes" also finds "recipe"; `None` when nothing is left.
pub(super) fn key_terms(text: &str) -> Option<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in words(text) {
        let word = word
            .strip_suffix("'s")
            .or_else(|| word.strip_suffix("’s"))
            .unwrap_or(word)
            .trim_matches(|c: char| c == '\'' || c == '’');
        if word.is_empty() || STOP_WORDS.contains(&word) || terms.iter().any(|t| t == word) {
            continue;
        }
        terms.push(word.to_owned());
        if let Some(singular) = singular(word)
            && !terms.contains(&singular)
        {
            terms.push(singular);
        }
        if terms.len() >= MAX_QUERY_WORDS {
            break;
        }
    }
    (!terms.is_empty()).then(|| terms.join(" "))
}

pub(super) fn singular(word: &str) -> Option<String> {
    if word.chars().count() < 5 || !word.chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    if let Some(stem) = word.strip_suffix("ies") {
        return Some(format!("{stem}y"));
    }
    if word.ends_with("ss") || word.ends_with("us") || word.ends_with("is") {
        return None;
    }
    word.strip_suffix('s').map(str::to_owned)
}
