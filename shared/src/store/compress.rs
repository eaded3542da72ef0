//! Layer and archive compression, told apart by magic bytes (media types
//! lie often enough that Docker and containerd sniff too).

use std::io::{self, BufRead, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const BZIP2_MAGIC: &[u8] = b"BZh";

impl Compression {
    /// Which compression the stream starting with `head` uses.
    pub fn detect(head: &[u8]) -> io::Result<Compression> {
        if head.starts_with(GZIP_MAGIC) {
            Ok(Compression::Gzip)
        } else if head.starts_with(ZSTD_MAGIC) {
            Ok(Compression::Zstd)
        } else if head.starts_with(XZ_MAGIC) || head.starts_with(BZIP2_MAGIC) {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "xz and bzip2 compression are not supported (use gzip, zstd or plain tar)",
            ))
        } else {
            Ok(Compression::None)
        }
    }

    /// The OCI layer media type for a layer compressed this way.
    pub fn layer_media_type(self) -> oci_spec::image::MediaType {
        use oci_spec::image::MediaType;
        match self {
            Compression::None => MediaType::ImageLayer,
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
        }
    }
}

/// Sniff `reader` and wrap it in the matching decoder.
pub fn decoder<'a, R: BufRead + 'a>(
    mut reader: R,
) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let head = fill_at_least(&mut reader, 6)?;
    let kind = Compression::detect(&head)?;
    let decoded: Box<dyn Read + 'a> = match kind {
        Compression::None => Box::new(PrefixReader {
            head,
            pos: 0,
            inner: reader,
        }),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(PrefixReader {
            head,
            pos: 0,
            inner: reader,
        })),
        Compression::Zstd => Box::new(zstd::Decoder::new(PrefixReader {
            head,
            pos: 0,
            inner: reader,
        })?),
    };
    Ok((kind, decoded))
}

/// Read up to `n` bytes (fewer only at end of stream).
fn fill_at_least<R: Read>(reader: &mut R, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    reader.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// The sniffed bytes, then the rest of the stream.
struct PrefixReader<R> {
    head: Vec<u8>,
    pos: usize,
    inner: R,
}

impl<R: Read> Read for PrefixReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.head.len() {
            let n = buf.len().min(self.head.len() - self.pos);
            buf[..n].copy_from_slice(&self.head[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn roundtrip(data: &[u8], packed: Vec<u8>, want: Compression) {
        let (kind, mut r) = decoder(io::BufReader::new(&packed[..])).unwrap();
        assert_eq!(kind, want);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn sniffs_each_kind() {
        let data = b"hello, layers".repeat(100);
        roundtrip(&data, data.clone(), Compression::None);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&data).unwrap();
        roundtrip(&data, gz.finish().unwrap(), Compression::Gzip);
        roundtrip(
            &data,
            zstd::encode_all(&data[..], 3).unwrap(),
            Compression::Zstd,
        );
        roundtrip(b"abc", b"abc".to_vec(), Compression::None);
        assert!(Compression::detect(b"BZh91AY").is_err());
    }
}
