//! A Dockerfile parsed into stages and steps.
//!
//! The syntax (parser directives, the escape character, line continuations,
//! comments, JSON and shell forms, flags, here-documents) is read by the
//! `parse-dockerfile` crate; this module checks the flags each instruction
//! may take and keeps what the builder needs, each step with its line.
//! Words are left unexpanded: variables are substituted when the step runs,
//! with the ARG and ENV values in force there.

use parse_dockerfile::{
    Command, Flag, HealthcheckArguments, Instruction, JsonOrStringArray, Source,
};

use super::BuildError;

/// A command in exec form (argv) or shell form (run by the SHELL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Exec(Vec<String>),
    Shell(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOp {
    /// ADD rather than COPY: local tar archives are extracted.
    pub add: bool,
    pub sources: Vec<String>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// None: `HEALTHCHECK NONE`.
    pub cmd: Option<Cmd>,
    /// `--interval`, `--timeout`, `--start-period`, `--start-interval`
    /// (as written) and `--retries`.
    pub flags: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The command, and here-document bodies to run as scripts.
    Run(Cmd, Vec<String>),
    Copy(CopyOp),
    /// Raw `KEY=VALUE …` text, expanded when the step runs.
    Env(String),
    Arg(String),
    Label(String),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Cmd(Cmd),
    Entrypoint(Cmd),
    Volume(Vec<String>),
    Shell(Vec<String>),
    Stopsignal(String),
    Healthcheck(Healthcheck),
    Maintainer(String),
}

#[derive(Debug, Clone)]
pub struct Step {
    /// 1-based line of the instruction's keyword.
    pub line: usize,
    /// The instruction as written (continuations joined), for progress and
    /// history.
    pub text: String,
    pub op: Op,
}

#[derive(Debug, Clone)]
pub struct Stage {
    /// `AS name`, lowercased.
    pub name: Option<String>,
    /// The FROM operand, unexpanded.
    pub base: String,
    pub line: usize,
    pub text: String,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// The file's name as the user gave it (for `file:line` messages).
    pub file: String,
    pub escape: char,
    /// ARGs before the first FROM.
    pub global_args: Vec<Step>,
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    pub fn parse(file: &str, text: &str) -> Result<Dockerfile, BuildError> {
        let parsed = parse_dockerfile::parse(text).map_err(|e| BuildError::Dockerfile {
            file: file.to_string(),
            line: e.line().max(1),
            message: format!("{e:#}"),
        })?;
        let escape = parsed
            .parser_directives
            .escape
            .as_ref()
            .map_or('\\', |d| d.value.value);
        let line_of = |pos: usize| text[..pos.min(text.len())].matches('\n').count() + 1;
        let mut out = Dockerfile {
            file: file.to_string(),
            escape,
            global_args: Vec::new(),
            stages: Vec::new(),
        };
        for ins in &parsed.instructions {
            let (start, end) = span(ins);
            let line = line_of(start);
            let text_of = clean_text(&text[start..end.min(text.len())], escape);
            let err = |message: String| BuildError::Dockerfile {
                file: file.to_string(),
                line,
                message,
            };
            if let Instruction::From(from) = ins {
                check_flags(&from.options, &["platform"]).map_err(err)?;
                out.stages.push(Stage {
                    name: from.as_.as_ref().map(|(_, n)| n.value.to_lowercase()),
                    base: from.image.value.to_string(),
                    line,
                    text: text_of,
                    steps: Vec::new(),
                });
                continue;
            }
            let op = convert(ins, escape).map_err(err)?;
            let step = Step {
                line,
                text: text_of,
                op,
            };
            match out.stages.last_mut() {
                Some(stage) => stage.steps.push(step),
                None => out.global_args.push(step),
            }
        }
        Ok(out)
    }

    /// The index of the stage a name (or number) refers to.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        let lower = name.to_lowercase();
        self.stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
            .or_else(|| {
                name.parse::<usize>()
                    .ok()
                    .filter(|i| *i < self.stages.len())
            })
    }
}

/// The instruction's text with continuations joined and the comment lines
/// inside it dropped.
fn clean_text(raw: &str, escape: char) -> String {
    join_continuations(raw, escape).trim().to_string()
}

/// Shell-form text as the shell must see it: each escape + newline removed,
/// comment lines and blank lines inside the instruction dropped.
pub fn join_continuations(raw: &str, escape: char) -> String {
    let mut out = String::new();
    for (i, line) in raw.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if i > 0 && (line.trim_start().starts_with('#') || line.trim().is_empty()) {
            continue;
        }
        let trimmed = line.trim_end();
        match trimmed.strip_suffix(escape) {
            Some(rest) => out.push_str(rest),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out.trim_end_matches('\n').to_string()
}

fn span(ins: &Instruction<'_>) -> (usize, usize) {
    let kw = match ins {
        Instruction::Add(i) => &i.add,
        Instruction::Arg(i) => &i.arg,
        Instruction::Cmd(i) => &i.cmd,
        Instruction::Copy(i) => &i.copy,
        Instruction::Entrypoint(i) => &i.entrypoint,
        Instruction::Env(i) => &i.env,
        Instruction::Expose(i) => &i.expose,
        Instruction::From(i) => &i.from,
        Instruction::Healthcheck(i) => &i.healthcheck,
        Instruction::Label(i) => &i.label,
        Instruction::Maintainer(i) => &i.maintainer,
        Instruction::Onbuild(i) => &i.onbuild,
        Instruction::Run(i) => &i.run,
        Instruction::Shell(i) => &i.shell,
        Instruction::Stopsignal(i) => &i.stopsignal,
        Instruction::User(i) => &i.user,
        Instruction::Volume(i) => &i.volume,
        Instruction::Workdir(i) => &i.workdir,
        _ => return (0, 0),
    };
    let end = match ins {
        Instruction::Add(i) => i.dest.span.end,
        Instruction::Arg(i) => i.arguments.span.end,
        Instruction::Cmd(i) => command_end(&i.arguments),
        Instruction::Copy(i) => i.dest.span.end,
        Instruction::Entrypoint(i) => command_end(&i.arguments),
        Instruction::Env(i) => i.arguments.span.end,
        Instruction::Expose(i) => i.arguments.last().map_or(kw.span.end, |a| a.span.end),
        Instruction::From(i) => i.as_.as_ref().map_or(i.image.span.end, |(_, n)| n.span.end),
        Instruction::Healthcheck(i) => match &i.arguments {
            HealthcheckArguments::Cmd { arguments, .. } => command_end(arguments),
            HealthcheckArguments::None { none, .. } => none.span.end,
            _ => kw.span.end,
        },
        Instruction::Label(i) => i.arguments.span.end,
        Instruction::Maintainer(i) => i.name.span.end,
        Instruction::Run(i) => command_end(&i.arguments),
        Instruction::Shell(i) => i.arguments.last().map_or(kw.span.end, |a| a.span.end + 1),
        Instruction::Stopsignal(i) => i.arguments.span.end,
        Instruction::User(i) => i.arguments.span.end,
        Instruction::Volume(i) => match &i.arguments {
            JsonOrStringArray::Json(j) => j.span.end,
            JsonOrStringArray::String(s) => s.last().map_or(kw.span.end, |a| a.span.end),
        },
        Instruction::Workdir(i) => i.arguments.span.end,
        _ => kw.span.end,
    };
    (kw.span.start, end.max(kw.span.end))
}

fn command_end(c: &Command<'_>) -> usize {
    match c {
        Command::Exec(e) => e.span.end,
        Command::Shell(s) => s.span.end,
        _ => 0,
    }
}

fn command(c: &Command<'_>, escape: char) -> Cmd {
    match c {
        Command::Exec(e) => Cmd::Exec(e.value.iter().map(|s| s.value.to_string()).collect()),
        Command::Shell(s) => Cmd::Shell(join_continuations(s.value, escape)),
        _ => Cmd::Shell(String::new()),
    }
}

/// Refuse flags the instruction does not take (and repeated ones).
fn check_flags(flags: &[Flag<'_>], allowed: &[&str]) -> Result<(), String> {
    let mut seen = Vec::new();
    for f in flags {
        let name = f.name.value.as_ref();
        if !allowed.contains(&name) {
            return Err(if allowed.is_empty() {
                format!("unknown flag --{name}: this instruction takes none")
            } else {
                format!(
                    "unknown flag --{name} (this instruction takes --{})",
                    allowed.join(", --")
                )
            });
        }
        if seen.contains(&name) {
            return Err(format!("flag --{name} given twice"));
        }
        seen.push(name);
    }
    Ok(())
}

fn flag(flags: &[Flag<'_>], name: &str) -> Option<String> {
    flags.iter().find(|f| f.name.value == name).map(|f| {
        f.value
            .as_ref()
            .map(|v| v.value.to_string())
            .unwrap_or_default()
    })
}

fn convert(ins: &Instruction<'_>, escape: char) -> Result<Op, String> {
    Ok(match ins {
        Instruction::Run(r) => {
            check_flags(&r.options, &[]).map_err(|e| {
                format!("{e} (RUN --mount, --network and --security are not supported)")
            })?;
            let docs = r.here_docs.iter().map(|d| d.value.to_string()).collect();
            Op::Run(command(&r.arguments, escape), docs)
        }
        Instruction::Copy(c) => {
            check_flags(&c.options, &["from", "chown", "chmod", "link"])?;
            Op::Copy(copy_op(false, &c.options, &c.src, &c.dest.value)?)
        }
        Instruction::Add(a) => {
            check_flags(&a.options, &["chown", "chmod", "link"])?;
            Op::Copy(copy_op(true, &a.options, &a.src, &a.dest.value)?)
        }
        Instruction::Env(e) => Op::Env(e.arguments.value.to_string()),
        Instruction::Arg(a) => Op::Arg(a.arguments.value.to_string()),
        Instruction::Label(l) => Op::Label(l.arguments.value.to_string()),
        Instruction::Workdir(w) => Op::Workdir(w.arguments.value.to_string()),
        Instruction::User(u) => Op::User(u.arguments.value.to_string()),
        Instruction::Expose(e) => {
            Op::Expose(e.arguments.iter().map(|a| a.value.to_string()).collect())
        }
        Instruction::Cmd(c) => Op::Cmd(command(&c.arguments, escape)),
        Instruction::Entrypoint(e) => Op::Entrypoint(command(&e.arguments, escape)),
        Instruction::Volume(v) => Op::Volume(match &v.arguments {
            JsonOrStringArray::Json(j) => j.value.iter().map(|s| s.value.to_string()).collect(),
            JsonOrStringArray::String(s) => s.iter().map(|s| s.value.to_string()).collect(),
        }),
        Instruction::Shell(s) => {
            Op::Shell(s.arguments.iter().map(|a| a.value.to_string()).collect())
        }
        Instruction::Stopsignal(s) => Op::Stopsignal(s.arguments.value.to_string()),
        Instruction::Healthcheck(h) => {
            let names = [
                "interval",
                "timeout",
                "start-period",
                "start-interval",
                "retries",
            ];
            check_flags(&h.options, &names)?;
            let flags = h
                .options
                .iter()
                .map(|f| {
                    let v = f
                        .value
                        .as_ref()
                        .map(|v| v.value.to_string())
                        .unwrap_or_default();
                    (f.name.value.to_string(), v)
                })
                .collect();
            let cmd = match &h.arguments {
                HealthcheckArguments::Cmd { arguments, .. } => Some(command(arguments, escape)),
                _ => None,
            };
            Op::Healthcheck(Healthcheck { cmd, flags })
        }
        Instruction::Maintainer(m) => Op::Maintainer(m.name.value.to_string()),
        Instruction::Onbuild(_) => return Err("ONBUILD is not supported".into()),
        _ => return Err("unsupported instruction".into()),
    })
}

fn copy_op(
    add: bool,
    flags: &[Flag<'_>],
    src: &[Source<'_>],
    dest: &str,
) -> Result<CopyOp, String> {
    let mut sources = Vec::new();
    for s in src {
        match s {
            Source::Path(p) => sources.push(p.value.to_string()),
            _ => return Err("here-documents in COPY/ADD are not supported".into()),
        }
    }
    if add {
        if let Some(url) = sources.iter().find(|s| s.contains("://")) {
            return Err(format!(
                "ADD of a URL ({url}) is not supported: builds are offline"
            ));
        }
    }
    Ok(CopyOp {
        add,
        sources,
        dest: dest.to_string(),
        from: flag(flags, "from"),
        chown: flag(flags, "chown"),
        chmod: flag(flags, "chmod"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_steps_and_lines() {
        let text = "# syntax=docker/dockerfile:1\nARG BASE=busybox\nFROM $BASE AS Build\nRUN echo a \\\n# inside\n  && echo b\nCOPY --chown=1:2 --from=x a b /d/\n\nFROM scratch\nCMD [\"/app\"]\n";
        let d = Dockerfile::parse("Dockerfile", text).unwrap();
        assert_eq!(d.global_args.len(), 1);
        assert_eq!(d.stages.len(), 2);
        let s = &d.stages[0];
        assert_eq!(
            (s.name.as_deref(), s.base.as_str(), s.line),
            (Some("build"), "$BASE", 3)
        );
        assert_eq!(s.steps[0].line, 4);
        assert_eq!(
            s.steps[0].op,
            Op::Run(Cmd::Shell("echo a   && echo b".into()), vec![])
        );
        let Op::Copy(c) = &s.steps[1].op else {
            panic!()
        };
        assert_eq!(
            (c.from.as_deref(), c.chown.as_deref()),
            (Some("x"), Some("1:2"))
        );
        assert_eq!(c.sources, ["a", "b"]);
        assert_eq!(
            d.stages[1].steps[0].op,
            Op::Cmd(Cmd::Exec(vec!["/app".into()]))
        );
        assert_eq!(d.stage_index("BUILD"), Some(0));
        assert_eq!(d.stage_index("1"), Some(1));
    }

    #[test]
    fn escape_directive() {
        let text = "# escape=`\nFROM busybox\nRUN echo a `\n  b\n";
        let d = Dockerfile::parse("Dockerfile", text).unwrap();
        assert_eq!(d.escape, '`');
        assert_eq!(
            d.stages[0].steps[0].op,
            Op::Run(Cmd::Shell("echo a   b".into()), vec![])
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = Dockerfile::parse("df", "FROM busybox\nRUN true\nBOGUS x\n").unwrap_err();
        assert_eq!(e.to_string(), "df:3: unknown instruction 'BOGUS'");
        let e = Dockerfile::parse("df", "FROM busybox\n\nCOPY --bad=1 a b\n").unwrap_err();
        assert!(e.to_string().starts_with("df:3: unknown flag --bad"), "{e}");
        let e = Dockerfile::parse("df", "RUN true\n").unwrap_err();
        assert!(e.to_string().starts_with("df:1: "), "{e}");
        let e = Dockerfile::parse("df", "").unwrap_err();
        assert!(e.to_string().starts_with("df:1: "), "{e}");
    }
}
