//! keepalived.conf as lines of words: comments (`#` and `!` outside quotes) removed, quoted
//! strings (`"..."`, `'...'`) joined into one word without their quotes, a trailing `\`
//! joining the next line, `{` and `}` words of their own wherever they stand, and `include`
//! lines replaced by the lines of the files they name (globs and `{a,b}` braces, relative to
//! the including file's directory, as keepalived resolves them).
//!
//! keepalived reads its file line by line; so does this lexer, and every line keeps the file and
//! line it was read from, for diagnostics.

use std::{
    io,
    path::{Path, PathBuf},
};

use super::{Diags, Files, Pos};

/// How deep `include` may nest.
const MAX_INCLUDE_DEPTH: usize = 16;
/// How many files a configuration may read in all (a file included twice counts twice).
const MAX_FILES: usize = 256;
/// At most this many patterns from one `{a,b}` expansion.
const MAX_BRACE_EXPANSIONS: usize = 256;

/// One word of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Item {
    Word(String),
    Open,
    Close,
}

/// A line (with the lines a trailing `\` joined to it) split into words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Line {
    pub(super) at: Pos,
    pub(super) items: Vec<Item>,
}

/// Why a line or an include could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum LexError {
    #[error("unterminated {0} quote")]
    UnterminatedQuote(char),
    #[error("{keyword} needs a file name or pattern")]
    IncludeWithoutFile { keyword: String },
    #[error("include {pattern}: includes nest deeper than {MAX_INCLUDE_DEPTH} files")]
    TooDeep { pattern: String },
    #[error("include {pattern}: {path} includes itself (an include loop)")]
    Loop { pattern: String, path: String },
    #[error("include {pattern}: more than {MAX_FILES} files read in all")]
    TooMany { pattern: String },
    #[error("include {pattern}: {source}")]
    Pattern { pattern: String, source: glob::PatternError },
    #[error("include {pattern}: {source}")]
    Glob { pattern: String, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("conditional configuration (lines starting with @) is not supported: keep the lines meant for this node and remove the @ prefix")]
    Conditional,
    #[error("parameter definitions ($NAME=...) are not supported: write the values out")]
    Definition,
    #[error("sequence and list blocks (~SEQ, ~LST) are not supported: write the lines out")]
    Sequence,
}

/// The lines of `path` (the file whose text is `text`), with every `include` replaced by the
/// lines of what it names. `names` gets the display name of every file read (a [`Pos`]'s file
/// indexes it).
pub(super) fn read(files: &dyn Files, path: &Path, text: &str, names: &mut Vec<String>, diags: &mut Diags) -> Vec<Line> {
    let mut out = Vec::new();
    read_into(files, path, text, &mut Vec::new(), names, diags, &mut out);
    out
}

/// `stack`: the files being read, outermost first (an include of one of them is a loop).
fn read_into(
    files: &dyn Files,
    path: &Path,
    text: &str,
    stack: &mut Vec<PathBuf>,
    names: &mut Vec<String>,
    diags: &mut Diags,
    out: &mut Vec<Line>,
) {
    let file = names.len();
    names.push(path.display().to_string());
    stack.push(path.to_path_buf());
    let mut physical = text.lines().enumerate();
    while let Some((index, first)) = physical.next() {
        let at = Pos { file, line: index + 1 };
        // keepalived reads an include line before it looks for braces: `{a,b}` is a pattern.
        let braces = !first.split_whitespace().next().is_some_and(is_include);
        let mut split = Splitter { braces, ..Splitter::default() };
        let mut more = split.feed(first);
        while more {
            match physical.next() {
                Some((_, next)) => more = split.feed(next),
                None => more = false,
            }
        }
        let items = match split.finish() {
            Ok(items) => items,
            Err(e) => {
                diags.error(at, e.to_string());
                continue;
            }
        };
        let Some(Item::Word(first_word)) = items.first() else {
            if !items.is_empty() {
                out.push(Line { at, items });
            }
            continue;
        };
        if let Some(e) = unsupported_syntax(first_word) {
            diags.error(at, e.to_string());
            continue;
        }
        if is_include(first_word) {
            include(files, path, &items, at, stack, names, diags, out);
            continue;
        }
        out.push(Line { at, items });
    }
    stack.pop();
}

/// keepalived's `include` and its variants (which add checks of their own: here, a pattern that
/// matches nothing is an error for them and a warning for `include` and `includer`).
fn is_include(word: &str) -> bool {
    matches!(word, "include" | "includer" | "includem" | "includew" | "includeb" | "includea")
}

fn unsupported_syntax(first_word: &str) -> Option<LexError> {
    if first_word.starts_with('@') {
        Some(LexError::Conditional)
    } else if first_word.starts_with('$') && first_word.contains('=') {
        Some(LexError::Definition)
    } else if first_word.starts_with("~SEQ") || first_word.starts_with("~LST") {
        Some(LexError::Sequence)
    } else {
        None
    }
}

#[allow(clippy::too_many_arguments)]
fn include(
    files: &dyn Files,
    including: &Path,
    items: &[Item],
    at: Pos,
    stack: &mut Vec<PathBuf>,
    names: &mut Vec<String>,
    diags: &mut Diags,
    out: &mut Vec<Line>,
) {
    let words: Vec<&str> = items.iter().filter_map(|i| if let Item::Word(w) = i { Some(w.as_str()) } else { None }).collect();
    let keyword = words[0];
    let Some(&pattern) = words.get(1) else {
        diags.error(at, LexError::IncludeWithoutFile { keyword: keyword.to_string() }.to_string());
        return;
    };
    if words.len() > 2 || words.len() != items.len() {
        diags.warning(at, format!("{keyword}: only the first file name is read; the rest of the line is ignored"));
    }
    if stack.len() >= MAX_INCLUDE_DEPTH {
        diags.error(at, LexError::TooDeep { pattern: pattern.to_string() }.to_string());
        return;
    }
    let dir = including.parent().unwrap_or(Path::new(""));
    let mut matched: Vec<PathBuf> = Vec::new();
    for expanded in expand_braces(pattern) {
        let full = if Path::new(&expanded).is_absolute() { PathBuf::from(&expanded) } else { dir.join(&expanded) };
        let full = full.display().to_string();
        if let Err(source) = glob::Pattern::new(&full) {
            diags.error(at, LexError::Pattern { pattern: pattern.to_string(), source }.to_string());
            return;
        }
        match files.glob(&full) {
            Ok(found) => {
                for p in found {
                    if !matched.contains(&p) {
                        matched.push(p);
                    }
                }
            }
            Err(source) => {
                diags.error(at, LexError::Glob { pattern: pattern.to_string(), source }.to_string());
                return;
            }
        }
    }
    if matched.is_empty() {
        let message = format!("{keyword} {pattern}: no file matches");
        if matches!(keyword, "include" | "includer") {
            diags.warning(at, message);
        } else {
            diags.error(at, message);
        }
    }
    for path in matched {
        if stack.contains(&path) {
            diags.error(at, LexError::Loop { pattern: pattern.to_string(), path: path.display().to_string() }.to_string());
            continue;
        }
        if names.len() >= MAX_FILES {
            diags.error(at, LexError::TooMany { pattern: pattern.to_string() }.to_string());
            return;
        }
        match files.read(&path) {
            Ok(text) => read_into(files, &path, &text, stack, names, diags, out),
            Err(source) => diags.error(at, LexError::Read { path: path.display().to_string(), source }.to_string()),
        }
    }
}

/// `a{b,c}d{e,f}` as `abde`, `abdf`, `acde`, `acdf` (csh braces, nested allowed); a pattern
/// without braces as itself. At most [`MAX_BRACE_EXPANSIONS`] results.
pub(super) fn expand_braces(pattern: &str) -> Vec<String> {
    let Some(open) = pattern.find('{') else { return vec![pattern.to_string()] };
    // The matching close brace, and the top-level commas between.
    let mut depth = 0;
    let mut commas = Vec::new();
    let mut close = None;
    for (i, c) in pattern[open..].char_indices().map(|(i, c)| (i + open, c)) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            ',' if depth == 1 => commas.push(i),
            _ => {}
        }
    }
    let Some(close) = close else { return vec![pattern.to_string()] };
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    let mut bounds = vec![open];
    bounds.extend(&commas);
    bounds.push(close);
    let mut out = Vec::new();
    for pair in bounds.windows(2) {
        let alternative = &pattern[pair[0] + 1..pair[1]];
        for rest in expand_braces(&format!("{alternative}{tail}")) {
            if out.len() == MAX_BRACE_EXPANSIONS {
                return out;
            }
            out.push(format!("{head}{rest}"));
        }
    }
    out
}

/// Splits one logical line into words, as keepalived does: white space separates words
/// outside quotes, quotes are removed and may join text (`ab"c d"` is `abc d`), a backslash
/// takes the next character as it is (`\n`, `\t` and `\r` stand for their control characters),
/// `#` and `!` outside quotes start a comment, `{` and `}` outside quotes are words of their
/// own.
#[derive(Default)]
struct Splitter {
    /// Whether `{` and `}` are words of their own (not on include lines).
    braces: bool,
    items: Vec<Item>,
    word: Option<String>,
    quote: Option<char>,
    unterminated: Option<char>,
}

impl Splitter {
    /// Takes one physical line; true when it ended with a `\` that joins the next one.
    fn feed(&mut self, line: &str) -> bool {
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if let Some(q) = self.quote {
                match c {
                    _ if c == q => self.quote = None,
                    '\\' => match chars.next() {
                        Some(e) => self.push(unescape(e)),
                        None => return true,
                    },
                    _ => self.push(c),
                }
                continue;
            }
            match c {
                '#' | '!' => break,
                '"' | '\'' => {
                    self.word.get_or_insert_with(String::new);
                    self.quote = Some(c);
                }
                '{' | '}' if self.braces => {
                    self.flush();
                    self.items.push(if c == '{' { Item::Open } else { Item::Close });
                }
                '\\' => match chars.next() {
                    Some(e) => self.push(unescape(e)),
                    None => {
                        // A continuation: the next line goes on this one, after white space.
                        self.flush();
                        return true;
                    }
                },
                c if c.is_whitespace() => self.flush(),
                c => self.push(c),
            }
        }
        if let Some(q) = self.quote.take() {
            self.unterminated = Some(q);
        }
        self.flush();
        false
    }

    fn push(&mut self, c: char) {
        self.word.get_or_insert_with(String::new).push(c);
    }

    fn flush(&mut self) {
        if let Some(word) = self.word.take() {
            self.items.push(Item::Word(word));
        }
    }

    fn finish(self) -> Result<Vec<Item>, LexError> {
        match self.unterminated {
            Some(q) => Err(LexError::UnterminatedQuote(q)),
            None => Ok(self.items),
        }
    }
}

fn unescape(c: char) -> char {
    match c {
        'n' => '\n',
        't' => '\t',
        'r' => '\r',
        other => other,
    }
}

/// Splits a script as keepalived does (`notify_master "/etc/notify.sh master"`): words
/// separated by white space, single or double quotes keeping white space within one.
pub(super) fn script_words(script: &str) -> Result<Vec<String>, LexError> {
    // A script is one word already: its comment characters and braces are its own.
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in script.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '"' | '\'') => {
                word.get_or_insert_with(String::new);
                quote = Some(c);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(q) = quote {
        return Err(LexError::UnterminatedQuote(q));
    }
    words.extend(word);
    Ok(words)
}
