//! When a budget's counts start again. Times are Unix milliseconds (UTC); every method is
//! defined for every `now` (results past `u64::MAX` saturate).

use super::{month, Cycle, Millis};
use std::num::NonZeroU64;

/// A budget's window (SPEC 1, 5). A new kind of window is a new variant with its own
/// `start`/`end`; callers only ask these methods, never compare lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Window {
    /// No window: `in_flight` counts what is held now, and never resets.
    #[default]
    None,
    /// Windows of this many milliseconds, aligned to the Unix epoch (`window_ms`).
    Fixed(NonZeroU64),
    /// UTC calendar months (`"window": "calendar_month"`): from 00:00 UTC on the 1st.
    CalendarMonth,
    /// A billing cycle: every day, or every month on a day, from 00:00 local time in a time
    /// zone (`"window": {"cycle": ...}`; a tenant or scope id may anchor it on its own day
    /// and zone).
    Cycle(Cycle),
}

impl Window {
    /// `Fixed(ms)`, or `None` for 0.
    pub const fn from_ms(ms: u64) -> Window {
        match NonZeroU64::new(ms) {
            Some(ms) => Window::Fixed(ms),
            None => Window::None,
        }
    }

    /// The length of a fixed window in ms (None for the others).
    pub fn fixed_ms(self) -> Option<u64> {
        match self {
            Window::Fixed(ms) => Some(ms.get()),
            _ => None,
        }
    }

    pub fn is_none(self) -> bool {
        self == Window::None
    }

    /// Windows that follow a calendar (months, billing cycles) rather than the epoch: a
    /// global budget counts them in the rate limit service's YEAR with the window named in an
    /// entry of its own (`core::global_slot`, `global::rls`).
    pub fn is_calendar(self) -> bool {
        matches!(self, Window::CalendarMonth | Window::Cycle(_))
    }

    /// The billing cycle, if the window is one.
    pub fn cycle(self) -> Option<Cycle> {
        match self {
            Window::Cycle(c) => Some(c),
            _ => None,
        }
    }

    /// Start of the window containing `now` (0 without a window).
    pub fn start(self, now: Millis) -> Millis {
        match self {
            Window::None => 0,
            Window::Fixed(ms) => now - now % ms.get(),
            Window::CalendarMonth => month::month_start(now),
            Window::Cycle(c) => c.start(now),
        }
    }

    /// End of the window that starts at `start` (`start` itself without a window).
    pub fn end(self, start: Millis) -> Millis {
        match self {
            Window::None => start,
            Window::Fixed(ms) => start.saturating_add(ms.get()),
            Window::CalendarMonth => month::next_month_start(start),
            Window::Cycle(c) => c.end(start),
        }
    }

    /// The length in ms of the window that starts at `start` (0 without a window).
    pub fn len_ms(self, start: Millis) -> u64 {
        match self {
            Window::Fixed(ms) => ms.get(),
            _ => self.end(start).saturating_sub(start),
        }
    }

    /// The length of the window containing `now`, in whole seconds (the RateLimit `w`; 0
    /// without a window).
    pub fn len_s(self, now: Millis) -> u64 {
        match self {
            Window::None => 0,
            Window::Fixed(ms) => ms.get().div_ceil(1000),
            Window::CalendarMonth => month::month_len_ms(now) / 1000,
            Window::Cycle(c) => {
                let start = c.start(now);
                c.end(start).saturating_sub(start) / 1000
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const FEB_2024: Millis = 1_706_745_600_000; // 2024-02-01T00:00:00Z
    const MAR_2024: Millis = 1_709_251_200_000;

    #[test]
    fn none_has_no_start_end_or_length() {
        assert_eq!(Window::from_ms(0), Window::None);
        assert_eq!(Window::None.start(FEB_2024 + 5), 0);
        assert_eq!(Window::None.end(7), 7);
        assert_eq!((Window::None.len_ms(7), Window::None.len_s(FEB_2024)), (0, 0));
    }

    #[test]
    fn fixed_windows_align_to_the_epoch() {
        let w = Window::from_ms(60_000);
        assert_eq!(w.fixed_ms(), Some(60_000));
        assert_eq!(w.start(FEB_2024 + 61_234), FEB_2024 + 60_000);
        assert_eq!(w.end(FEB_2024), FEB_2024 + 60_000);
        assert_eq!(w.end(u64::MAX - 5), u64::MAX, "saturates");
        assert_eq!((w.len_ms(0), w.len_s(0)), (60_000, 60));
        assert_eq!(Window::from_ms(1500).len_s(0), 2, "whole seconds, rounded up");
    }

    #[test]
    fn calendar_months_follow_the_utc_calendar() {
        let m = Window::CalendarMonth;
        assert_eq!(m.fixed_ms(), None);
        assert_eq!(m.start(MAR_2024 - 1), FEB_2024);
        assert_eq!(m.end(FEB_2024), MAR_2024);
        assert_eq!(m.len_ms(FEB_2024), 29 * 86_400_000, "2024 is a leap year");
        assert_eq!(m.len_s(FEB_2024 + 1), 29 * 86_400);
    }
}
