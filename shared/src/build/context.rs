//! The build context's `.dockerignore` and the wildcard matching that COPY
//! sources and ignore patterns share (Go's `filepath.Match`: `*`, `?`,
//! `[a-z]`, `[^…]`, plus `**` for any number of directories in
//! `.dockerignore`).

/// The `.dockerignore` rules: later rules win, `!` re-includes.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    rules: Vec<(Vec<String>, bool)>,
}

impl Ignore {
    pub fn parse(text: &str) -> Ignore {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (pattern, exclude) = match line.strip_prefix('!') {
                Some(p) => (p.trim(), false),
                None => (line, true),
            };
            let comps = super::view::components(pattern);
            if !comps.is_empty() {
                rules.push((comps, exclude));
            }
        }
        Ignore { rules }
    }

    /// Whether `rel` (relative to the context) is left out of the context:
    /// the last rule matching it or one of its parent directories decides.
    pub fn excludes(&self, rel: &str) -> bool {
        let comps = super::view::components(rel);
        let mut excluded = false;
        for (pattern, exclude) in &self.rules {
            let hit = (1..=comps.len()).any(|n| match_path(pattern, &comps[..n]));
            if hit {
                excluded = *exclude;
            }
        }
        excluded
    }
}

/// Whether the path components match the pattern components (`**` matches
/// any number of components).
pub fn match_path(pattern: &[String], path: &[String]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => (0..=path.len()).any(|i| match_path(rest, &path[i..])),
        Some((p, rest)) => match path.split_first() {
            Some((c, path_rest)) => match_component(p, c) && match_path(rest, path_rest),
            None => false,
        },
    }
}

/// Whether a pattern has wildcard characters.
pub fn has_wildcards(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Go's `filepath.Match` for one path component.
pub fn match_component(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_at(&p, &n)
}

fn match_at(p: &[char], n: &[char]) -> bool {
    match p.split_first() {
        None => n.is_empty(),
        Some(('*', rest)) => (0..=n.len()).any(|i| match_at(rest, &n[i..])),
        Some(('?', rest)) => !n.is_empty() && match_at(rest, &n[1..]),
        Some(('[', rest)) => {
            let Some((&c, n_rest)) = n.split_first() else {
                return false;
            };
            match class(rest, c) {
                Some((true, after)) => match_at(after, n_rest),
                _ => false,
            }
        }
        Some(('\\', rest)) if !rest.is_empty() => {
            n.first() == Some(&rest[0]) && match_at(&rest[1..], &n[1..])
        }
        Some((c, rest)) => n.first() == Some(c) && match_at(rest, &n[1..]),
    }
}

/// A `[...]` class after its `[`: (matched, pattern after `]`).
fn class(p: &[char], c: char) -> Option<(bool, &[char])> {
    let (negate, mut i) = match p.first() {
        Some('^') | Some('!') => (true, 1),
        _ => (false, 0),
    };
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((hit != negate, &p[i + 1..]));
        }
        first = false;
        let lo = p[i];
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            hit |= lo <= c && c <= p[i + 2];
            i += 3;
        } else {
            hit |= lo == c;
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(match_component("*.py", "app.py"));
        assert!(!match_component("*.py", "app.pyc"));
        assert!(match_component("file?.txt", "file1.txt"));
        assert!(match_component("[a-c]x", "bx"));
        assert!(!match_component("[^a-c]x", "bx"));
        let p = |s: &str| super::super::view::components(s);
        assert!(match_path(&p("**/*.log"), &p("a/b/c.log")));
        assert!(match_path(&p("**/*.log"), &p("c.log")));
        assert!(!match_path(&p("src/*.rs"), &p("src/a/b.rs")));
    }

    #[test]
    fn dockerignore() {
        let i = Ignore::parse("# comment\n*.log\nbuild/\n!keep.log\n/secret\n");
        assert!(i.excludes("x.log"));
        assert!(!i.excludes("keep.log"));
        assert!(i.excludes("build/out/bin"));
        assert!(i.excludes("secret"));
        assert!(!i.excludes("src/x.log"), "*.log matches at the top only");
        assert!(!i.excludes("app.py"));
    }
}
