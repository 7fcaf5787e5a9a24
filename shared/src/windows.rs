//! Sync windows, as in Argo CD: per target, `allow` and `deny` windows, each a cron start in
//! its own time zone and a duration. Outside every allow window (when there are any), or inside
//! any deny window, automatic syncs wait and manual syncs are refused, unless the windows that
//! close the target allow manual syncs (`manual_sync: true`, Argo CD's `manualSync`); a person
//! may override (`--override-window`).
//!
//! Pure: every function takes the time it is asked about, so the poller's injectable clock
//! decides (and tests need no sleeps).

use std::fmt;

use chrono::{DateTime, Duration, Timelike, Utc};
use chrono_tz::Tz;
use serde::Serialize;

/// Whether a window lets syncs through or holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    Allow,
    Deny,
}

impl WindowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowKind::Allow => "allow",
            WindowKind::Deny => "deny",
        }
    }
}

/// One window: it opens at each time `schedule` matches (in `timezone`) and lasts `duration`.
#[derive(Debug, Clone)]
pub struct SyncWindow {
    pub kind: WindowKind,
    /// The cron expression as written (five fields).
    pub schedule: String,
    cron: croner::Cron,
    pub duration: Duration,
    pub timezone: Tz,
    /// Manual syncs may run while this window closes the target (Argo CD's `manualSync`).
    pub manual_sync: bool,
}

/// Why a window cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error("`schedule: {schedule}` is not a five-field cron expression: {reason}")]
    Schedule { schedule: String, reason: String },
    #[error(
        "`duration: {0}` is not a duration: write a positive number with a unit, e.g. 30m, 8h, 1d"
    )]
    Duration(String),
    #[error("`timezone: {0}` is not an IANA time zone name (e.g. UTC, Europe/Paris)")]
    TimeZone(String),
}

/// Parses `30s`, `45m`, `8h`, `2d` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, WindowError> {
    let text = text.trim();
    let bad = || WindowError::Duration(text.to_string());
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: i64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "s" => Some(number),
        "m" => number.checked_mul(60),
        "h" => number.checked_mul(3_600),
        "d" => number.checked_mul(86_400),
        _ => None,
    }
    .filter(|seconds| *seconds > 0)
    .ok_or_else(bad)?;
    Duration::try_seconds(seconds).ok_or_else(bad)
}

impl SyncWindow {
    pub fn new(
        kind: WindowKind,
        schedule: &str,
        duration: &str,
        timezone: Option<&str>,
    ) -> Result<SyncWindow, WindowError> {
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .year(croner::parser::Year::Disallowed)
            .build();
        let cron = parser
            .parse(schedule.trim())
            .map_err(|e| WindowError::Schedule {
                schedule: schedule.to_string(),
                reason: e.to_string(),
            })?;
        let timezone = match timezone.map(str::trim) {
            None | Some("") => Tz::UTC,
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| WindowError::TimeZone(name.to_string()))?,
        };
        Ok(SyncWindow {
            kind,
            schedule: schedule.trim().to_string(),
            cron,
            duration: parse_duration(duration)?,
            timezone,
            manual_sync: false,
        })
    }

    /// This window with `manual_sync` set (see [`allows_manual`]).
    pub fn with_manual_sync(mut self, manual_sync: bool) -> SyncWindow {
        self.manual_sync = manual_sync;
        self
    }

    /// The window's `[start, end)` holding `now`, if it is open then.
    pub fn active_at(&self, now: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        // The latest start is enough: an earlier one, with the same duration, ends earlier.
        let local = now.with_timezone(&self.timezone);
        let start = whole_seconds(
            self.cron
                .find_previous_occurrence(&local, true)
                .ok()?
                .with_timezone(&Utc),
        );
        let end = start + self.duration;
        (start <= now && now < end).then_some((start, end))
    }

    /// The first start strictly after `after`.
    fn next_start(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.timezone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|start| whole_seconds(start.with_timezone(&Utc)))
    }
}

/// croner keeps the sub-second part of the time it searches from; a window starts on the
/// second its schedule names.
fn whole_seconds(at: DateTime<Utc>) -> DateTime<Utc> {
    at.with_nanosecond(0).unwrap_or(at)
}

impl fmt::Display for SyncWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} `{}` for {} ({}{})",
            self.kind.as_str(),
            self.schedule,
            humanise(self.duration),
            self.timezone,
            if self.manual_sync {
                ", manual syncs allowed"
            } else {
                ""
            }
        )
    }
}

fn humanise(duration: Duration) -> String {
    let seconds = duration.num_seconds();
    match seconds {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Whether automatic syncs may run at `now`: inside no deny window and, when there are allow
/// windows, inside one of them.
pub fn allows(windows: &[SyncWindow], now: DateTime<Utc>) -> bool {
    let denied = windows
        .iter()
        .any(|w| w.kind == WindowKind::Deny && w.active_at(now).is_some());
    let mut allow = windows.iter().filter(|w| w.kind == WindowKind::Allow);
    let allowed = match allow.next() {
        None => true,
        Some(first) => std::iter::once(first)
            .chain(allow)
            .any(|w| w.active_at(now).is_some()),
    };
    allowed && !denied
}

/// Whether a manual sync may run at `now`, as Argo CD decides it: when [`allows`] holds; else,
/// inside deny windows, only when every active deny window has `manual_sync`; else (outside
/// every allow window) when one of the allow windows has `manual_sync`.
pub fn allows_manual(windows: &[SyncWindow], now: DateTime<Utc>) -> bool {
    if allows(windows, now) {
        return true;
    }
    let mut active_denies = windows
        .iter()
        .filter(|w| w.kind == WindowKind::Deny && w.active_at(now).is_some())
        .peekable();
    if active_denies.peek().is_some() {
        return active_denies.all(|w| w.manual_sync);
    }
    windows
        .iter()
        .any(|w| w.kind == WindowKind::Allow && w.manual_sync)
}

/// Bound on the search for the next opening: each step jumps to the next window edge, so
/// this covers years of realistic schedules.
const OPENING_SEARCH_STEPS: usize = 1_000;

/// When automatic syncs may next run: `now` when they may now, else the first window edge at
/// which [`allows`] holds; `None` when none is found (e.g. only deny windows that never end).
pub fn next_opening(windows: &[SyncWindow], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut at = now;
    for _ in 0..OPENING_SEARCH_STEPS {
        if allows(windows, at) {
            return Some(at);
        }
        // The state can only change where a window starts or ends.
        at = windows
            .iter()
            .flat_map(|w| {
                let end = w.active_at(at).map(|(_, end)| end);
                let start = w.next_start(at);
                let next_end = start.map(|start| start + w.duration);
                [end, start, next_end]
            })
            .flatten()
            .filter(|edge| *edge > at)
            .min()?;
    }
    None
}

/// What `status` shows about a target's windows at `now`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowStatus {
    /// Whether automatic syncs may run now.
    pub open: bool,
    /// The windows in effect now, as `allow `0 9 * * 1-5` for 8h (Europe/Paris)`.
    pub active: Vec<String>,
    /// When automatic syncs may next run, when they may not now.
    pub next_opening: Option<DateTime<Utc>>,
}

pub fn status(windows: &[SyncWindow], now: DateTime<Utc>) -> Option<WindowStatus> {
    if windows.is_empty() {
        return None;
    }
    let open = allows(windows, now);
    Some(WindowStatus {
        open,
        active: windows
            .iter()
            .filter(|w| w.active_at(now).is_some())
            .map(ToString::to_string)
            .collect(),
        next_opening: if open {
            None
        } else {
            next_opening(windows, now)
        },
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn window(kind: WindowKind, schedule: &str, duration: &str, tz: &str) -> SyncWindow {
        SyncWindow::new(kind, schedule, duration, Some(tz)).unwrap()
    }

    #[test]
    fn a_deny_window_holds_syncs_until_it_ends() {
        let night = [window(WindowKind::Deny, "0 22 * * *", "8h", "UTC")];

        assert!(allows(&night, at("2026-12-07T21:59:59Z")));
        assert!(!allows(&night, at("2026-12-07T22:00:00Z")));
        assert!(!allows(&night, at("2026-12-08T05:59:59Z")));
        assert!(allows(&night, at("2026-12-08T06:00:00Z")));
        assert_eq!(
            next_opening(&night, at("2026-12-08T01:00:00Z")),
            Some(at("2026-12-08T06:00:00Z"))
        );
    }

    #[test]
    fn allow_windows_follow_their_time_zone() {
        // 09:00 in Paris is 08:00 UTC in winter.
        let office = [window(
            WindowKind::Allow,
            "0 9 * * 1-5",
            "8h",
            "Europe/Paris",
        )];
        let monday_7_utc = Utc.with_ymd_and_hms(2026, 12, 7, 7, 0, 0).unwrap();

        assert!(!allows(&office, monday_7_utc));
        assert!(allows(&office, at("2026-12-07T08:00:00Z")));
        assert!(!allows(&office, at("2026-12-07T16:00:00Z")));
        assert_eq!(
            next_opening(&office, monday_7_utc),
            Some(at("2026-12-07T08:00:00Z"))
        );
        // Saturday evening: the next opening is Monday morning.
        assert_eq!(
            next_opening(&office, at("2026-12-12T20:00:00Z")),
            Some(at("2026-12-14T08:00:00Z"))
        );
    }

    #[test]
    fn a_deny_window_inside_an_allow_window_wins_and_the_opening_follows_it() {
        let windows = [
            window(WindowKind::Allow, "0 8 * * *", "10h", "UTC"),
            window(WindowKind::Deny, "0 12 * * *", "1h", "UTC"),
        ];

        let status = status(&windows, at("2026-12-07T12:30:00Z")).unwrap();

        assert!(!status.open);
        assert_eq!(status.active.len(), 2, "{status:?}");
        assert_eq!(status.next_opening, Some(at("2026-12-07T13:00:00Z")));
    }

    #[test]
    fn windows_start_on_the_whole_second_whatever_the_time_asked_about() {
        let night = [window(WindowKind::Deny, "0 22 * * *", "8h", "UTC")];

        assert_eq!(
            next_opening(&night, at("2026-12-08T01:00:00.25Z")),
            Some(at("2026-12-08T06:00:00Z"))
        );
        assert!(allows(&night, at("2026-12-07T21:59:59.999Z")));
    }

    #[test]
    fn manual_syncs_pass_only_windows_that_allow_them() {
        let now = at("2026-03-02T10:00:00Z");
        let deny = window(WindowKind::Deny, "0 9 * * *", "8h", "UTC");
        let closed_allow = window(WindowKind::Allow, "0 22 * * *", "1h", "UTC");

        assert!(!allows_manual(std::slice::from_ref(&deny), now));
        assert!(allows_manual(&[deny.clone().with_manual_sync(true)], now));
        assert!(!allows_manual(
            &[deny.clone().with_manual_sync(true), deny.clone()],
            now
        ));
        assert!(!allows_manual(std::slice::from_ref(&closed_allow), now));
        assert!(allows_manual(&[closed_allow.with_manual_sync(true)], now));
        assert!(allows_manual(&[], now));
    }

    #[test]
    fn no_windows_means_always_open_and_no_status() {
        assert!(allows(&[], at("2026-12-07T12:30:00Z")));
        assert_eq!(status(&[], at("2026-12-07T12:30:00Z")), None);
    }

    #[test]
    fn bad_windows_say_what_to_write() {
        let error = |schedule, duration, tz| {
            SyncWindow::new(WindowKind::Deny, schedule, duration, Some(tz))
                .unwrap_err()
                .to_string()
        };

        assert!(error("0 22 * *", "8h", "UTC").contains("cron"));
        assert!(error("0 22 * * *", "8 hours", "UTC").contains("e.g. 30m, 8h, 1d"));
        assert!(error("0 22 * * *", "0h", "UTC").contains("positive"));
        assert!(error("0 22 * * *", "8h", "Mars/Olympus").contains("IANA"));
        assert_eq!(parse_duration("90").unwrap(), Duration::seconds(90));
        assert_eq!(parse_duration("1d").unwrap(), Duration::hours(24));
    }
}
