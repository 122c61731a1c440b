//! When parcels arrive: the scaled daily volume, the diurnal curve, the compression of a day
//! into a few wall-clock minutes and the peak factor, turned into an open-loop list of intended
//! send times. It owns no I/O and no clock: it only computes offsets from the start of a run.
//!
//! The rate is piecewise constant over quarter hours of the replayed day (the hourly curve is
//! interpolated linearly at each quarter's midpoint), so arrival `k` falls exactly where the
//! integral of the rate reaches `k`; the schedule is deterministic and does not drift.

use std::time::Duration;

use crate::error::{Error, Result};

/// Seconds in the replayed day.
const DAY_SECS: f64 = 86_400.0;

/// Steps of the piecewise-constant rate (quarter hours).
const STEPS_PER_DAY: usize = 96;

/// Largest number of parcels a replayed day may have (the 2024 EU daily average is about
/// 12.6 million; this leaves room for peak days of 3.5×).
pub const MAX_PARCELS_PER_DAY: u64 = 50_000_000;

/// Relative China→EU parcel arrivals per hour of the EU day (0 h … 23 h), mean 1: orders
/// placed in the EU evening reach the engine as labels are printed and parcels scanned, low at
/// night, rising through the morning, highest in the early evening.
pub const DEFAULT_CURVE: [f64; 24] = [
    0.35, 0.25, 0.20, 0.20, 0.25, 0.40, 0.65, 0.95, 1.20, 1.30, 1.30, 1.25, //
    1.20, 1.20, 1.25, 1.30, 1.40, 1.55, 1.70, 1.75, 1.60, 1.30, 0.95, 0.60,
];

/// The shape of a replay in time.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// Parcels in one average replayed day.
    pub parcels_per_day: u64,
    /// Wall-clock length of one replayed day.
    pub day_wall: Duration,
    /// Multiplier of the whole day's volume (1.5–3.5 for peak days).
    pub peak_factor: f64,
    /// Hour of the replayed day the run starts at (0–23).
    pub start_hour: u32,
    /// Wall-clock length of the run (at most `day_wall` is meaningful, longer wraps the day).
    pub run_wall: Duration,
    /// Relative arrivals per hour; normalised to mean 1 on use.
    pub curve: [f64; 24],
}

impl Shape {
    /// Checks the bounds; the message names the flag to change.
    pub fn validate(&self) -> Result<()> {
        if self.parcels_per_day == 0 || self.parcels_per_day > MAX_PARCELS_PER_DAY {
            return Err(Error::new(format!(
                "--parcels-per-day must be between 1 and {MAX_PARCELS_PER_DAY}, got {}",
                self.parcels_per_day
            )));
        }
        if self.day_wall.is_zero() {
            return Err(Error::new("--compress must be longer than 0"));
        }
        if !(self.peak_factor > 0.0 && self.peak_factor <= 10.0) {
            return Err(Error::new(format!(
                "--peak-factor must be above 0 and at most 10, got {}",
                self.peak_factor
            )));
        }
        if self.start_hour > 23 {
            return Err(Error::new("--start-hour must be 0 to 23"));
        }
        if self.run_wall.is_zero() {
            return Err(Error::new("--duration must be longer than 0"));
        }
        if self.curve.iter().any(|w| !w.is_finite() || *w < 0.0)
            || self.curve.iter().sum::<f64>() <= 0.0
        {
            return Err(Error::new(
                "the diurnal curve needs 24 non-negative weights, not all zero",
            ));
        }
        Ok(())
    }

    /// How many replayed-day seconds pass per wall-clock second.
    pub fn speedup(&self) -> f64 {
        DAY_SECS / self.day_wall.as_secs_f64()
    }

    /// Parcels per wall-clock second at each quarter hour of the replayed day.
    fn wall_rates(&self) -> [f64; STEPS_PER_DAY] {
        let mean = self.curve.iter().sum::<f64>() / 24.0;
        let per_day_sec = self.parcels_per_day as f64 * self.peak_factor / DAY_SECS;
        let mut out = [0.0; STEPS_PER_DAY];
        for (i, rate) in out.iter_mut().enumerate() {
            // The quarter's midpoint, in hours; interpolate between the hours around it.
            let h = (i as f64 + 0.5) / 4.0 - 0.5;
            let lo = h.floor();
            let frac = h - lo;
            let a = self.curve[(lo as i64).rem_euclid(24) as usize];
            let b = self.curve[((lo as i64) + 1).rem_euclid(24) as usize];
            let weight = (a + (b - a) * frac) / mean;
            *rate = per_day_sec * weight * self.speedup();
        }
        out
    }

    /// The peak wall-clock rate of the run, parcels per second.
    pub fn peak_wall_rate(&self) -> f64 {
        self.wall_rates().iter().copied().fold(0.0, f64::max)
    }

    /// The intended send offsets of every arrival of the run, in order.
    pub fn arrivals(&self) -> Arrivals {
        let step_wall = self.day_wall.as_secs_f64() / STEPS_PER_DAY as f64;
        let first = (self.start_hour as usize * 4) % STEPS_PER_DAY;
        Arrivals {
            rates: self.wall_rates(),
            step_wall,
            step: first,
            step_start: 0.0,
            cum_at_step: 0.0,
            next_k: 1.0,
            end: self.run_wall.as_secs_f64(),
        }
    }

    /// Expected number of arrivals in the run (the integral of the rate).
    pub fn expected_arrivals(&self) -> u64 {
        self.arrivals().count() as u64
    }
}

/// Iterator over intended send offsets (from the start of the run).
#[derive(Debug, Clone)]
pub struct Arrivals {
    rates: [f64; STEPS_PER_DAY],
    step_wall: f64,
    step: usize,
    step_start: f64,
    cum_at_step: f64,
    next_k: f64,
    end: f64,
}

impl Iterator for Arrivals {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        loop {
            if self.step_start >= self.end {
                return None;
            }
            let rate = self.rates[self.step % STEPS_PER_DAY];
            let in_step = rate * self.step_wall;
            if self.cum_at_step + in_step >= self.next_k && rate > 0.0 {
                let at = self.step_start + (self.next_k - self.cum_at_step) / rate;
                if at >= self.end {
                    return None;
                }
                self.next_k += 1.0;
                return Some(Duration::from_secs_f64(at));
            }
            self.cum_at_step += in_step;
            self.step_start += self.step_wall;
            self.step += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(per_day: u64, minutes: u64, run_secs: u64) -> Shape {
        Shape {
            parcels_per_day: per_day,
            day_wall: Duration::from_secs(minutes * 60),
            peak_factor: 1.0,
            start_hour: 0,
            run_wall: Duration::from_secs(run_secs),
            curve: DEFAULT_CURVE,
        }
    }

    #[test]
    fn a_whole_compressed_day_carries_the_daily_volume() {
        let s = shape(86_400, 10, 600);
        let n = s.expected_arrivals();
        assert!((86_399..=86_400).contains(&n), "{n}");
    }

    #[test]
    fn arrivals_are_increasing_and_inside_the_run() {
        let s = shape(10_000, 1, 30);
        let mut last = Duration::ZERO;
        for at in s.arrivals() {
            assert!(at >= last);
            assert!(at < Duration::from_secs(30));
            last = at;
        }
    }

    #[test]
    fn the_peak_factor_scales_the_volume() {
        let mut s = shape(86_400, 10, 600);
        s.peak_factor = 3.5;
        let n = s.expected_arrivals();
        assert!((302_399..=302_400).contains(&n), "{n}");
    }

    #[test]
    fn the_evening_is_busier_than_the_night() {
        let s = shape(86_400, 24 * 60, 3600);
        let night = s.arrivals().count();
        let mut evening = s.clone();
        evening.start_hour = 19;
        assert!(evening.arrivals().count() > 3 * night);
    }

    #[test]
    fn bounds_are_checked() {
        assert!(shape(0, 1, 1).validate().is_err());
        let mut s = shape(10, 1, 1);
        s.peak_factor = 0.0;
        assert!(s.validate().is_err());
        s.peak_factor = 1.0;
        s.curve = [0.0; 24];
        assert!(s.validate().is_err());
        assert!(shape(10, 1, 1).validate().is_ok());
    }
}
