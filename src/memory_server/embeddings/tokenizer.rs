//! BERT's uncased WordPiece tokenizer, from a `vocab.txt` (one token a line, its line number
//! its id), as sentence-transformers' `BertTokenizer` does it: clean, split CJK characters,
//! lower-case and strip accents, split on white space and punctuation, then greedy
//! longest-match word pieces (`##` marks a continuation).

use std::collections::HashMap;
use std::path::Path;

use unicode_normalization::UnicodeNormalization;

use super::EmbedError;

/// Longest word (in characters) split into pieces; longer ones become `[UNK]`.
const MAX_WORD_CHARS: usize = 100;

/// A WordPiece vocabulary.
#[derive(Debug, Clone)]
pub struct WordPiece {
    vocab: HashMap<String, u32>,
    /// `[CLS]`.
    pub cls: u32,
    /// `[SEP]`.
    pub sep: u32,
    unk: u32,
}

impl WordPiece {
    /// Reads `vocab.txt`.
    pub fn load(path: &Path) -> Result<WordPiece, EmbedError> {
        let text = std::fs::read_to_string(path).map_err(|e| EmbedError::Model {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        WordPiece::from_lines(text.lines()).map_err(|message| EmbedError::Model {
            path: path.to_owned(),
            message,
        })
    }

    /// Builds the vocabulary from its lines.
    pub fn from_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Result<WordPiece, String> {
        let mut vocab = HashMap::new();
        for (id, token) in lines.enumerate() {
            let id = u32::try_from(id).map_err(|_| "vocabulary too large".to_owned())?;
            vocab
                .entry(token.trim_end_matches('\r').to_owned())
                .or_insert(id);
        }
        let get = |name: &str| {
            vocab
                .get(name)
                .copied()
                .ok_or_else(|| format!("the vocabulary has no {name} token"))
        };
        Ok(WordPiece {
            cls: get("[CLS]")?,
            sep: get("[SEP]")?,
            unk: get("[UNK]")?,
            vocab,
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.vocab.len()
    }

    /// True for an empty vocabulary (never: [`WordPiece::from_lines`] needs three tokens).
    pub fn is_empty(&self) -> bool {
        self.vocab.is_empty()
    }

    /// `[CLS] pieces... [SEP]`, at most `max_tokens` ids in all.
    pub fn encode(&self, text: &str, max_tokens: usize) -> Vec<u32> {
        let room = max_tokens.saturating_sub(2);
        let mut ids = vec![self.cls];
        'words: for word in basic_split(text) {
            for id in self.pieces(&word) {
                if ids.len() > room {
                    break 'words;
                }
                ids.push(id);
            }
        }
        ids.push(self.sep);
        ids
    }

    fn pieces(&self, word: &str) -> Vec<u32> {
        let chars: Vec<char> = word.chars().collect();
        if chars.len() > MAX_WORD_CHARS {
            return vec![self.unk];
        }
        let mut out = Vec::new();
        let mut start = 0;
        let mut candidate = String::with_capacity(word.len() + 2);
        while start < chars.len() {
            let mut end = chars.len();
            let mut found = None;
            while start < end {
                candidate.clear();
                if start > 0 {
                    candidate.push_str("##");
                }
                candidate.extend(&chars[start..end]);
                if let Some(id) = self.vocab.get(&candidate) {
                    found = Some(*id);
                    break;
                }
                end -= 1;
            }
            match found {
                Some(id) => {
                    out.push(id);
                    start = end;
                }
                None => return vec![self.unk],
            }
        }
        out
    }
}

/// BERT's basic tokenizer: words and punctuation marks, lower-cased, accents stripped.
pub fn basic_split(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let flush = |current: &mut String, words: &mut Vec<String>| {
        if !current.is_empty() {
            words.push(std::mem::take(current));
        }
    };
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || (c.is_control() && !c.is_whitespace()) {
            continue;
        }
        if c.is_whitespace() {
            flush(&mut current, &mut words);
            continue;
        }
        if is_punctuation(c) || is_cjk(c) {
            flush(&mut current, &mut words);
            words.push(c.to_lowercase().collect());
            continue;
        }
        for lower in c.to_lowercase() {
            // NFD, then drop combining marks: "é" -> "e".
            for d in std::iter::once(lower).nfd() {
                if !is_combining_mark(d) {
                    current.push(d);
                }
            }
        }
    }
    flush(&mut current, &mut words);
    words
}

fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(c as u32,
            0x00A1..=0x00BF | 0x2010..=0x2027 | 0x2030..=0x205E | 0x3000..=0x303F
            | 0xFF01..=0xFF0F | 0xFF1A..=0xFF20 | 0xFF3B..=0xFF40 | 0xFF5B..=0xFF65)
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

fn is_combining_mark(c: char) -> bool {
    matches!(c as u32, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}
