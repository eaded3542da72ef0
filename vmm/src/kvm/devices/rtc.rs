//! The CMOS real-time clock on ports 0x70/0x71 (MC146818): enough for a
//! guest to read the wall-clock time at boot instead of waiting for a
//! clock that never ticks.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::kvm::layout::RTC_INDEX_PORT;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_DAY_OF_WEEK: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_STATUS_A: u8 = 0x0a;
const REG_STATUS_B: u8 = 0x0b;
const REG_STATUS_C: u8 = 0x0c;
const REG_STATUS_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;
/// Status A: 32.768 kHz divider, 1024 Hz rate, no update in progress.
const STATUS_A: u8 = 0x26;
/// Status B: 24-hour mode, BCD values.
const STATUS_B: u8 = 0x02;
/// Status D: valid RAM and time.
const STATUS_D: u8 = 0x80;

/// The RTC index register and CMOS RAM.
pub struct Rtc {
    index: u8,
    ram: [u8; 128],
}

impl Default for Rtc {
    fn default() -> Self {
        Rtc {
            index: 0,
            ram: [0; 128],
        }
    }
}

fn bcd(v: u64) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's
/// civil_from_days).
fn civil_from_days(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Rtc {
    fn time_register(reg: u8, unix: u64) -> u8 {
        let days = (unix / 86_400) as i64;
        let secs = unix % 86_400;
        let (year, month, day) = civil_from_days(days);
        match reg {
            REG_SECONDS => bcd(secs % 60),
            REG_MINUTES => bcd(secs / 60 % 60),
            REG_HOURS => bcd(secs / 3600),
            // 1970-01-01 was a Thursday; the RTC counts Sunday as 1.
            REG_DAY_OF_WEEK => bcd(((days + 4).rem_euclid(7) + 1) as u64),
            REG_DAY => bcd(day),
            REG_MONTH => bcd(month),
            REG_YEAR => bcd(year.rem_euclid(100) as u64),
            _ => bcd((year / 100) as u64),
        }
    }

    fn register(&self, reg: u8) -> u8 {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        match reg {
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_DAY_OF_WEEK | REG_DAY | REG_MONTH
            | REG_YEAR | REG_CENTURY => Self::time_register(reg, unix),
            REG_STATUS_A => STATUS_A,
            REG_STATUS_B => STATUS_B,
            REG_STATUS_C => 0,
            REG_STATUS_D => STATUS_D,
            _ => self.ram[usize::from(reg & 0x7f)],
        }
    }

    pub fn read(&mut self, port: u16) -> u8 {
        if port == RTC_INDEX_PORT {
            self.index
        } else {
            self.register(self.index)
        }
    }

    pub fn write(&mut self, port: u16, value: u8) {
        if port == RTC_INDEX_PORT {
            // Bit 7 is the NMI mask, not part of the index.
            self.index = value & 0x7f;
        } else if !matches!(
            self.index,
            REG_STATUS_A | REG_STATUS_B | REG_STATUS_C | REG_STATUS_D
        ) {
            self.ram[usize::from(self.index)] = value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm::layout::RTC_DATA_PORT;

    #[test]
    fn dates_convert() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn time_registers_are_bcd() {
        // 2024-02-29 13:45:56 UTC
        let t = 19_782 * 86_400 + 13 * 3600 + 45 * 60 + 56;
        assert_eq!(Rtc::time_register(REG_SECONDS, t), 0x56);
        assert_eq!(Rtc::time_register(REG_MINUTES, t), 0x45);
        assert_eq!(Rtc::time_register(REG_HOURS, t), 0x13);
        assert_eq!(Rtc::time_register(REG_MONTH, t), 0x02);
        assert_eq!(Rtc::time_register(REG_DAY, t), 0x29);
        assert_eq!(Rtc::time_register(REG_YEAR, t), 0x24);
        assert_eq!(Rtc::time_register(REG_CENTURY, t), 0x20);
    }

    #[test]
    fn status_registers_say_valid_and_idle() {
        let mut r = Rtc::default();
        r.write(RTC_INDEX_PORT, 0x80 | REG_STATUS_D);
        assert_eq!(r.read(RTC_DATA_PORT), STATUS_D);
        r.write(RTC_INDEX_PORT, REG_STATUS_A);
        assert_eq!(r.read(RTC_DATA_PORT) & 0x80, 0);
        r.write(RTC_INDEX_PORT, 0x40);
        r.write(RTC_DATA_PORT, 0x5a);
        assert_eq!(r.read(RTC_DATA_PORT), 0x5a);
    }
}
