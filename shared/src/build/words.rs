//! Dockerfile word processing: quotes, the escape character and variable
//! substitution (`$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alt}`,
//! `${VAR-default}`, `${VAR+alt}`), as Docker's shell lexer does for FROM,
//! ENV, ARG, LABEL, COPY, WORKDIR, USER, EXPOSE, VOLUME and STOPSIGNAL.

use std::collections::BTreeMap;

/// Variables in scope: ARGs, then ENV on top.
pub type Vars = BTreeMap<String, String>;

/// Split `s` into words on unquoted blanks, removing quotes and escapes and
/// substituting variables (not inside single quotes).
pub fn words(s: &str, vars: &Vars, escape: char) -> Result<Vec<String>, String> {
    lex(s, vars, escape, true)
}

/// One word: like [`words`] but blanks are kept.
pub fn word(s: &str, vars: &Vars, escape: char) -> Result<String, String> {
    Ok(lex(s, vars, escape, false)?.concat())
}

fn lex(s: &str, vars: &Vars, escape: char, split: bool) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if split && c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err(format!("unterminated single quote in {s:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some(e) if e == escape => match chars.next() {
                            Some(x @ ('"' | '$')) => cur.push(x),
                            Some(x) if x == escape => cur.push(x),
                            Some(x) => {
                                cur.push(e);
                                cur.push(x);
                            }
                            None => return Err(format!("unterminated double quote in {s:?}")),
                        },
                        Some('$') => cur.push_str(&variable(&mut chars, vars, escape)?),
                        Some(x) => cur.push(x),
                        None => return Err(format!("unterminated double quote in {s:?}")),
                    }
                }
            }
            '$' => {
                in_word = true;
                cur.push_str(&variable(&mut chars, vars, escape)?);
            }
            e if e == escape => {
                in_word = true;
                match chars.next() {
                    Some(x) => cur.push(x),
                    None => cur.push(e),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// After a `$`: the variable's value (or `$` itself when no name follows).
fn variable(chars: &mut Chars<'_>, vars: &Vars, escape: char) -> Result<String, String> {
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if chars.peek() == Some(&'{') {
        chars.next();
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if !name_char(c) {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() {
            return Err("bad substitution: ${} needs a variable name".into());
        }
        let value = vars.get(&name);
        match chars.next() {
            Some('}') => Ok(value.cloned().unwrap_or_default()),
            Some(':') => {
                let op = chars.next().ok_or("bad substitution: unterminated ${")?;
                let word = braced_word(chars, vars, escape)?;
                let set = value.is_some_and(|v| !v.is_empty());
                substitute(op, set, value, word)
            }
            Some(op @ ('-' | '+')) => {
                let word = braced_word(chars, vars, escape)?;
                substitute(op, value.is_some(), value, word)
            }
            _ => Err(format!("bad substitution: ${{{name}…")),
        }
    } else {
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if !name_char(c) {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.is_empty() {
            return Ok("$".into());
        }
        Ok(vars.get(&name).cloned().unwrap_or_default())
    }
}

fn substitute(op: char, set: bool, value: Option<&String>, word: String) -> Result<String, String> {
    match op {
        '-' if set => Ok(value.cloned().unwrap_or_default()),
        '-' => Ok(word),
        '+' if set => Ok(word),
        '+' => Ok(String::new()),
        '?' if set => Ok(value.cloned().unwrap_or_default()),
        '?' => Err(if word.is_empty() {
            "a required variable is not set".into()
        } else {
            word
        }),
        other => Err(format!("bad substitution: unsupported modifier ':{other}'")),
    }
}

/// The word inside `${NAME:-word}` up to the closing brace, itself expanded.
fn braced_word(chars: &mut Chars<'_>, vars: &Vars, escape: char) -> Result<String, String> {
    let mut raw = String::new();
    let mut depth = 0;
    loop {
        match chars.next() {
            Some('}') if depth == 0 => break,
            Some(c) => {
                if c == '{' {
                    depth += 1;
                } else if c == '}' {
                    depth -= 1;
                }
                raw.push(c);
            }
            None => return Err("bad substitution: unterminated ${".into()),
        }
    }
    word(&raw, vars, escape)
}

/// `KEY=VALUE …` pairs (ENV, LABEL, ARG), or the legacy `KEY VALUE` form
/// when `legacy` allows it.
pub fn pairs(
    s: &str,
    vars: &Vars,
    escape: char,
    legacy: bool,
) -> Result<Vec<(String, Option<String>)>, String> {
    let ws = words(s, vars, escape)?;
    let Some(first) = ws.first() else {
        return Err("needs at least one KEY=VALUE".into());
    };
    if legacy && !first.contains('=') {
        // `ENV KEY some value`: the rest of the line is the value.
        let raw_key = s.split_whitespace().next().unwrap_or_default();
        let rest = s.trim_start()[raw_key.len()..].trim();
        if rest.is_empty() {
            return Err(format!("{first} needs a value (KEY=VALUE or KEY VALUE)"));
        }
        return Ok(vec![(first.clone(), Some(word(rest, vars, escape)?))]);
    }
    ws.into_iter()
        .map(|w| match w.split_once('=') {
            Some(("", _)) => Err(format!("{w:?} has an empty name")),
            Some((k, v)) => Ok((k.to_string(), Some(v.to_string()))),
            None => Ok((w, None)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::from([("A".into(), "one".into()), ("EMPTY".into(), String::new())])
    }

    #[test]
    fn substitution() {
        let v = vars();
        assert_eq!(word("$A/${A}x", &v, '\\').unwrap(), "one/onex");
        assert_eq!(word("${B:-dflt} ${A:+alt}", &v, '\\').unwrap(), "dflt alt");
        assert_eq!(word("${EMPTY:-d} ${EMPTY-d}", &v, '\\').unwrap(), "d ");
        assert_eq!(word("'$A' \"$A\" \\$A", &v, '\\').unwrap(), "$A one $A");
        assert_eq!(word("`$A", &v, '`').unwrap(), "$A");
        assert!(word("${A", &v, '\\').is_err());
        assert!(word("\"open", &v, '\\').is_err());
    }

    #[test]
    fn env_pairs() {
        let v = vars();
        let p = pairs("X=1 Y=\"two words\" Z=$A", &v, '\\', true).unwrap();
        assert_eq!(
            p,
            [
                ("X".into(), Some("1".into())),
                ("Y".into(), Some("two words".into())),
                ("Z".into(), Some("one".into()))
            ]
        );
        let p = pairs("KEY some $A value", &v, '\\', true).unwrap();
        assert_eq!(p, [("KEY".into(), Some("some one value".into()))]);
        assert_eq!(
            pairs("NAME", &v, '\\', false).unwrap(),
            [("NAME".into(), None)]
        );
        assert!(pairs("=x", &v, '\\', false).is_err());
    }
}
