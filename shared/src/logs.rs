//! A detached sandbox's output, kept the way Docker's json-file driver keeps
//! it: one JSON object per line in `<dir>/log.json`,
//! `{"log":"text\n","stream":"stdout","time":"2024-01-01T00:00:00.000000001Z"}`.
//!
//! The monitor writes it ([`LogWriter`]); `sbx logs` reads it
//! ([`read_from`]), only whole lines, so a reader never sees half an entry.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The log file of the sandbox whose state directory is `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("log.json")
}

/// Longest line kept in one entry; a longer one is split, as Docker splits
/// at 16 KiB.
const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The text, with its newline when it had one.
    pub log: String,
    pub stream: Stream,
    pub time: DateTime<Utc>,
}

/// Appends entries, one per line of output, per stream.
pub struct LogWriter {
    file: File,
    /// Bytes of an unfinished line, per stream (stdout, stderr).
    partial: [Vec<u8>; 2],
}

impl LogWriter {
    pub fn open(path: &Path) -> io::Result<LogWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(LogWriter {
            file,
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Take output of one stream; whole lines are written at once.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> io::Result<()> {
        let i = stream as usize;
        let mut buf = std::mem::take(&mut self.partial[i]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
            let end = start + nl + 1;
            self.entry(stream, &buf[start..end])?;
            start = end;
        }
        while buf.len() - start >= MAX_LINE {
            self.entry(stream, &buf[start..start + MAX_LINE])?;
            start += MAX_LINE;
        }
        buf.drain(..start);
        self.partial[i] = buf;
        Ok(())
    }

    /// Write what is left of unfinished lines (at the workload's end).
    pub fn flush_partial(&mut self) -> io::Result<()> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let buf = std::mem::take(&mut self.partial[stream as usize]);
            if !buf.is_empty() {
                self.entry(stream, &buf)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, stream: Stream, bytes: &[u8]) -> io::Result<()> {
        let entry = Entry {
            log: String::from_utf8_lossy(bytes).into_owned(),
            stream,
            time: Utc::now(),
        };
        let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        line.push(b'\n');
        // One write(2) per entry on an O_APPEND file: a reader sees whole
        // entries or none.
        self.file.write_all(&line)
    }
}

/// The entries from byte `offset` on, and the offset after the last whole
/// line read. A missing file reads as empty; an unreadable line is skipped.
pub fn read_from(path: &Path, offset: u64) -> io::Result<(Vec<Entry>, u64)> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(file);
    let mut out = Vec::new();
    let mut pos = offset;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        pos += n as u64;
        if let Ok(e) = serde_json::from_slice::<Entry>(&line) {
            out.push(e);
        }
    }
    Ok((out, pos))
}

/// The last `n` entries of `entries`.
pub fn tail(entries: Vec<Entry>, n: Option<usize>) -> Vec<Entry> {
    match n {
        Some(n) if n < entries.len() => entries[entries.len() - n..].to_vec(),
        _ => entries,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_per_stream_and_partial_lines_wait() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let mut w = LogWriter::open(&p).unwrap();
        w.write(Stream::Stdout, b"a\nb").unwrap();
        w.write(Stream::Stderr, b"err\n").unwrap();
        let (e, off) = read_from(&p, 0).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].log.as_str(), e[0].stream), ("a\n", Stream::Stdout));
        assert_eq!((e[1].log.as_str(), e[1].stream), ("err\n", Stream::Stderr));
        w.write(Stream::Stdout, b"c\n").unwrap();
        w.write(Stream::Stdout, b"tail").unwrap();
        w.flush_partial().unwrap();
        let (e, _) = read_from(&p, off).unwrap();
        let logs: Vec<&str> = e.iter().map(|e| e.log.as_str()).collect();
        assert_eq!(logs, ["bc\n", "tail"]);
        assert_eq!(tail(e, Some(1)).len(), 1);
    }

    #[test]
    fn missing_file_is_empty() {
        let (e, off) = read_from(Path::new("/nonexistent/log.json"), 0).unwrap();
        assert!(e.is_empty());
        assert_eq!(off, 0);
    }
}
