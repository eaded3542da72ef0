//! `sbx ps`: sandboxes as a table or JSON lines, Docker's columns and
//! wording ("Up 3 seconds", "Exited (0) 2 minutes ago").

use anyhow::{bail, Result};
use chrono::{DateTime, Utc};
use sbx_shared::monitor::lifecycle::Shown;
use sbx_shared::paths::Root;
use sbx_shared::state::State;

use super::{all, Found};
use crate::cli::PsArgs;

pub fn ps(root: &Root, args: &PsArgs) -> Result<u8> {
    let filters = Filters::parse(&args.filter)?;
    if args.format != "table" && args.format != "json" {
        bail!("unknown --format {:?}: use table or json", args.format);
    }
    let state = State::new(root);
    let now = Utc::now();
    let shown: Vec<Found> = all(&state)?
        .into_iter()
        .filter(|f| args.all || f.running() || filters.has_status())
        .filter(|f| filters.matches(f))
        .collect();
    if args.quiet {
        for f in &shown {
            println!(
                "{}",
                if args.no_trunc {
                    &f.record.id
                } else {
                    f.short()
                }
            );
        }
        return Ok(0);
    }
    let rows: Vec<Row> = shown
        .iter()
        .map(|f| Row {
            ports: crate::commands::port::column(&state, &f.record.id),
            ..Row::of(f, now, args.no_trunc)
        })
        .collect();
    if args.format == "json" {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        print!("{}", table(&rows));
    }
    Ok(0)
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct Row {
    #[serde(rename = "ID")]
    id: String,
    image: String,
    command: String,
    created_at: String,
    running_for: String,
    status: String,
    state: String,
    ports: String,
    names: String,
    isolation: String,
}

impl Row {
    fn of(f: &Found, now: DateTime<Utc>, no_trunc: bool) -> Row {
        let r = &f.record;
        let mut command = format!("\"{}\"", r.command.join(" "));
        if !no_trunc && command.chars().count() > 22 {
            command = format!("{}…\"", command.chars().take(20).collect::<String>());
        }
        Row {
            id: if no_trunc {
                r.id.clone()
            } else {
                f.short().to_string()
            },
            image: r.image.name.clone(),
            command,
            created_at: r.created.to_rfc3339(),
            running_for: format!("{} ago", human(now - r.created)),
            status: status_text(f, now),
            state: f.view.status.to_string(),
            ports: String::new(),
            names: r.name.clone().unwrap_or_default(),
            isolation: r.isolation.to_string(),
        }
    }
}

/// Docker's STATUS column.
pub fn status_text(f: &Found, now: DateTime<Utc>) -> String {
    let code = f.view.exit_code.unwrap_or(0);
    let since = |t: Option<DateTime<Utc>>| human(now - t.unwrap_or(f.record.created));
    match f.view.status {
        Shown::Created => "Created".into(),
        Shown::Running => format!("Up {}", since(f.life.started)),
        Shown::Restarting => format!("Restarting ({code}) {} ago", since(f.view.finished)),
        Shown::Exited => format!("Exited ({code}) {} ago", since(f.view.finished)),
    }
}

/// Docker's HumanDuration: "Less than a second", "3 seconds",
/// "About a minute", "5 minutes", "About an hour", "3 hours", "2 days"...
pub fn human(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match s {
        0 => "Less than a second".into(),
        1..=59 => plural(s, "second"),
        60..=119 => "About a minute".into(),
        120..=3599 => plural(s / 60, "minute"),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => plural(s / 3600, "hour"),
        172_800..=1_209_599 => plural(s / 86_400, "day"),
        1_209_600..=4_838_399 => plural(s / 604_800, "week"),
        4_838_400..=63_071_999 => plural(s / 2_592_000, "month"),
        _ => plural(s / 31_536_000, "year"),
    }
}

fn table(rows: &[Row]) -> String {
    let head = [
        "SANDBOX ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
        "ISOLATION",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.image.clone(),
                r.command.clone(),
                r.running_for.clone(),
                r.status.clone(),
                r.ports.clone(),
                r.names.clone(),
                r.isolation.clone(),
            ]
        })
        .collect();
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(width[i] - c.chars().count() + 3));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(head.to_vec());
    for row in &cells {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `--filter KEY=VALUE`: values of one key OR, keys AND.
#[derive(Default)]
struct Filters {
    name: Vec<String>,
    id: Vec<String>,
    status: Vec<String>,
    ancestor: Vec<String>,
}

impl Filters {
    fn parse(args: &[String]) -> Result<Filters> {
        let mut f = Filters::default();
        for a in args {
            let Some((k, v)) = a.split_once('=') else {
                bail!("invalid --filter {a:?}: expected KEY=VALUE");
            };
            let list = match k {
                "name" => &mut f.name,
                "id" => &mut f.id,
                "status" => {
                    if !["created", "running", "restarting", "exited"].contains(&v) {
                        bail!("invalid --filter {a:?}: status is created, running, restarting or exited");
                    }
                    &mut f.status
                }
                "ancestor" => &mut f.ancestor,
                _ => bail!("invalid --filter {a:?}: use name, id, status or ancestor"),
            };
            list.push(v.to_string());
        }
        Ok(f)
    }

    fn has_status(&self) -> bool {
        !self.status.is_empty()
    }

    fn matches(&self, f: &Found) -> bool {
        let any = |list: &[String], test: &dyn Fn(&str) -> bool| {
            list.is_empty() || list.iter().any(|v| test(v))
        };
        let r = &f.record;
        any(&self.name, &|v| {
            r.name.as_deref().is_some_and(|n| n.contains(v))
        }) && any(&self.id, &|v| r.id.starts_with(v))
            && any(&self.status, &|v| f.view.status.to_string() == v)
            && any(&self.ancestor, &|v| {
                let (repo, _) = r.image.name.rsplit_once(':').unwrap_or((&r.image.name, ""));
                r.image.name == v
                    || repo == v
                    || r.image
                        .config
                        .trim_start_matches("sha256:")
                        .starts_with(v.trim_start_matches("sha256:"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        let s = chrono::TimeDelta::seconds;
        assert_eq!(human(s(0)), "Less than a second");
        assert_eq!(human(s(1)), "1 second");
        assert_eq!(human(s(3)), "3 seconds");
        assert_eq!(human(s(90)), "About a minute");
        assert_eq!(human(s(300)), "5 minutes");
        assert_eq!(human(s(3 * 3600)), "3 hours");
        assert_eq!(human(s(3 * 86_400)), "3 days");
    }

    #[test]
    fn bad_filters() {
        assert!(Filters::parse(&["nope".into()]).is_err());
        assert!(Filters::parse(&["color=red".into()]).is_err());
        assert!(Filters::parse(&["status=sleepy".into()]).is_err());
        assert!(Filters::parse(&["name=web".into(), "status=exited".into()]).is_ok());
    }
}
