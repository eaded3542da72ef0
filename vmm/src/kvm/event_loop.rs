//! The device thread: waits on the virtio queues' ioeventfds and on the
//! devices' host input, and runs the device work they call for.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::devices::virtio::mmio::MmioTransport;

const TOKEN_STOP: u64 = u64::MAX;
const KIND_NOTIFY: u64 = 1;
const KIND_INPUT: u64 = 2;

fn token(kind: u64, device: usize, queue: usize) -> u64 {
    (kind << 48) | ((device as u64) << 16) | queue as u64
}

/// One queue's notification eventfd.
pub struct QueueEvent {
    pub device: usize,
    pub queue: usize,
    pub evt: EventFd,
}

/// Event loop failures.
#[derive(Debug, thiserror::Error)]
pub enum EventLoopError {
    #[error("epoll_create: {0}")]
    Create(io::Error),
    #[error("epoll_ctl add fd {fd}: {source}")]
    Add { fd: RawFd, source: io::Error },
}

struct Input {
    device: usize,
    fd: RawFd,
    armed: bool,
}

/// The loop's state, built before the VM starts.
pub struct EventLoop {
    epoll: Epoll,
    transports: Vec<Arc<Mutex<MmioTransport>>>,
    queue_events: Vec<QueueEvent>,
    inputs: Vec<Input>,
    stop: EventFd,
}

impl EventLoop {
    pub fn new(
        transports: Vec<Arc<Mutex<MmioTransport>>>,
        queue_events: Vec<QueueEvent>,
        stop: EventFd,
    ) -> Result<Self, EventLoopError> {
        let epoll = Epoll::new().map_err(EventLoopError::Create)?;
        let add = |fd: RawFd, events: EventSet, data: u64| {
            epoll
                .ctl(ControlOperation::Add, fd, EpollEvent::new(events, data))
                .map_err(|source| EventLoopError::Add { fd, source })
        };
        add(stop.as_raw_fd(), EventSet::IN, TOKEN_STOP)?;
        for e in &queue_events {
            add(
                e.evt.as_raw_fd(),
                EventSet::IN,
                token(KIND_NOTIFY, e.device, e.queue),
            )?;
        }
        let mut inputs = Vec::new();
        for (device, t) in transports.iter().enumerate() {
            let fd = t.lock().unwrap_or_else(|p| p.into_inner()).input_fd();
            if let Some(fd) = fd {
                // In the epoll set only while the device wants input (an
                // unread or hung-up descriptor would wake the loop forever).
                inputs.push(Input {
                    device,
                    fd,
                    armed: false,
                });
            }
        }
        Ok(EventLoop {
            epoll,
            transports,
            queue_events,
            inputs,
            stop,
        })
    }

    fn transport(&self, device: usize) -> Option<std::sync::MutexGuard<'_, MmioTransport>> {
        self.transports
            .get(device)
            .map(|t| t.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Adds the input descriptors of devices that can take input to the
    /// epoll set, removes the others.
    fn rearm_inputs(&mut self) {
        for i in 0..self.inputs.len() {
            let device = self.inputs[i].device;
            let wants = self.transport(device).is_some_and(|t| t.wants_input());
            let input = &mut self.inputs[i];
            if wants != input.armed {
                let op = if wants {
                    ControlOperation::Add
                } else {
                    ControlOperation::Delete
                };
                let event = EpollEvent::new(EventSet::IN, token(KIND_INPUT, device, 0));
                match self.epoll.ctl(op, input.fd, event) {
                    Ok(()) => input.armed = wants,
                    Err(e) => {
                        // A descriptor epoll cannot watch (a regular file):
                        // its input is not served.
                        eprintln!("sbx-vmm: device {device} input fd {}: {e}", input.fd);
                        input.device = usize::MAX;
                    }
                }
            }
        }
    }

    /// Runs until the stop eventfd is written.
    pub fn run(mut self) {
        let mut events = vec![EpollEvent::default(); 32];
        loop {
            self.rearm_inputs();
            let n = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("sbx-vmm: device event loop: epoll_wait: {e}");
                    return;
                }
            };
            for event in &events[..n] {
                let data = event.data();
                if data == TOKEN_STOP {
                    return;
                }
                let device = ((data >> 16) & 0xffff_ffff) as usize;
                let queue = (data & 0xffff) as usize;
                match data >> 48 {
                    KIND_NOTIFY => {
                        if let Some(e) = self
                            .queue_events
                            .iter()
                            .find(|e| e.device == device && e.queue == queue)
                        {
                            let _ = e.evt.read();
                        }
                        if let Some(mut t) = self.transport(device) {
                            t.notify(queue);
                        }
                    }
                    KIND_INPUT => {
                        if let Some(mut t) = self.transport(device) {
                            t.input_ready();
                        }
                    }
                    _ => {}
                }
            }
            let _ = &self.stop;
        }
    }
}
