//! Topics, subscription patterns, and the trie that matches one against the other.
//!
//! A topic is a string of tokens separated by `.`: `prices.eu.btc`. A pattern is a topic in
//! which a whole token may be a wildcard, NATS-style:
//!
//! | pattern | matches | does not match |
//! |---|---|---|
//! | `prices.eu.btc` | `prices.eu.btc` | `prices.eu` |
//! | `prices.*.btc` | `prices.eu.btc`, `prices.us.btc` | `prices.eu.x.btc` |
//! | `prices.>` | `prices.eu`, `prices.eu.btc` | `prices` |
//! | `>` | every topic | |
//!
//! `*` matches exactly one token; `>` may only be the last token and matches one or more.
//! Tokens are never empty, so `a..b`, `.a` and `a.` are invalid.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::sync::Arc;

/// The trie's maps, keyed by tokens of the patterns subscribers choose: hashed with a key
/// drawn at random for each map (std's SipHash-1-3), so that no subscriber can aim its
/// patterns at one bucket. A publish matches the trie only when its handle's cached route
/// is stale (a new topic, or changed subscriptions), never per message of a repeated topic.
type TokenMap<V> = HashMap<Box<str>, V, RandomState>;

/// Why a topic or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The topic or pattern is empty, or has an empty token.
    #[error("topic {0:?} has an empty token")]
    EmptyToken(String),
    /// `>` appears before the last token.
    #[error("pattern {0:?} has '>' before its last token")]
    MisplacedTail(String),
    /// A wildcard is mixed with other characters in one token, such as `a*`.
    #[error("pattern {0:?} mixes a wildcard with other characters in one token")]
    PartialWildcard(String),
    /// A topic to publish on has a wildcard.
    #[error("topic {0:?} has a wildcard: only subscriptions may")]
    WildcardInTopic(String),
    /// The topic is longer than the wire allows (65,535 bytes).
    #[error("topic of {0} bytes is longer than 65535")]
    TooLong(usize),
}

fn check_tokens(text: &str) -> Result<(), TopicError> {
    if text.len() > u16::MAX as usize {
        return Err(TopicError::TooLong(text.len()));
    }
    if text.split('.').any(str::is_empty) {
        return Err(TopicError::EmptyToken(text.to_owned()));
    }
    Ok(())
}

/// Checks a topic to publish on: tokens, no wildcards.
///
/// # Errors
///
/// A [`TopicError`] saying what is wrong.
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    check_tokens(topic)?;
    if topic.split('.').any(|t| t.contains(['*', '>'])) {
        return Err(TopicError::WildcardInTopic(topic.to_owned()));
    }
    Ok(())
}

/// Checks a subscription pattern.
///
/// # Errors
///
/// A [`TopicError`] saying what is wrong.
pub fn validate_pattern(pattern: &str) -> Result<(), TopicError> {
    check_tokens(pattern)?;
    let tokens: Vec<&str> = pattern.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        match *t {
            ">" if i + 1 != tokens.len() => {
                return Err(TopicError::MisplacedTail(pattern.to_owned()))
            }
            "*" | ">" => {}
            t if t.contains(['*', '>']) => {
                return Err(TopicError::PartialWildcard(pattern.to_owned()))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether `topic` matches `pattern`, by walking both: the reference the trie is checked
/// against, and handy on its own.
///
/// # Example
///
/// ```
/// use msg::topic::matches;
///
/// assert!(matches("a.*.c", "a.b.c"));
/// assert!(matches("a.>", "a.b.c"));
/// assert!(!matches("a.>", "a"));
/// assert!(!matches("a.*", "a.b.c"));
/// ```
pub fn matches(pattern: &str, topic: &str) -> bool {
    let mut p = pattern.split('.');
    let mut t = topic.split('.');
    loop {
        match (p.next(), t.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// One token's place in the trie. Children are shared between the versions of a trie
/// (see [`Trie`]'s `Clone`): a change copies only the nodes on its pattern's path.
#[derive(Debug, Default, Clone)]
struct Node {
    exact: TokenMap<Arc<Node>>,
    star: Option<Arc<Node>>,
    /// Subscribers whose pattern ends here with `>`.
    tail: Vec<u64>,
    /// Subscribers whose pattern ends exactly here.
    here: Vec<u64>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.star.is_none() && self.tail.is_empty() && self.here.is_empty()
    }

    /// This node without `id` anywhere at or below it, or `None` if `id` holds nothing
    /// here: one walk of the subtree, copying only the nodes on the paths that change.
    fn without(&self, id: u64) -> Option<Node> {
        let star = self.star.as_deref().and_then(|star| star.without(id));
        let exact: Vec<(&str, Node)> = self
            .exact
            .iter()
            .filter_map(|(token, child)| child.without(id).map(|child| (&**token, child)))
            .collect();
        if star.is_none()
            && exact.is_empty()
            && !self.here.contains(&id)
            && !self.tail.contains(&id)
        {
            return None;
        }
        let mut node = self.clone();
        remove_id(&mut node.here, id);
        remove_id(&mut node.tail, id);
        if let Some(star) = star {
            node.star = (!star.is_empty()).then(|| Arc::new(star));
        }
        for (token, child) in exact {
            if child.is_empty() {
                node.exact.remove(token);
            } else {
                node.exact.insert(token.into(), Arc::new(child));
            }
        }
        Some(node)
    }
}

/// Subscription patterns of many subscribers, matched against a topic at a cost that grows
/// with the topic's tokens and the wildcards along its path, not with the number of
/// subscriptions.
///
/// A clone is cheap and shares every node with the original: a change to either copies
/// only the nodes on the changed pattern's path, so a publisher can read an immutable
/// version while the next one is made.
///
/// # Example
///
/// ```ignore
/// use msg::topic::Trie;
///
/// let mut trie = Trie::default();
/// trie.insert("a.b.c", 1);
/// trie.insert("a.*.d", 2);
/// trie.insert("a.>", 3);
/// let before = trie.clone();
/// trie.remove("a.>", 3);
/// let mut out = Vec::new();
/// trie.matching("a.b.c", &mut out);
/// assert_eq!(out, vec![1]);
/// before.matching("a.b.c", &mut out);
/// assert_eq!(out, vec![1, 3]);
/// before.matching("a.x.d", &mut out);
/// assert_eq!(out, vec![2, 3]);
/// ```
#[derive(Debug, Default, Clone)]
pub(crate) struct Trie {
    root: Arc<Node>,
}

impl Trie {
    /// Subscribes `id` to `pattern` (a valid pattern; see [`validate_pattern`]). Returns
    /// whether it was new; a pattern already held copies nothing.
    pub(crate) fn insert(&mut self, pattern: &str, id: u64) -> bool {
        if self.contains(pattern, id) {
            return false;
        }
        let mut node = Arc::make_mut(&mut self.root);
        let mut tokens = pattern.split('.').peekable();
        while let Some(token) = tokens.next() {
            if token == ">" && tokens.peek().is_none() {
                return push_unique(&mut node.tail, id);
            }
            let child = if token == "*" {
                node.star.get_or_insert_with(Arc::default)
            } else {
                node.exact.entry(token.into()).or_default()
            };
            node = Arc::make_mut(child);
        }
        push_unique(&mut node.here, id)
    }

    /// Whether `id` is subscribed to `pattern`.
    pub(crate) fn contains(&self, pattern: &str, id: u64) -> bool {
        let mut node = &*self.root;
        let mut tokens = pattern.split('.').peekable();
        while let Some(token) = tokens.next() {
            if token == ">" && tokens.peek().is_none() {
                return node.tail.contains(&id);
            }
            let child = if token == "*" {
                node.star.as_deref()
            } else {
                node.exact.get(token).map(|child| &**child)
            };
            match child {
                Some(child) => node = child,
                None => return false,
            }
        }
        node.here.contains(&id)
    }

    /// Unsubscribes `id` from `pattern`. Returns whether it was subscribed; a pattern not
    /// held copies nothing.
    pub(crate) fn remove(&mut self, pattern: &str, id: u64) -> bool {
        if !self.contains(pattern, id) {
            return false;
        }
        let tokens: Vec<&str> = pattern.split('.').collect();
        remove_at(Arc::make_mut(&mut self.root), &tokens, id)
    }

    /// Unsubscribes `id` from everything.
    pub(crate) fn remove_all(&mut self, id: u64) {
        if let Some(root) = self.root.without(id) {
            self.root = Arc::new(root);
        }
    }

    /// The patterns `id` is subscribed to, in no order: one walk of the trie.
    pub(crate) fn patterns_of(&self, id: u64) -> Vec<String> {
        let mut out = Vec::new();
        patterns_below(&self.root, &mut Vec::new(), id, &mut out);
        out
    }

    /// Fills `out` with the subscribers whose patterns match `topic`, each once, sorted.
    pub(crate) fn matching(&self, topic: &str, out: &mut Vec<u64>) {
        out.clear();
        collect(&self.root, topic.split('.'), out);
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }
}

fn push_unique(ids: &mut Vec<u64>, id: u64) -> bool {
    if ids.contains(&id) {
        return false;
    }
    ids.push(id);
    true
}

fn remove_id(ids: &mut Vec<u64>, id: u64) -> bool {
    let before = ids.len();
    ids.retain(|&x| x != id);
    ids.len() != before
}

/// Removes `id`'s pattern `tokens` below `node`, copying the nodes on its path that are
/// shared, and prunes the nodes left empty.
fn remove_at(node: &mut Node, tokens: &[&str], id: u64) -> bool {
    match tokens {
        [] => remove_id(&mut node.here, id),
        [">"] => remove_id(&mut node.tail, id),
        [first, rest @ ..] => {
            if *first == "*" {
                let Some(child) = node.star.as_mut() else {
                    return false;
                };
                let child = Arc::make_mut(child);
                let removed = remove_at(child, rest, id);
                if child.is_empty() {
                    node.star = None;
                }
                removed
            } else {
                let Some(child) = node.exact.get_mut(*first) else {
                    return false;
                };
                let child = Arc::make_mut(child);
                let removed = remove_at(child, rest, id);
                if child.is_empty() {
                    node.exact.remove(*first);
                }
                removed
            }
        }
    }
}

/// Adds to `out` the patterns of `id` at or below `node`, whose path from the root is
/// `path`.
fn patterns_below<'a>(node: &'a Node, path: &mut Vec<&'a str>, id: u64, out: &mut Vec<String>) {
    let joined = |path: &[&str], last: Option<&str>| {
        let mut tokens = path.to_vec();
        tokens.extend(last);
        tokens.join(".")
    };
    if node.here.contains(&id) {
        out.push(joined(path, None));
    }
    if node.tail.contains(&id) {
        out.push(joined(path, Some(">")));
    }
    if let Some(star) = node.star.as_deref() {
        path.push("*");
        patterns_below(star, path, id, out);
        path.pop();
    }
    for (token, child) in node.exact.iter() {
        path.push(token);
        patterns_below(child, path, id, out);
        path.pop();
    }
}

fn collect(node: &Node, mut tokens: std::str::Split<'_, char>, out: &mut Vec<u64>) {
    let Some(first) = tokens.next() else {
        out.extend_from_slice(&node.here);
        return;
    };
    out.extend_from_slice(&node.tail);
    if let Some(star) = node.star.as_deref() {
        collect(star, tokens.clone(), out);
    }
    if let Some(child) = node.exact.get(first) {
        collect(child, tokens, out);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn validation_refuses_what_the_grammar_forbids() {
        assert!(validate_topic("a.b.c").is_ok());
        assert!(validate_topic("some_interesting_topic").is_ok());
        assert!(matches!(
            validate_topic("a..b"),
            Err(TopicError::EmptyToken(_))
        ));
        assert!(matches!(validate_topic(""), Err(TopicError::EmptyToken(_))));
        assert!(matches!(
            validate_topic("a.*"),
            Err(TopicError::WildcardInTopic(_))
        ));
        assert!(validate_pattern("a.*.>").is_ok());
        assert!(matches!(
            validate_pattern("a.>.b"),
            Err(TopicError::MisplacedTail(_))
        ));
        assert!(matches!(
            validate_pattern("a.b*"),
            Err(TopicError::PartialWildcard(_))
        ));
        assert!(matches!(
            validate_topic(&"x".repeat(70_000)),
            Err(TopicError::TooLong(70_000))
        ));
    }

    #[test]
    fn the_patterns_of_one_subscriber_are_found_whole() {
        let mut trie = Trie::default();
        for (pattern, id) in [
            ("a.b.c", 1),
            ("a.*.d", 1),
            ("a.>", 1),
            (">", 1),
            ("a.b.c", 2),
        ] {
            trie.insert(pattern, id);
        }
        let mut found = trie.patterns_of(1);
        found.sort();
        assert_eq!(found, vec![">", "a.*.d", "a.>", "a.b.c"]);
        assert_eq!(trie.patterns_of(2), vec!["a.b.c"]);
        assert!(trie.patterns_of(3).is_empty());
    }

    #[test]
    fn overlapping_patterns_each_match_their_own() {
        let mut trie = Trie::default();
        trie.insert("a.b.c", 1);
        trie.insert("a.*.d", 2);
        trie.insert("a.*.c", 3);
        trie.insert("a.>", 4);
        trie.insert("*.b.*", 5);
        let mut out = Vec::new();
        trie.matching("a.b.c", &mut out);
        assert_eq!(out, vec![1, 3, 4, 5]);
        trie.matching("a.b.d", &mut out);
        assert_eq!(out, vec![2, 4, 5]);
        trie.matching("a", &mut out);
        assert!(out.is_empty());
        assert!(trie.remove("a.*.d", 2));
        assert!(!trie.remove("a.*.d", 2));
        trie.matching("a.b.d", &mut out);
        assert_eq!(out, vec![4, 5]);
        trie.remove_all(4);
        trie.matching("a.b.d", &mut out);
        assert_eq!(out, vec![5]);
    }

    #[test]
    fn a_clone_keeps_its_version_while_the_original_changes() {
        let mut trie = Trie::default();
        trie.insert("a.b", 1);
        trie.insert("a.*", 2);
        trie.insert("x.>", 3);
        trie.insert("k.l", 5);
        let snapshot = trie.clone();
        assert!(trie.remove("a.*", 2));
        assert!(trie.insert("a.b", 4));
        trie.remove_all(3);
        let mut out = Vec::new();
        snapshot.matching("a.b", &mut out);
        assert_eq!(out, vec![1, 2]);
        snapshot.matching("x.y", &mut out);
        assert_eq!(out, vec![3]);
        trie.matching("a.b", &mut out);
        assert_eq!(out, vec![1, 4]);
        trie.matching("x.y", &mut out);
        assert!(out.is_empty());
        // The branch the changes did not touch is still shared.
        assert!(Arc::ptr_eq(
            &trie.root.exact["k"],
            &snapshot.root.exact["k"]
        ));
    }

    #[test]
    fn a_change_that_changes_nothing_copies_nothing() {
        let mut trie = Trie::default();
        trie.insert("a.b.c", 1);
        trie.insert("a.>", 2);
        let snapshot = trie.clone();
        assert!(!trie.insert("a.b.c", 1));
        assert!(!trie.remove("a.b.c", 2));
        assert!(!trie.remove("q.r", 1));
        trie.remove_all(9);
        assert!(Arc::ptr_eq(&trie.root, &snapshot.root));
        assert!(trie.contains("a.>", 2));
        assert!(!trie.contains("a.*", 2));
    }

    /// The matcher, pinned case by case from the grammar: the property test below checks
    /// the trie against it, so a mistake the two shared would go unseen without this.
    #[test]
    fn the_matcher_follows_the_grammar_case_by_case() {
        let cases = [
            ("a.b.c", "a.b.c", true),
            ("a.b.c", "a.b", false),
            ("a.b.c", "a.b.c.d", false),
            ("a.*.c", "a.x.c", true),
            ("a.*.c", "a.c", false),
            ("a.*.c", "a.x.y.c", false),
            ("*", "a", true),
            ("*", "a.b", false),
            ("*.*", "a.b", true),
            ("*.b.*", "a.b.c", true),
            ("*.b.*", "a.b.c.d", false),
            ("a.>", "a.b", true),
            ("a.>", "a.b.c.d", true),
            // `>` stands for one token or more, never none.
            ("a.>", "a", false),
            (">", "a", true),
            (">", "a.b.c", true),
            ("a.*.>", "a.b", false),
            ("a.*.>", "a.b.c", true),
            ("a", "ab", false),
            ("ab", "a", false),
        ];
        for (pattern, topic, want) in cases {
            assert_eq!(matches(pattern, topic), want, "{pattern} against {topic}");
        }
    }

    fn token() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "c"]).prop_map(str::to_owned)
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(token(), 1..5).prop_map(|t| t.join("."))
    }

    fn pattern() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(prop_oneof![token(), Just("*".to_owned())], 1..5),
            any::<bool>(),
        )
            .prop_map(|(mut tokens, tail)| {
                if tail {
                    *tokens.last_mut().expect("at least one token") = ">".to_owned();
                }
                tokens.join(".")
            })
    }

    proptest! {
        #[test]
        fn trie_agrees_with_the_naive_matcher(
            patterns in prop::collection::vec(pattern(), 0..24),
            topics in prop::collection::vec(topic(), 1..16),
            removed in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            gone in prop::option::of(0u64..7),
        ) {
            let mut trie = Trie::default();
            let mut live: Vec<(String, u64)> = Vec::new();
            for (i, p) in patterns.iter().enumerate() {
                prop_assert!(validate_pattern(p).is_ok(), "generated pattern {} is invalid", p);
                let id = (i % 7) as u64;
                trie.insert(p, id);
                if !live.iter().any(|(q, j)| q == p && *j == id) {
                    live.push((p.clone(), id));
                }
            }
            // A clone taken now keeps this version whatever is done to the original.
            let before = (trie.clone(), live.clone());
            for index in removed {
                if live.is_empty() {
                    break;
                }
                let (p, id) = live.remove(index.index(live.len()));
                prop_assert!(trie.remove(&p, id));
            }
            if let Some(id) = gone {
                trie.remove_all(id);
                live.retain(|(_, j)| *j != id);
            }
            let mut out = Vec::new();
            for (trie, live) in [(&trie, &live), (&before.0, &before.1)] {
                for t in &topics {
                    trie.matching(t, &mut out);
                    let mut want: Vec<u64> = live
                        .iter()
                        .filter(|(p, _)| matches(p, t))
                        .map(|(_, id)| *id)
                        .collect();
                    want.sort_unstable();
                    want.dedup();
                    prop_assert_eq!(&out, &want, "topic {}", t);
                }
            }
        }
    }
}
