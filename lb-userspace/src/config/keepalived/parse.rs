//! The lines of a keepalived.conf as a tree: each statement is a keyword with its arguments
//! and, when a `{` follows it (on its line or the next), a block of statements up to the
//! matching `}`. Within a block a new line starts a new statement, as keepalived reads it;
//! `{ a }` on one line holds the statement `a`.

use super::lexer::{Item, Line};
use super::{Diags, Pos};

/// One statement: `words[0]` is the keyword.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Node {
    pub(super) at: Pos,
    pub(super) words: Vec<String>,
    /// The statements between its `{` and `}`; `None` without a block.
    pub(super) block: Option<Vec<Node>>,
}

impl Node {
    pub(super) fn keyword(&self) -> &str {
        &self.words[0]
    }

    /// The arguments after the keyword.
    pub(super) fn args(&self) -> &[String] {
        &self.words[1..]
    }

    /// The statements of its block (none without one).
    pub(super) fn children(&self) -> &[Node] {
        self.block.as_deref().unwrap_or_default()
    }
}

/// Builds the tree; braces that do not match are reported and the tree is closed as well as it
/// can be.
pub(super) fn tree(lines: Vec<Line>, diags: &mut Diags) -> Vec<Node> {
    // The open blocks: each the statement that owns it and the statements read so far.
    let mut open: Vec<(Node, Vec<Node>)> = Vec::new();
    let mut top: Vec<Node> = Vec::new();
    for line in lines {
        let mut statement: Option<Node> = None;
        for item in line.items {
            match item {
                Item::Word(w) => statement.get_or_insert_with(|| Node { at: line.at, words: Vec::new(), block: None }).words.push(w),
                Item::Open => {
                    let owner = match statement.take() {
                        Some(s) => Some(s),
                        // `keyword` on one line and `{` on the next.
                        None => current(&mut open, &mut top).pop_if(|last| last.block.is_none() && last.at.line < line.at.line),
                    };
                    match owner {
                        Some(owner) => open.push((owner, Vec::new())),
                        None => {
                            diags.error(line.at, "'{' without a keyword before it");
                            open.push((Node { at: line.at, words: vec!["{".into()], block: None }, Vec::new()));
                        }
                    }
                }
                Item::Close => {
                    if let Some(s) = statement.take() {
                        current(&mut open, &mut top).push(s);
                    }
                    match open.pop() {
                        Some((mut owner, children)) => {
                            owner.block = Some(children);
                            current(&mut open, &mut top).push(owner);
                        }
                        None => diags.error(line.at, "'}' closes no block"),
                    }
                }
            }
        }
        if let Some(s) = statement {
            current(&mut open, &mut top).push(s);
        }
    }
    while let Some((mut owner, children)) = open.pop() {
        diags.error(owner.at, format!("the block of {} is not closed: '}}' missing", owner.keyword()));
        owner.block = Some(children);
        current(&mut open, &mut top).push(owner);
    }
    // A stray '{' was given a placeholder owner to keep the braces paired; its statements stay.
    top.into_iter().flat_map(|n| if n.keyword() == "{" { n.block.unwrap_or_default() } else { vec![n] }).collect()
}

/// The statements of the innermost open block, or the top level.
fn current<'a>(open: &'a mut [(Node, Vec<Node>)], top: &'a mut Vec<Node>) -> &'a mut Vec<Node> {
    match open.last_mut() {
        Some((_, children)) => children,
        None => top,
    }
}
