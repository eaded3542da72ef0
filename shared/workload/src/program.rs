//! execvp's lookup in the workload's PATH, done by sbx so that "not found"
//! gets Docker's wording and exit status.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The PATH a workload gets when its environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The program to exec for `args`, or the exit status and message Docker
/// gives: 126 not executable, 127 not found, 125 no command at all.
pub fn find(args: &[String], env: &[String]) -> Result<CString, (i32, String)> {
    let cstring = |s: &[u8]| {
        CString::new(s).map_err(|_| {
            (
                125,
                format!("{:?} holds a NUL byte", String::from_utf8_lossy(s)),
            )
        })
    };
    let name = args
        .first()
        .ok_or_else(|| (125, "no command specified".to_string()))?;
    if name.contains('/') {
        return cstring(name.as_bytes());
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let mut denied = false;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let c = cstring(candidate.as_os_str().as_bytes())?;
        if nix::unistd::access(c.as_c_str(), nix::unistd::AccessFlags::X_OK).is_ok() {
            return Ok(c);
        }
        denied = true;
    }
    if denied {
        return Err((126, format!("exec {name:?}: permission denied")));
    }
    Err((
        127,
        format!("exec: {name:?}: executable file not found in $PATH"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_in_path_and_says_why_not() {
        let env = vec!["PATH=/nonexistent:/bin:/usr/bin".to_string()];
        let sh = find(&["sh".into()], &env).unwrap();
        assert!(sh.to_str().unwrap().ends_with("/sh"));
        assert_eq!(
            find(&["no-such-program-here".into()], &env).unwrap_err().0,
            127
        );
        assert_eq!(find(&[], &env).unwrap_err().0, 125);
        assert_eq!(
            find(&["/x/y".into()], &env).unwrap().to_str().unwrap(),
            "/x/y"
        );
    }
}
