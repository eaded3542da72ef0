//! virtio-blk (virtio 1.2, 5.2) over a host file: read, write, flush and
//! get-id requests; read-only disks refuse writes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use virtio_queue::{DescriptorChain, Queue, QueueT, Reader, Writer};
use vm_memory::{ByteValued, GuestMemoryMmap};

use super::{VirtioDevice, VirtioError, TYPE_BLOCK, VIRTIO_F_VERSION_1};

pub const SECTOR_SIZE: u64 = 512;
const QUEUE_SIZES: &[u16] = &[256];
/// Feature bits (virtio 1.2, 5.2.3).
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
/// Request types (virtio 1.2, 5.2.6).
pub const VIRTIO_BLK_T_IN: u32 = 0;
pub const VIRTIO_BLK_T_OUT: u32 = 1;
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
/// Request status.
pub const VIRTIO_BLK_S_OK: u8 = 0;
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;
/// Length of the get-id answer.
pub const ID_BYTES: usize = 20;
/// Largest data transfer of one request this device accepts.
const MAX_REQUEST_BYTES: usize = 16 << 20;

/// Opening the backing file.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("open disk {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The request header every chain starts with.
#[derive(Clone, Copy, Default, Debug)]
#[repr(C)]
pub struct RequestHeader {
    pub request_type: u32,
    pub reserved: u32,
    pub sector: u64,
}

// SAFETY: RequestHeader is repr(C), holds only integers and has no padding.
unsafe impl ByteValued for RequestHeader {}

/// A disk backed by a file.
pub struct Block {
    file: File,
    capacity_sectors: u64,
    read_only: bool,
    id: [u8; ID_BYTES],
}

impl Block {
    pub fn open(path: &Path, read_only: bool) -> Result<Self, BlockError> {
        let open_err = |source| BlockError::Open {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        let mut id = [0u8; ID_BYTES];
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        let n = name.len().min(ID_BYTES);
        id[..n].copy_from_slice(&name.as_bytes()[..n]);
        Ok(Block {
            file,
            capacity_sectors: len / SECTOR_SIZE,
            read_only,
            id,
        })
    }

    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    /// Whether `len` bytes from `sector` lie on the disk.
    fn in_bounds(&self, sector: u64, len: usize) -> Option<u64> {
        let offset = sector.checked_mul(SECTOR_SIZE)?;
        let end = offset.checked_add(len as u64)?;
        (end <= self.capacity_sectors * SECTOR_SIZE && len <= MAX_REQUEST_BYTES).then_some(offset)
    }

    /// Serves one request. Returns (status, bytes written into the chain
    /// before the status byte).
    fn serve(
        &mut self,
        header: RequestHeader,
        data_in: &mut Reader,
        data_out: &mut Writer,
    ) -> (u8, u32) {
        match header.request_type {
            VIRTIO_BLK_T_IN => {
                let len = data_out.available_bytes();
                let Some(offset) = self.in_bounds(header.sector, len) else {
                    return (VIRTIO_BLK_S_IOERR, 0);
                };
                let mut buf = vec![0u8; len];
                if self.file.read_exact_at(&mut buf, offset).is_err()
                    || data_out.write_all(&buf).is_err()
                {
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                (VIRTIO_BLK_S_OK, len as u32)
            }
            VIRTIO_BLK_T_OUT => {
                if self.read_only {
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                let len = data_in.available_bytes();
                let Some(offset) = self.in_bounds(header.sector, len) else {
                    return (VIRTIO_BLK_S_IOERR, 0);
                };
                let mut buf = vec![0u8; len];
                if data_in.read_exact(&mut buf).is_err()
                    || self.file.write_all_at(&buf, offset).is_err()
                {
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                (VIRTIO_BLK_S_OK, 0)
            }
            VIRTIO_BLK_T_FLUSH => match self.read_only || self.file.sync_data().is_ok() {
                true => (VIRTIO_BLK_S_OK, 0),
                false => (VIRTIO_BLK_S_IOERR, 0),
            },
            VIRTIO_BLK_T_GET_ID => {
                let n = data_out.available_bytes().min(ID_BYTES);
                match data_out.write_all(&self.id[..n]) {
                    Ok(()) => (VIRTIO_BLK_S_OK, n as u32),
                    Err(_) => (VIRTIO_BLK_S_IOERR, 0),
                }
            }
            _ => (VIRTIO_BLK_S_UNSUPP, 0),
        }
    }

    /// Handles one chain; returns the used length. A chain with no room
    /// for a status byte cannot be answered: it is returned unused.
    fn handle(&mut self, chain: DescriptorChain<&GuestMemoryMmap>, mem: &GuestMemoryMmap) -> u32 {
        let (Ok(mut reader), Ok(mut writer)) =
            (Reader::new(mem, chain.clone()), Writer::new(mem, chain))
        else {
            return 0;
        };
        let Some(data_len) = writer.available_bytes().checked_sub(1) else {
            return 0;
        };
        let Ok(mut status_writer) = writer.split_at(data_len) else {
            return 0;
        };
        let (status, written) = match reader.read_obj::<RequestHeader>() {
            Ok(header) => self.serve(header, &mut reader, &mut writer),
            Err(_) => (VIRTIO_BLK_S_IOERR, 0),
        };
        match status_writer.write_obj(status) {
            Ok(()) => written + 1,
            Err(_) => written,
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn features(&self) -> u64 {
        let ro = if self.read_only { VIRTIO_BLK_F_RO } else { 0 };
        VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH | ro
    }

    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }

    /// `capacity` in 512-byte sectors (virtio 1.2, 5.2.4).
    fn config(&self) -> Vec<u8> {
        self.capacity_sectors.to_le_bytes().to_vec()
    }

    fn process_queue(
        &mut self,
        queue: usize,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, VirtioError> {
        let Some(q) = queues.get_mut(queue) else {
            return Ok(false);
        };
        let mut used = false;
        while let Some(chain) = q.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let len = self.handle(chain, mem);
            q.add_used(mem, head, len)
                .map_err(|source| VirtioError::Queue { queue, source })?;
            used = true;
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{TestDriver, BUFFERS};
    use super::*;

    const HDR: u64 = BUFFERS;
    const DATA: u64 = BUFFERS + 0x1000;
    const STATUS: u64 = BUFFERS + 0x3000;

    fn disk(name: &str, read_only: bool) -> (TestDriver, PathBuf) {
        let path = std::env::temp_dir().join(format!("sbx-blk-{name}-{}", std::process::id()));
        let mut image = vec![0u8; 8 * 512];
        image[512..517].copy_from_slice(b"hello");
        std::fs::write(&path, image).unwrap();
        let mut d = TestDriver::new(Box::new(Block::open(&path, read_only).unwrap()));
        d.init(0);
        (d, path)
    }

    fn request(d: &mut TestDriver, kind: u32, sector: u64, data: Option<(u32, bool)>) -> (u8, u32) {
        let header = RequestHeader {
            request_type: kind,
            reserved: 0,
            sector,
        };
        d.write_bytes(HDR, header.as_slice());
        d.write_bytes(STATUS, &[0xff]);
        let mut chain = vec![(HDR, 16, false)];
        if let Some((len, write)) = data {
            chain.push((DATA, len, write));
        }
        chain.push((STATUS, 1, true));
        let head = d.add_chain(0, &chain);
        d.notify(0);
        let used = d.used(0);
        assert_eq!(used.len(), 1);
        assert_eq!(used[0].0, u32::from(head));
        (d.read_bytes(STATUS, 1)[0], used[0].1)
    }

    #[test]
    fn reads_a_sector() {
        let (mut d, path) = disk("read", false);
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_IN, 1, Some((512, true))),
            (VIRTIO_BLK_S_OK, 513)
        );
        assert_eq!(&d.read_bytes(DATA, 5), b"hello");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn writes_and_flushes() {
        let (mut d, path) = disk("write", false);
        d.write_bytes(DATA, &[0xab; 1024]);
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_OUT, 2, Some((1024, false))).0,
            VIRTIO_BLK_S_OK
        );
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_FLUSH, 0, None).0,
            VIRTIO_BLK_S_OK
        );
        let image = std::fs::read(&path).unwrap();
        assert!(image[1024..2048].iter().all(|b| *b == 0xab));
        assert!(image[2048..].iter().all(|b| *b == 0));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn get_id_is_the_file_name() {
        let (mut d, path) = disk("id", false);
        let (status, len) = request(&mut d, VIRTIO_BLK_T_GET_ID, 0, Some((20, true)));
        assert_eq!((status, len), (VIRTIO_BLK_S_OK, 21));
        let id = d.read_bytes(DATA, 20);
        let name = path.file_name().unwrap().to_string_lossy();
        let n = name.len().min(20);
        assert_eq!(&id[..n], &name.as_bytes()[..n]);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn out_of_range_sectors_fail_with_ioerr() {
        let (mut d, path) = disk("range", false);
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_IN, 8, Some((512, true))).0,
            VIRTIO_BLK_S_IOERR
        );
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_IN, 7, Some((1024, true))).0,
            VIRTIO_BLK_S_IOERR
        );
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_IN, u64::MAX, Some((512, true))).0,
            VIRTIO_BLK_S_IOERR
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn read_only_disks_refuse_writes() {
        let (mut d, path) = disk("ro", true);
        d.write32(super::super::mmio::reg::DEVICE_FEATURES_SEL, 0);
        let features = d.read32(super::super::mmio::reg::DEVICE_FEATURES);
        assert_ne!(u64::from(features) & VIRTIO_BLK_F_RO, 0);
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_OUT, 0, Some((512, false))).0,
            VIRTIO_BLK_S_IOERR
        );
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_IN, 1, Some((512, true))).0,
            VIRTIO_BLK_S_OK
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn unknown_requests_are_unsupported() {
        let (mut d, path) = disk("unsupp", false);
        assert_eq!(request(&mut d, 99, 0, None).0, VIRTIO_BLK_S_UNSUPP);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn malformed_chains_are_returned_not_fatal() {
        let (mut d, path) = disk("malformed", false);
        // No writable status byte.
        d.add_chain(0, &[(HDR, 16, false)]);
        // A buffer far outside guest memory.
        d.add_chain(
            0,
            &[
                (HDR, 16, false),
                (0xff_0000_0000, 512, true),
                (STATUS, 1, true),
            ],
        );
        d.notify(0);
        let used = d.used(0);
        assert_eq!(used.len(), 2);
        assert!(used.iter().all(|(_, len)| *len == 0));
        assert!(d.transport.failure().is_none());
        // The device still serves good requests.
        assert_eq!(
            request(&mut d, VIRTIO_BLK_T_IN, 1, Some((512, true))).0,
            VIRTIO_BLK_S_OK
        );
        std::fs::remove_file(path).unwrap();
    }
}
