//! Signal names as Docker takes them: `SIGTERM`, `TERM`, `term` or `15`.

use std::str::FromStr;

use nix::sys::signal::Signal;

/// The signal number named by `s`.
pub fn parse(s: &str) -> Result<i32, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n)
            .map(|s| s as i32)
            .map_err(|_| format!("invalid signal {s:?}"));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name)
        .map(|s| s as i32)
        .map_err(|_| format!("invalid signal {s:?}"))
}

/// The signal `stop` sends first: the image's STOPSIGNAL, else SIGTERM.
pub fn stop_signal(image_stop_signal: Option<&str>) -> i32 {
    image_stop_signal
        .and_then(|s| parse(s).ok())
        .unwrap_or(libc::SIGTERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("SIGKILL").unwrap(), 9);
        assert_eq!(parse("term").unwrap(), 15);
        assert_eq!(parse("10").unwrap(), libc::SIGUSR1);
        assert!(parse("SIGNOPE").is_err());
        assert!(parse("999").is_err());
        assert_eq!(stop_signal(None), 15);
        assert_eq!(stop_signal(Some("SIGINT")), 2);
    }
}
