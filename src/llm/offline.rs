//! The built-in offline model: deterministic rules behind the same chat types as a real LLM,
//! so Memento works end to end without an API key, and the Azure mock has a brain.
//!
//! # How it answers
//!
//! - **The conversation ends with a person's message**: [`classify`] reads it (store,
//!   retrieve, list tags, delete, show, or small talk) and the model answers with a real
//!   OpenAI-format `tool_calls` entry, or with plain text for small talk.
//! - **The conversation ends with tool results**: the results of the last round are turned
//!   into a short answer. Two cases call a tool again instead: forgetting by description
//!   ("forget the wifi password") searches first and then deletes the best match, and a call
//!   whose arguments the daemon reported as invalid JSON is issued again (at most
//!   [`MAX_TOOL_ROUNDS`] rounds per turn).
//!
//! # Invariants
//!
//! - It only calls tools offered in the request, and never passes a `user_id`: the daemon
//!   binds the user, the model never chooses it.
//! - It never claims success on an error result (`Error: ...`, "tool unavailable").
//! - It never panics and is linear in its input: messages are parsed by hand on a
//!   case-folded copy that keeps the original's byte offsets, with no regex and no
//!   per-call setup.
//! - The same request always gets the same answer (tool-call ids are a hash of the
//!   conversation). The model marks itself only through [`ChatResponse::model`].

use serde_json::{Map, Value, json};

use super::types::{
    ChatMessage, ChatRequest, ChatResponse, FinishReason, FunctionCall, ToolCall, Usage,
};
use crate::domain::tool;

/// The model name in every offline response.
pub const OFFLINE_MODEL_NAME: &str = "memento-offline-1";

/// Most tool rounds the model starts within one turn (a search, a delete, one retry).
pub const MAX_TOOL_ROUNDS: usize = 3;

/// The offline model. Stateless and cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct OfflineModel {
    _private: (),
}

/// What a person's message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Keep `content`.
    Store {
        /// The text to keep, as the person wrote it.
        content: String,
        /// Suggested filename (`recipe.txt`, `meeting_summary.txt`, or a slug).
        filename: String,
        /// One-line description.
        description: String,
        /// Tags: the kind of thing, then topical keywords.
        tags: Vec<String>,
    },
    /// Search memories; neither a query nor tags lists the newest.
    Retrieve {
        /// Key words.
        query: Option<String>,
        /// Tag filter ("tagged work").
        tags: Vec<String>,
    },
    /// List the tags in use.
    ListTags,
    /// Forget something: by id, or by searching for `query` first. Neither means the
    /// person did not say what (the model asks).
    Delete {
        /// The memory id, when given.
        id: Option<String>,
        /// Key words to search for otherwise.
        query: Option<String>,
    },
    /// Show one memory by id.
    Show {
        /// The memory id.
        id: String,
    },
    /// Anything else: small talk, thanks, questions about Memento.
    Chat,
}

impl OfflineModel {
    /// A model.
    pub fn new() -> OfflineModel {
        OfflineModel::default()
    }

    /// Answers one request. Never panics.
    pub fn complete(&self, request: &ChatRequest) -> ChatResponse {
        let seed = conversation_hash(&request.messages);
        let offered = |name: &str| request.tools.iter().any(|t| t.function.name == name);
        let mut message = match request.messages.last() {
            Some(ChatMessage::Tool { .. }) => after_tools(&request.messages, &offered, seed),
            Some(ChatMessage::User { content }) => answer(content, &offered, seed),
            Some(ChatMessage::Assistant { .. }) => {
                text("Is there anything else you'd like me to remember or look up?".into())
            }
            Some(ChatMessage::System { .. }) | None => text(GREETING.into()),
        };
        let mut finish_reason = match &message {
            ChatMessage::Assistant { tool_calls, .. } if !tool_calls.is_empty() => {
                FinishReason::ToolCalls
            }
            _ => FinishReason::Stop,
        };
        // A text answer longer than `max_tokens` is cut, as a real model's would be.
        if let (
            Some(max_tokens),
            ChatMessage::Assistant {
                content: Some(content),
                tool_calls,
            },
        ) = (request.max_tokens, &mut message)
            && tool_calls.is_empty()
        {
            let max_bytes = usize::try_from(max_tokens)
                .unwrap_or(usize::MAX)
                .saturating_mul(4);
            if content.len() > max_bytes {
                let mut end = max_bytes;
                while !content.is_char_boundary(end) {
                    end -= 1;
                }
                content.truncate(end);
                finish_reason = FinishReason::Length;
            }
        }
        let prompt_tokens = estimate_prompt(request);
        let completion_tokens = tokens(message.text_len());
        ChatResponse {
            model: OFFLINE_MODEL_NAME.to_owned(),
            message,
            finish_reason,
            usage: Some(Usage {
                prompt_tokens,
                completion_tokens,
                total_tokens: prompt_tokens.saturating_add(completion_tokens),
            }),
            id: Some(format!("offline-{seed:016x}")),
            provider_time: std::time::Duration::ZERO,
        }
    }
}

// === Reading a person's message ===

/// Polite openings dropped before classifying ("Hey memento, could you please ...").
const FILLERS: &[&str] = &[
    "hey memento",
    "hi memento",
    "hello memento",
    "ok memento",
    "okay memento",
    "memento",
    "hey there",
    "hey",
    "hi",
    "ok",
    "okay",
    "so",
    "and",
    "also",
    "now",
    "please",
    "pls",
    "kindly",
    "can you",
    "could you",
    "would you",
    "will you",
    "can u",
    "i want you to",
    "i'd like you to",
    "i would like you to",
    "i need you to",
    "go ahead and",
    "quickly",
];

/// Verbs that start a request to keep something, longest first where they overlap.
const STORE_VERBS: &[&str] = &[
    "make a note of",
    "make a note that",
    "make a note",
    "take a note of",
    "take a note",
    "add this to my notes",
    "add this to my memories",
    "add this to memory",
    "add to my notes",
    "add to my memories",
    "add to memory",
    "keep in mind that",
    "keep in mind",
    "don't forget that",
    "don't forget",
    "dont forget that",
    "dont forget",
    "do not forget that",
    "do not forget",
    "remind me to",
    "note to self",
    "note down",
    "note that",
    "note",
    "write down",
    "jot down",
    "remember",
    "memorize",
    "memorise",
    "store",
    "save",
    "keep",
    "record",
    "log",
];

/// Closing phrases that make the rest of the message something to keep
/// ("my locker code is 1234, remember that").
const STORE_SUFFIXES: &[&str] = &[
    "please remember that",
    "please remember this",
    "please remember it",
    "please remember",
    "remember that",
    "remember this",
    "remember it",
    "save that",
    "save this",
    "save it",
    "store that",
    "store this",
    "store it",
    "note that",
    "note this",
    "keep that",
    "keep this",
    "keep it",
];

/// Verbs that start a request to forget something.
const DELETE_VERBS: &[&str] = &[
    "get rid of",
    "forget about",
    "forget",
    "delete",
    "remove",
    "erase",
    "discard",
];

/// Verbs that open one memory by id.
const SHOW_VERBS: &[&str] = &[
    "show", "open", "get", "read", "display", "view", "fetch", "print", "see",
];

/// Openings that ask to search or list memories.
const RETRIEVE_OPENINGS: &[&str] = &[
    "what did i store",
    "what did i save",
    "what did i note",
    "what did i keep",
    "what did i tell you",
    "what did i ask you to remember",
    "what have i stored",
    "what have i saved",
    "what have i noted",
    "what have i told you",
    "what do you remember",
    "what do you know",
    "what do you have",
    "what's in my memory",
    "what's in my memories",
    "what's in my notes",
    "what is in my memory",
    "what is in my notes",
    "what are my notes",
    "what are my memories",
    "do you remember",
    "do you know",
    "did i store",
    "did i save",
    "did i note",
    "did i tell you",
    "have i stored",
    "have i saved",
    "tell me what i stored",
    "tell me what i saved",
    "tell me what you remember",
    "tell me about",
    "remind me",
    "search my notes for",
    "search my memories for",
    "search my notes",
    "search my memories",
    "search for",
    "search",
    "look up",
    "look for",
    "find",
    "show me",
    "show",
    "list",
    "recall",
    "retrieve",
    "get",
    "fetch",
    "open",
    "give me",
    "pull up",
    "bring up",
];

/// Question openings that, with a word about memory, ask to search.
const QUESTION_OPENINGS: &[&str] = &[
    "what", "what's", "whats", "where", "where's", "when", "which", "who", "did", "do", "have",
    "has", "is", "are", "any", "anything", "tell me", "how many",
];

/// Words that make a question about stored things.
const MEMORY_WORDS: &[&str] = &[
    "store",
    "stored",
    "save",
    "saved",
    "remember",
    "remembered",
    "note",
    "notes",
    "noted",
    "memory",
    "memories",
    "kept",
    "told you",
    "wrote down",
    "jotted",
];

/// Questions about the person's own things ("what's my wifi password?") search memories.
const PERSONAL_QUESTIONS: &[&str] = &[
    "what's my",
    "whats my",
    "what is my",
    "what are my",
    "what was my",
    "where's my",
    "where is my",
    "where are my",
    "where did i",
    "when is my",
    "when's my",
    "when was my",
    "who is my",
    "who's my",
    "which is my",
    "how much is my",
];

/// Kinds of things people store: (words, filename stem, label, tags).
const KINDS: &[(&str, &str, &str, &[&str])] = &[
    (
        "meeting summary",
        "meeting_summary",
        "meeting summary",
        &["work", "meeting"],
    ),
    (
        "meeting notes",
        "meeting_notes",
        "meeting notes",
        &["work", "meeting"],
    ),
    (
        "meeting minutes",
        "meeting_notes",
        "meeting notes",
        &["work", "meeting"],
    ),
    (
        "meeting",
        "meeting_notes",
        "meeting notes",
        &["work", "meeting"],
    ),
    ("recipe", "recipe", "recipe", &["cooking", "recipe"]),
    (
        "shopping list",
        "shopping_list",
        "shopping list",
        &["shopping"],
    ),
    (
        "grocery list",
        "grocery_list",
        "grocery list",
        &["shopping", "groceries"],
    ),
    ("todo list", "todo_list", "to-do list", &["todo"]),
    ("to-do list", "todo_list", "to-do list", &["todo"]),
    ("to do list", "todo_list", "to-do list", &["todo"]),
    ("reading list", "reading_list", "reading list", &["books"]),
    ("packing list", "packing_list", "packing list", &["travel"]),
    ("idea", "idea", "idea", &["ideas"]),
    ("password", "password", "password", &["credentials"]),
    ("address", "address", "address", &["contacts"]),
    (
        "phone number",
        "phone_number",
        "phone number",
        &["contacts"],
    ),
    ("contact", "contact", "contact", &["contacts"]),
    ("birthday", "birthday", "birthday", &["personal", "dates"]),
    (
        "anniversary",
        "anniversary",
        "anniversary",
        &["personal", "dates"],
    ),
    (
        "appointment",
        "appointment",
        "appointment",
        &["appointments"],
    ),
    ("book", "book", "book note", &["books"]),
    ("quote", "quote", "quote", &["quotes"]),
    ("link", "link", "link", &["links"]),
    ("reminder", "reminder", "reminder", &["reminders"]),
    ("plan", "plan", "plan", &["planning"]),
    ("journal entry", "journal", "journal entry", &["journal"]),
    ("diary entry", "journal", "journal entry", &["journal"]),
];

/// Topical keywords: (word, tag).
const TOPICS: &[(&str, &str)] = &[
    ("recipe", "cooking"),
    ("recipes", "cooking"),
    ("cake", "cooking"),
    ("bake", "cooking"),
    ("baking", "cooking"),
    ("flour", "cooking"),
    ("oven", "cooking"),
    ("cook", "cooking"),
    ("cooking", "cooking"),
    ("soup", "cooking"),
    ("pasta", "cooking"),
    ("tart", "cooking"),
    ("pancakes", "cooking"),
    ("dinner", "food"),
    ("lunch", "food"),
    ("breakfast", "food"),
    ("restaurant", "food"),
    ("meeting", "work"),
    ("project", "work"),
    ("deadline", "work"),
    ("client", "work"),
    ("boss", "work"),
    ("colleague", "work"),
    ("office", "work"),
    ("roadmap", "work"),
    ("sprint", "work"),
    ("standup", "work"),
    ("release", "work"),
    ("q1", "work"),
    ("q2", "work"),
    ("q3", "work"),
    ("q4", "work"),
    ("passport", "travel"),
    ("flight", "travel"),
    ("hotel", "travel"),
    ("trip", "travel"),
    ("airport", "travel"),
    ("visa", "travel"),
    ("vacation", "travel"),
    ("holiday", "travel"),
    ("doctor", "health"),
    ("dentist", "health"),
    ("medicine", "health"),
    ("pills", "health"),
    ("allergy", "health"),
    ("gym", "health"),
    ("workout", "health"),
    ("groceries", "shopping"),
    ("grocery", "shopping"),
    ("buy", "shopping"),
    ("shopping", "shopping"),
    ("bank", "finance"),
    ("tax", "finance"),
    ("taxes", "finance"),
    ("invoice", "finance"),
    ("salary", "finance"),
    ("budget", "finance"),
    ("rent", "finance"),
    ("bill", "finance"),
    ("birthday", "personal"),
    ("anniversary", "personal"),
    ("mom", "family"),
    ("dad", "family"),
    ("mother", "family"),
    ("father", "family"),
    ("sister", "family"),
    ("brother", "family"),
    ("kids", "family"),
    ("wifi", "home"),
    ("garage", "home"),
    ("plumber", "home"),
    ("landlord", "home"),
    ("car", "car"),
    ("parked", "car"),
    ("parking", "car"),
    ("password", "credentials"),
    ("passcode", "credentials"),
    ("pin", "credentials"),
    ("book", "books"),
    ("novel", "books"),
    ("movie", "movies"),
    ("film", "movies"),
    ("idea", "ideas"),
    ("phone", "contacts"),
    ("email", "contacts"),
];

/// Words that carry no topic.
const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "again",
    "all",
    "am",
    "an",
    "and",
    "any",
    "anything",
    "are",
    "as",
    "at",
    "be",
    "been",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "else",
    "every",
    "everything",
    "find",
    "for",
    "from",
    "get",
    "give",
    "had",
    "has",
    "have",
    "he",
    "her",
    "here",
    "his",
    "how",
    "i",
    "i'd",
    "i'm",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "just",
    "kept",
    "know",
    "last",
    "lately",
    "list",
    "look",
    "me",
    "memento",
    "memories",
    "memory",
    "mine",
    "my",
    "note",
    "noted",
    "notes",
    "of",
    "on",
    "or",
    "our",
    "please",
    "recall",
    "recent",
    "recently",
    "regarding",
    "remember",
    "remind",
    "retrieve",
    "said",
    "save",
    "saved",
    "search",
    "she",
    "show",
    "some",
    "something",
    "store",
    "stored",
    "stuff",
    "tell",
    "that",
    "the",
    "their",
    "them",
    "there",
    "these",
    "they",
    "things",
    "this",
    "those",
    "to",
    "told",
    "up",
    "us",
    "was",
    "we",
    "were",
    "what",
    "what's",
    "whats",
    "when",
    "where",
    "which",
    "who",
    "with",
    "wrote",
    "you",
    "your",
];

/// Most words [`key_terms`] keeps.
const MAX_QUERY_WORDS: usize = 12;
/// Most words of stored content scanned for topical tags.
const MAX_TOPIC_SCAN_WORDS: usize = 2_000;
/// Most tags suggested for a memory.
const MAX_TAGS: usize = 5;

const GREETING: &str = "Hello! I can remember things for you: say \"store this: ...\" to keep \
something, or ask \"what did I store about ...?\" to find it again.";

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
fn store_intent(original: &str, lower: &str, start: usize) -> Option<Intent> {
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
fn store_from(original: &str, lower: &str, from: usize, to: usize) -> Intent {
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
fn strip_leading_connector<'a>(region: &'a str, region_lower: &str) -> &'a str {
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

fn asks_for_tags(s: &str) -> bool {
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

fn retrieve_intent(s: &str) -> Option<Intent> {
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
fn split_tagged(s: &str) -> (&str, Vec<String>) {
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
fn key_terms(text: &str) -> Option<String> {
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

fn singular(word: &str) -> Option<String> {
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

/// Words of lower-cased text: letters, digits and apostrophes.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '’'))
        .map(|w| w.trim_matches(|c: char| c == '\'' || c == '’'))
        .filter(|w| !w.is_empty())
}

/// Lower-cases char by char, keeping a char whose lower case has another UTF-8 length
/// (e.g. `İ`), so byte offsets in the result are offsets in the original too.
fn fold_case(text: &str) -> String {
    text.chars()
        .map(|c| {
            let mut lower = c.to_lowercase();
            match (lower.next(), lower.next()) {
                (Some(l), None) if l.len_utf8() == c.len_utf8() => l,
                _ => c,
            }
        })
        .collect()
}

fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, ',' | '.' | '!' | '?' | ';' | ':' | '-' | '—')
}

/// Skips fillers ("hey memento, please") from `from`; returns the new offset.
fn skip_fillers(lower: &str, from: usize) -> usize {
    let mut pos = from;
    loop {
        let rest = &lower[pos..];
        let trimmed = rest.trim_start_matches(|c: char| {
            c.is_whitespace() || matches!(c, ',' | '.' | '!' | ';' | '-' | '—')
        });
        pos += rest.len() - trimmed.len();
        match FILLERS.iter().find_map(|f| strip_word(trimmed, f)) {
            // Keep a filler that is the whole message ("hey", "ok"): that is small talk.
            Some(after) if !after.trim_matches(is_separator).is_empty() => {
                pos = lower.len() - after.len();
            }
            _ => return pos,
        }
    }
}

/// `text` without the word or phrase `prefix` at its start, or `None` when it does not
/// start with it as whole words.
fn strip_word<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = text.strip_prefix(prefix)?;
    let bounded = prefix.ends_with(|c: char| !c.is_alphanumeric())
        || !rest.starts_with(|c: char| c.is_alphanumeric() || c == '\'' || c == '’');
    bounded.then_some(rest)
}

fn strip_any_word<'a>(text: &'a str, prefixes: &[&str]) -> Option<&'a str> {
    prefixes.iter().find_map(|p| strip_word(text, p))
}

fn starts_with_any_word(text: &str, prefixes: &[&str]) -> bool {
    strip_any_word(text, prefixes).is_some()
}

fn first_word(text: &str) -> &str {
    text.trim_start_matches(is_separator)
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .next()
        .unwrap_or("")
}

/// True when `phrase` occurs in `text` as whole words.
fn contains_phrase(text: &str, phrase: &str) -> bool {
    let mut from = 0;
    while let Some(found) = text.get(from..).and_then(|t| t.find(phrase)) {
        let start = from + found;
        let end = start + phrase.len();
        let before_ok = !text[..start].ends_with(|c: char| c.is_alphanumeric());
        let after_ok = !text[end..].starts_with(|c: char| c.is_alphanumeric());
        if before_ok && after_ok {
            return true;
        }
        from = end;
    }
    false
}

/// The first UUID-shaped word (8-4-4-4-12 hex digits), lower-cased.
fn find_uuid(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .find(|w| {
            let groups: Vec<usize> = w.split('-').map(str::len).collect();
            groups == [8, 4, 4, 4, 12]
        })
        .map(str::to_ascii_lowercase)
}

/// A filename from the first meaningful words ("my passport expires in May" ->
/// `passport_expires_may.txt`).
fn slug(content_lower: &str) -> String {
    let mut name = String::new();
    let mut taken = 0;
    for word in words(content_lower) {
        if STOP_WORDS.contains(&word) {
            continue;
        }
        let clean: String = word.chars().filter(char::is_ascii_alphanumeric).collect();
        if clean.is_empty() || name.len() + clean.len() > 40 {
            continue;
        }
        if !name.is_empty() {
            name.push('_');
        }
        name.push_str(&clean);
        taken += 1;
        if taken == 3 {
            break;
        }
    }
    if name.is_empty() {
        "note.txt".into()
    } else {
        format!("{name}.txt")
    }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// At most `max` characters of `text` on one line, with an ellipsis when cut.
fn clip(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    let mut cut = false;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if count + len + usize::from(count > 0) > max {
            if count == 0 {
                out.extend(word.chars().take(max));
            }
            cut = true;
            break;
        }
        if count > 0 {
            out.push(' ');
            count += 1;
        }
        out.push_str(word);
        count += len;
    }
    if cut {
        out.push('…');
    }
    out
}

// === Answering a person's message ===

fn answer(content: &str, offered: &dyn Fn(&str) -> bool, seed: u64) -> ChatMessage {
    let intent = classify(content);
    match call_for(&intent) {
        Some((name, args)) if offered(name) => tool_calls(seed, vec![(name, args)]),
        Some((name, _)) => text(format!(
            "Sorry, I can't {} right now: the memory tool is unavailable.",
            action(name)
        )),
        None => text(small_talk(&intent, content)),
    }
}

/// The tool call that starts serving `intent`, if any.
fn call_for(intent: &Intent) -> Option<(&'static str, Value)> {
    match intent {
        Intent::Store {
            content,
            filename,
            description,
            tags,
        } => Some((
            tool::STORE_MEMORY,
            json!({
                "content": content,
                "filename": filename,
                "description": description,
                "tags": tags.join(","),
            }),
        )),
        Intent::Retrieve { query, tags } => {
            let mut args = Map::new();
            if let Some(query) = query {
                args.insert("query".into(), Value::String(query.clone()));
            }
            if !tags.is_empty() {
                args.insert("tags".into(), Value::String(tags.join(",")));
            }
            Some((tool::RETRIEVE_MEMORIES, Value::Object(args)))
        }
        Intent::ListTags => Some((tool::LIST_TAGS, json!({}))),
        Intent::Delete { id: Some(id), .. } => Some((tool::DELETE_MEMORY, json!({ "id": id }))),
        Intent::Delete {
            id: None,
            query: Some(query),
        } => Some((tool::RETRIEVE_MEMORIES, json!({ "query": query }))),
        Intent::Show { id } => Some((tool::GET_MEMORY, json!({ "id": id }))),
        Intent::Delete {
            id: None,
            query: None,
        }
        | Intent::Chat => None,
    }
}

fn action(tool: &str) -> &'static str {
    match tool {
        tool::STORE_MEMORY => "store that",
        tool::RETRIEVE_MEMORIES => "search your memories",
        tool::GET_MEMORY => "open that memory",
        tool::DELETE_MEMORY => "delete that memory",
        tool::LIST_TAGS => "list your tags",
        _ => "do that",
    }
}

fn small_talk(intent: &Intent, message: &str) -> String {
    let lower = fold_case(message.trim());
    let s = &lower[skip_fillers(&lower, 0)..];
    let has = |w: &str| contains_phrase(&lower, w);
    if matches!(intent, Intent::Delete { .. }) {
        return "What should I forget? Tell me what it was about, or give me its id.".into();
    }
    if starts_with_any_word(s, STORE_VERBS) {
        return "What would you like me to store? Say \"store this: ...\" with the text.".into();
    }
    if lower.is_empty() {
        return "I didn't catch that. Tell me something to remember, or ask what you stored."
            .into();
    }
    if has("thanks") || has("thank you") || has("thx") || has("cheers") {
        return "You're welcome!".into();
    }
    if has("bye") || has("goodbye") || has("good night") || has("see you") {
        return "Goodbye! Your memories will be here when you come back.".into();
    }
    if has("who are you")
        || has("what are you")
        || has("what can you do")
        || has("help")
        || has("how do you work")
    {
        return "I'm Memento. I keep notes for you: tell me \"remember that ...\" and later ask \
                \"what do you remember about ...?\". I can also list your tags, show a memory \
                by its id, or forget something."
            .into();
    }
    if has("how are you") {
        return "I'm doing well, thanks! Anything you'd like me to remember?".into();
    }
    if starts_with_any_word(
        &lower,
        &[
            "hello",
            "hi",
            "hey",
            "good morning",
            "good evening",
            "howdy",
        ],
    ) {
        return GREETING.into();
    }
    "I'm here to remember things for you. Say \"store this: ...\" to keep something, or ask \
     what you stored."
        .into()
}

// === Answering tool results ===

/// One tool call of the current turn and its result, if it came back.
struct Step<'a> {
    name: &'a str,
    arguments: &'a str,
    result: &'a str,
}

fn after_tools(messages: &[ChatMessage], offered: &dyn Fn(&str) -> bool, seed: u64) -> ChatMessage {
    // The current turn: everything after the person's last message, in tool rounds.
    let turn_start = messages
        .iter()
        .rposition(|m| matches!(m, ChatMessage::User { .. }))
        .map_or(0, |i| i + 1);
    let user_text = turn_start
        .checked_sub(1)
        .and_then(|i| match messages.get(i) {
            Some(ChatMessage::User { content }) => Some(content.as_str()),
            _ => None,
        })
        .unwrap_or("");
    let mut rounds: Vec<Vec<Step<'_>>> = Vec::new();
    let mut calls: &[ToolCall] = &[];
    for message in &messages[turn_start..] {
        match message {
            ChatMessage::Assistant { tool_calls, .. } if !tool_calls.is_empty() => {
                calls = tool_calls;
                rounds.push(Vec::new());
            }
            ChatMessage::Tool {
                tool_call_id,
                content,
            } => {
                let index = rounds.last().map_or(0, Vec::len);
                let call = calls
                    .iter()
                    .find(|c| c.id == *tool_call_id)
                    .or_else(|| calls.get(index));
                let step = Step {
                    name: call.map_or("", |c| c.function.name.as_str()),
                    arguments: call.map_or("", |c| c.function.arguments.as_str()),
                    result: crate::llm::framing::unframe(content),
                };
                match rounds.last_mut() {
                    Some(round) => round.push(step),
                    None => rounds.push(vec![step]),
                }
            }
            _ => {}
        }
    }
    let intent = classify(user_text);
    let Some(last) = rounds.last() else {
        return text("Done.".into());
    };
    let may_call = rounds.len() < MAX_TOOL_ROUNDS;

    // A call the daemon could not parse is issued again, rebuilt from the request.
    if may_call {
        let retries: Vec<(&'static str, Value)> = last
            .iter()
            .filter(|s| is_error(s.result) && mentions_bad_arguments(s.result))
            .filter_map(|s| rebuild_call(s.name, &intent, &rounds))
            .collect();
        if !retries.is_empty() && retries.iter().all(|(name, _)| offered(name)) {
            return tool_calls(seed, retries);
        }
    }

    // Forgetting by description: the search is done, delete the best match.
    if let Intent::Delete {
        id: None,
        query: Some(query),
    } = &intent
        && let Some(search) = last
            .iter()
            .find(|s| s.name == tool::RETRIEVE_MEMORIES && !is_error(s.result))
    {
        return match best_match(search.result, query) {
            Some((id, _)) if may_call && offered(tool::DELETE_MEMORY) => {
                tool_calls(seed, vec![(tool::DELETE_MEMORY, json!({ "id": id }))])
            }
            Some((_, filename)) if !offered(tool::DELETE_MEMORY) => text(format!(
                "I found '{filename}', but I can't delete it right now: the memory tool is \
                 unavailable."
            )),
            Some((_, filename)) => text(format!(
                "I found '{filename}', but I couldn't delete it in this turn. Ask me again to \
                 forget it."
            )),
            None => text(format!(
                "I couldn't find anything about \"{query}\" to forget."
            )),
        };
    }

    let sentences: Vec<String> = last.iter().map(describe).collect();
    if sentences.is_empty() {
        text("Done.".into())
    } else {
        text(sentences.join("\n"))
    }
}

/// The arguments for `tool` again, for the request in `intent`.
fn rebuild_call(
    tool: &str,
    intent: &Intent,
    rounds: &[Vec<Step<'_>>],
) -> Option<(&'static str, Value)> {
    if let Some((name, args)) = call_for(intent)
        && name == tool
    {
        return Some((name, args));
    }
    // The delete step of forgetting by description: pick the match again.
    if tool == tool::DELETE_MEMORY
        && let Intent::Delete {
            query: Some(query), ..
        } = intent
    {
        let (id, _) = rounds
            .iter()
            .flatten()
            .rev()
            .filter(|s| s.name == tool::RETRIEVE_MEMORIES && !is_error(s.result))
            .find_map(|s| best_match(s.result, query))?;
        return Some((tool::DELETE_MEMORY, json!({ "id": id })));
    }
    None
}

/// True when a tool result reports a failure rather than data.
fn is_error(result: &str) -> bool {
    let trimmed = result.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return serde_json::from_str::<Value>(trimmed)
            .ok()
            .is_some_and(|v| v.get("error").is_some_and(|e| !e.is_null()));
    }
    let head: String = trimmed.chars().take(200).collect::<String>().to_lowercase();
    trimmed.is_empty()
        || head.starts_with("error")
        || head.starts_with("failed")
        || head.contains("tool unavailable")
        || head.starts_with("unknown tool")
        || head.starts_with("cannot ")
        || head.starts_with("could not ")
}

fn mentions_bad_arguments(result: &str) -> bool {
    let lower = result.to_lowercase();
    lower.contains("not valid json") || lower.contains("invalid json")
}

/// The memory in a `retrieve_memories` result that best matches `query`: the most query
/// words in its filename, description, tags and preview, the search's order breaking
/// ties. `None` when no memory shares a word with the query.
fn best_match(result: &str, query: &str) -> Option<(String, String)> {
    let value: Value = serde_json::from_str(result).ok()?;
    let terms: Vec<&str> = query.split_whitespace().collect();
    let mut best: Option<(usize, String, String)> = None;
    for memory in value.get("memories")?.as_array()? {
        let Some(id) = memory.get("id").and_then(Value::as_str) else {
            continue;
        };
        let mut haystack = String::new();
        for field in ["filename", "description", "preview", "content"] {
            if let Some(s) = memory.get(field).and_then(Value::as_str) {
                haystack.push_str(s);
                haystack.push(' ');
            }
        }
        haystack.push_str(&tags_of(memory.get("tags")).join(" "));
        let haystack = fold_case(&haystack).replace('_', " ");
        let score = terms
            .iter()
            .filter(|t| contains_phrase(&haystack, t))
            .count();
        if score > 0 && best.as_ref().is_none_or(|(s, ..)| score > *s) {
            let filename = memory
                .get("filename")
                .and_then(Value::as_str)
                .unwrap_or("that memory")
                .to_owned();
            best = Some((score, id.to_owned(), filename));
        }
    }
    best.map(|(_, id, filename)| (id, filename))
}

/// One sentence (or a short list) about one tool result.
fn describe(step: &Step<'_>) -> String {
    if is_error(step.result) {
        return describe_error(step);
    }
    match step.name {
        tool::STORE_MEMORY => describe_store(step),
        tool::RETRIEVE_MEMORIES => describe_memories(step),
        tool::GET_MEMORY => describe_memory(step.result),
        tool::DELETE_MEMORY => describe_delete(step.result),
        tool::LIST_TAGS => describe_tags(step.result),
        "" => format!("Here's what I got back: {}", clip(step.result, 500)),
        name => format!("Here's what {name} returned: {}", clip(step.result, 500)),
    }
}

fn describe_error(step: &Step<'_>) -> String {
    let trimmed = step.result.trim();
    let reason = match trimmed.get(..5) {
        Some(word) if word.eq_ignore_ascii_case("error") => {
            trimmed[5..].trim_start_matches(|c: char| c == ':' || c == '-' || c.is_whitespace())
        }
        _ => trimmed,
    };
    // The daemon's hints to the model are not for the person.
    let reason = reason.split("; tell the").next().unwrap_or(reason);
    let reason = clip(reason.trim().trim_end_matches('.'), 300);
    if reason.is_empty() {
        format!("Sorry, I couldn't {}.", action(step.name))
    } else {
        format!("Sorry, I couldn't {}: {reason}.", action(step.name))
    }
}

fn describe_store(step: &Step<'_>) -> String {
    let args: Value = serde_json::from_str(step.arguments).unwrap_or(Value::Null);
    // "Successfully stored 'x.txt' for user alice as 20240715_143052_x.txt"
    let result = step.result.trim();
    let filename = result
        .strip_prefix("Successfully stored '")
        .and_then(|rest| rest.split_once('\''))
        .map(|(name, _)| name.to_owned())
        .or_else(|| {
            serde_json::from_str::<Value>(result)
                .ok()
                .and_then(|v| v.get("filename").and_then(Value::as_str).map(str::to_owned))
        })
        .or_else(|| {
            args.get("filename")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    let stem = filename
        .as_deref()
        .map(|f| f.rsplit_once('.').map_or(f, |(stem, _)| stem))
        .unwrap_or("");
    let what = KINDS
        .iter()
        .find(|(_, kind_stem, ..)| *kind_stem == stem)
        .map_or_else(
            || "that".to_owned(),
            |(_, _, label, _)| format!("your {label}"),
        );
    let tags = tags_of(args.get("tags"));
    let tags = if tags.is_empty() {
        String::new()
    } else {
        format!(" (tags: {})", tags.join(", "))
    };
    match filename {
        Some(filename) => format!("I've stored {what} as '{filename}'{tags}."),
        None => format!("I've stored {what}{tags}."),
    }
}

fn describe_memories(step: &Step<'_>) -> String {
    let args: Value = serde_json::from_str(step.arguments).unwrap_or(Value::Null);
    let query = args
        .get("query")
        .and_then(Value::as_str)
        .filter(|q| !q.trim().is_empty());
    let tags = tags_of(args.get("tags"));
    let nothing = match (query, tags.is_empty()) {
        (Some(query), _) => format!("I couldn't find anything about \"{query}\" in your memories."),
        (None, false) => format!("I couldn't find anything tagged {}.", tags.join(", ")),
        (None, true) => "You haven't stored anything yet.".to_owned(),
    };
    let Ok(value) = serde_json::from_str::<Value>(step.result) else {
        // Another server's plain-text answer: pass it on.
        let trimmed = step.result.trim();
        let lower = trimmed.to_lowercase();
        return if lower.starts_with("no ") || lower.starts_with("nothing") {
            nothing
        } else {
            format!("Here's what I found: {}", clip(trimmed, 600))
        };
    };
    let memories = value
        .get("memories")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if memories.is_empty() {
        return nothing;
    }
    let shown = 5;
    let lines: Vec<String> = memories.iter().take(shown).map(memory_line).collect();
    let count = memories.len();
    let mut out = if count == 1 {
        format!("I found one memory: {}", lines.join(""))
    } else {
        format!("I found {count} memories:\n- {}", lines.join("\n- "))
    };
    if count > shown {
        out.push_str(&format!("\n…and {} more.", count - shown));
    }
    out
}

fn memory_line(memory: &Value) -> String {
    let name = memory
        .get("filename")
        .and_then(Value::as_str)
        .unwrap_or("a note");
    let preview = memory
        .get("preview")
        .or_else(|| memory.get("content"))
        .or_else(|| memory.get("description"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let tags = tags_of(memory.get("tags"));
    let mut line = format!("'{name}': {}", clip(preview, 160));
    if !tags.is_empty() {
        line.push_str(&format!(" (tags: {})", tags.join(", ")));
    }
    if let Some(id) = memory.get("id").and_then(Value::as_str) {
        line.push_str(&format!(" [id {id}]"));
    }
    line
}

fn describe_memory(result: &str) -> String {
    let Ok(memory) = serde_json::from_str::<Value>(result) else {
        return clip(result, 2000);
    };
    let name = memory
        .get("filename")
        .and_then(Value::as_str)
        .unwrap_or("memory");
    let mut about = Vec::new();
    let tags = tags_of(memory.get("tags"));
    if !tags.is_empty() {
        about.push(format!("tags: {}", tags.join(", ")));
    }
    if let Some(date) = memory
        .get("created_at")
        .and_then(Value::as_str)
        .and_then(|c| c.get(..10))
    {
        about.push(format!("stored {date}"));
    }
    let about = if about.is_empty() {
        String::new()
    } else {
        format!(" ({})", about.join("; "))
    };
    let content = memory
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or_default();
    format!("'{name}'{about}:\n{}", clip(content, 2000))
}

fn describe_delete(result: &str) -> String {
    // "Deleted memory <id> ('x.txt')"
    let trimmed = result.trim();
    let filename = match serde_json::from_str::<Value>(trimmed) {
        Ok(value) => value
            .get("filename")
            .and_then(Value::as_str)
            .map(str::to_owned),
        Err(_) => trimmed
            .strip_prefix("Deleted")
            .and_then(|rest| rest.split_once("('"))
            .and_then(|(_, rest)| rest.split_once("')"))
            .map(|(filename, _)| filename.to_owned()),
    };
    match filename {
        Some(filename) => format!("Done: I've forgotten '{filename}'."),
        None => format!("Done: {}.", clip(trimmed.trim_end_matches('.'), 300)),
    }
}

fn describe_tags(result: &str) -> String {
    let value: Value = serde_json::from_str(result).unwrap_or(Value::Null);
    let tags = value
        .get("tags")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if tags.is_empty() {
        return "You don't have any tags yet.".into();
    }
    let list: Vec<String> = tags
        .iter()
        .take(30)
        .map(|t| match t {
            Value::String(name) => name.clone(),
            _ => {
                let name = t.get("tag").and_then(Value::as_str).unwrap_or("?");
                match t.get("count").and_then(Value::as_u64) {
                    Some(count) => format!("{name} ({count})"),
                    None => name.to_owned(),
                }
            }
        })
        .collect();
    let more = if tags.len() > 30 {
        format!(" and {} more", tags.len() - 30)
    } else {
        String::new()
    };
    format!("Your tags: {}{more}.", list.join(", "))
}

/// Tags as a list, from a comma-separated string or a JSON array.
fn tags_of(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

// === Building the response ===

fn text(content: String) -> ChatMessage {
    ChatMessage::Assistant {
        content: Some(content),
        tool_calls: Vec::new(),
    }
}

/// Tool calls with ids derived from the conversation: deterministic, distinct within one
/// response (`splitmix64` is a bijection of `seed + n`).
fn tool_calls(seed: u64, calls: Vec<(&'static str, Value)>) -> ChatMessage {
    ChatMessage::Assistant {
        content: None,
        tool_calls: calls
            .into_iter()
            .zip(0u64..)
            .map(|((name, args), n)| ToolCall {
                id: format!("call_{:016x}", splitmix64(seed.wrapping_add(n))),
                kind: "function".into(),
                function: FunctionCall {
                    name: name.to_owned(),
                    arguments: args.to_string(),
                },
            })
            .collect(),
    }
}

/// About four characters a token, as Azure estimates on arrival.
fn tokens(bytes: usize) -> u32 {
    u32::try_from(bytes / 4 + 1).unwrap_or(u32::MAX)
}

fn estimate_prompt(request: &ChatRequest) -> u32 {
    tokens(request.prompt_text_len())
}

/// FNV-1a over the conversation's roles and texts: deterministic tool-call ids.
fn conversation_hash(messages: &[ChatMessage]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    };
    for message in messages {
        match message {
            ChatMessage::System { content } => {
                feed(b"s");
                feed(content.as_bytes());
            }
            ChatMessage::User { content } => {
                feed(b"u");
                feed(content.as_bytes());
            }
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                feed(b"a");
                feed(content.as_deref().unwrap_or("").as_bytes());
                for call in tool_calls {
                    feed(call.id.as_bytes());
                    feed(call.function.name.as_bytes());
                    feed(call.function.arguments.as_bytes());
                }
            }
            ChatMessage::Tool {
                tool_call_id,
                content,
            } => {
                feed(b"t");
                feed(tool_call_id.as_bytes());
                feed(content.as_bytes());
            }
        }
    }
    hash
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
