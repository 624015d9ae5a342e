//! The book's structure and links: every chapter is in `SUMMARY.md` and in the doctest
//! harness (`tests/lib.rs`), every relative link in the book (and every link from the README
//! and TESTING.md into it) points at a file that exists and, with an `#anchor`, at a heading
//! of that file, and every `{{#include}}` finds its file. Each failure names the file and the
//! link.
//!
//! Anchors follow mdBook's rule (GitHub's is the same for these headings): the heading's
//! text, lower case, each space a `-`, every character but letters, digits, `-` and `_`
//! dropped; a repeated heading gets `-1`, `-2`... A file's headings include those of the
//! files it includes.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn book_src() -> PathBuf {
    root().join("book/src")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `path` relative to the repository's root, for messages.
fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The chapter files in `book/src/`, by name, `SUMMARY.md` left out.
fn chapter_files() -> BTreeSet<String> {
    fs::read_dir(book_src())
        .expect("book/src exists")
        .map(|entry| entry.expect("a directory entry").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md") && name != "SUMMARY.md")
        .collect()
}

/// The lines of `text` outside fenced code blocks, with their line numbers (from 1).
fn outside_fences(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut fence: Option<usize> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let ticks = trimmed.chars().take_while(|&c| c == '`').count();
        if ticks >= 3 {
            match fence {
                None => {
                    fence = Some(ticks);
                    continue;
                }
                Some(open) if ticks >= open && trimmed[ticks..].trim().is_empty() => {
                    fence = None;
                    continue;
                }
                Some(_) => {}
            }
        }
        if fence.is_none() {
            out.push((i + 1, line));
        }
    }
    out
}

/// [`outside_fences`], with inline code spans blanked so that a link written as code is
/// not taken for one.
fn prose_lines(text: &str) -> Vec<(usize, String)> {
    outside_fences(text)
        .into_iter()
        .map(|(n, line)| (n, blank_code_spans(line)))
        .collect()
}

/// `line` with the inside of each `code span` replaced by spaces.
fn blank_code_spans(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '`' {
            out.push(c);
            continue;
        }
        let mut open = 1;
        while chars.peek() == Some(&'`') {
            chars.next();
            open += 1;
        }
        let rest: String = chars.clone().collect();
        let close = "`".repeat(open);
        match rest.find(&close) {
            Some(end) => {
                out.push_str(&" ".repeat(open * 2 + end));
                for _ in 0..end + open {
                    chars.next();
                }
            }
            None => out.push_str(&close),
        }
    }
    out
}

/// The targets of the inline links and link definitions in `line`.
fn links_in(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while let Some(at) = line[i..].find("](") {
        let start = i + at + 2;
        let mut depth = 1;
        let mut end = start;
        while end < bytes.len() {
            match bytes[end] {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            end += 1;
        }
        let target = line[start..end.min(bytes.len())]
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_matches(|c| c == '<' || c == '>');
        out.push(target.to_string());
        i = end.min(bytes.len());
    }
    // A link definition: `[name]: target`.
    let trimmed = line.trim_start();
    if trimmed.starts_with('[') {
        if let Some(pos) = trimmed.find("]:") {
            if let Some(target) = trimmed[pos + 2..].split_whitespace().next() {
                out.push(target.to_string());
            }
        }
    }
    out
}

/// The paths of the `{{#include path}}` directives in `text`, as written (without a
/// `:anchor` or line range after the path).
fn includes_in(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("{{#include ") {
            let after = &rest[at + "{{#include ".len()..];
            let end = after.find("}}").unwrap_or(after.len());
            let spec = after[..end].trim();
            let path = spec.split(':').next().unwrap_or(spec).to_string();
            out.push((n + 1, path));
            rest = &after[end..];
        }
    }
    out
}

/// mdBook's id for a heading's text.
fn anchor_of(heading: &str) -> String {
    // A link in a heading counts by its text only.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        text.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match (after.find("]("), after.find(')')) {
            (Some(close), Some(paren)) if close < paren => {
                text.push_str(&after[..close]);
                rest = &after[paren + 1..];
            }
            _ => {
                text.push('[');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    text.chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_lowercase().next().unwrap_or(c))
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// The anchors of `file`'s headings, those of the files it includes among them.
fn anchors(file: &Path, cache: &mut HashMap<PathBuf, BTreeSet<String>>) -> BTreeSet<String> {
    if let Some(found) = cache.get(file) {
        return found.clone();
    }
    let text = read(file);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in outside_fences(&text) {
        let trimmed = line.trim_start();
        let hashes = trimmed.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&hashes) && trimmed[hashes..].starts_with(' ') {
            let base = anchor_of(trimmed[hashes..].trim());
            let n = seen.entry(base.clone()).or_insert(0);
            out.insert(if *n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            });
            *n += 1;
        }
    }
    let dir = file.parent().expect("a file has a directory");
    for (_, included) in includes_in(&text) {
        let path = normalize(&dir.join(included));
        if path.exists() {
            out.extend(anchors(&path, cache));
        }
    }
    cache.insert(file.to_path_buf(), out.clone());
    out
}

/// Every broken relative link of `file`, as `file:line: link: why`. Links to other sites
/// are not followed; `only_into` keeps only the links whose target lies under that folder.
fn broken_links(
    file: &Path,
    only_into: Option<&Path>,
    cache: &mut HashMap<PathBuf, BTreeSet<String>>,
) -> Vec<String> {
    let text = read(file);
    let dir = file.parent().expect("a file has a directory");
    let mut problems = Vec::new();
    for (n, line) in prose_lines(&text) {
        for link in links_in(&line) {
            if link.is_empty() {
                problems.push(format!("{}:{n}: an empty link", shown(file)));
                continue;
            }
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match link.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (link.as_str(), None),
            };
            let target = if path.is_empty() {
                file.to_path_buf()
            } else {
                normalize(&dir.join(path))
            };
            if let Some(folder) = only_into {
                if !target.starts_with(folder) {
                    continue;
                }
            }
            if !target.exists() {
                problems.push(format!(
                    "{}:{n}: `{link}`: {} does not exist",
                    shown(file),
                    shown(&target)
                ));
                continue;
            }
            if let Some(anchor) = anchor {
                if target.extension().is_some_and(|e| e == "md")
                    && !anchors(&target, cache).contains(anchor)
                {
                    problems.push(format!(
                        "{}:{n}: `{link}`: no heading of {} has the anchor `#{anchor}`",
                        shown(file),
                        shown(&target)
                    ));
                }
            }
        }
    }
    problems
}

fn fail_on(problems: Vec<String>, what: &str) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

#[test]
fn summary_lists_every_chapter_and_every_entry_has_a_file() {
    let summary_path = book_src().join("SUMMARY.md");
    let summary = read(&summary_path);
    let mut listed = BTreeSet::new();
    let mut problems = Vec::new();
    for (n, line) in prose_lines(&summary) {
        for link in links_in(&line) {
            if link.is_empty() {
                problems.push(format!(
                    "SUMMARY.md:{n}: an entry with no file (a draft chapter)"
                ));
                continue;
            }
            if !book_src().join(&link).exists() {
                problems.push(format!("SUMMARY.md:{n}: `{link}` has no file in book/src"));
            }
            listed.insert(link);
        }
    }
    for chapter in chapter_files() {
        if !listed.contains(&chapter) {
            problems.push(format!("book/src/{chapter} is not in SUMMARY.md"));
        }
    }
    fail_on(problems, "SUMMARY.md and book/src/ disagree");
}

#[test]
fn every_chapter_is_a_doctest_target() {
    let harness = read(&root().join("tests/lib.rs"));
    let problems: Vec<String> = chapter_files()
        .into_iter()
        .filter(|chapter| !harness.contains(&format!("=> \"{chapter}\",")))
        .map(|chapter| {
            format!("book/src/{chapter} is not in the `chapters!` list of tests/lib.rs, so its samples do not run")
        })
        .collect();
    fail_on(problems, "chapters whose samples are not tested");
}

#[test]
fn every_relative_link_in_the_book_resolves() {
    let mut cache = HashMap::new();
    let mut problems = Vec::new();
    for chapter in chapter_files()
        .iter()
        .chain(["SUMMARY.md".to_string()].iter())
    {
        problems.extend(broken_links(&book_src().join(chapter), None, &mut cache));
    }
    fail_on(problems, "broken links in the book");
}

#[test]
fn every_include_finds_its_file() {
    let mut problems = Vec::new();
    for chapter in chapter_files() {
        let path = book_src().join(&chapter);
        for (n, included) in includes_in(&read(&path)) {
            let target = normalize(&book_src().join(&included));
            if !target.is_file() {
                problems.push(format!(
                    "book/src/{chapter}:{n}: {{{{#include {included}}}}}: {} does not exist",
                    shown(&target)
                ));
            }
        }
    }
    fail_on(problems, "includes with no file");
}

#[test]
fn the_readme_and_testing_links_into_the_book_resolve() {
    let mut cache = HashMap::new();
    let mut problems = Vec::new();
    for file in ["README.md", "TESTING.md"] {
        problems.extend(broken_links(
            &root().join(file),
            Some(&book_src()),
            &mut cache,
        ));
    }
    fail_on(
        problems,
        "broken links from README.md or TESTING.md into the book",
    );
}

#[test]
fn every_code_fence_in_the_book_names_its_language() {
    // rustdoc compiles a fence with no language as Rust; mdBook shows it as plain text. Say
    // which is meant.
    let mut problems = Vec::new();
    for chapter in chapter_files() {
        let mut open: Option<usize> = None;
        for (n, line) in read(&book_src().join(&chapter)).lines().enumerate() {
            let trimmed = line.trim_start();
            let ticks = trimmed.chars().take_while(|&c| c == '`').count();
            if ticks < 3 {
                continue;
            }
            match open {
                None => {
                    open = Some(ticks);
                    if trimmed[ticks..].trim().is_empty() {
                        problems.push(format!(
                            "book/src/{chapter}:{}: a code fence without a language (rust, toml, sh, text...)",
                            n + 1
                        ));
                    }
                }
                Some(width) if ticks >= width && trimmed[ticks..].trim().is_empty() => open = None,
                Some(_) => {}
            }
        }
    }
    fail_on(problems, "code fences without a language");
}

#[test]
fn anchors_follow_mdbooks_rule() {
    assert_eq!(
        anchor_of("Many requests from one task: `pipeline`"),
        "many-requests-from-one-task-pipeline"
    );
    assert_eq!(
        anchor_of("Beside axum, and over HTTP"),
        "beside-axum-and-over-http"
    );
    assert_eq!(
        anchor_of("All together: TLS Publish/Subscribe with compression and metrics"),
        "all-together-tls-publishsubscribe-with-compression-and-metrics"
    );
    assert_eq!(anchor_of("The [book](x.md) chapter"), "the-book-chapter");
    assert_eq!(
        links_in("see [a](x.md#y) and [b](../c.md)"),
        ["x.md#y", "../c.md"]
    );
    assert!(links_in(&blank_code_spans("not `[a](x.md)` a link")).is_empty());
}
