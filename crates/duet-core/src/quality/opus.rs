//! How Opus follows the link: bitrate from the estimate, in-band FEC and the expected loss from the
//! measured loss, and 60 ms frames in audio-only mode under a very low estimate (fewer packets,
//! less header overhead).

use serde::Serialize;

/// Opus settings the sender applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AudioSettings {
    /// Target bitrate, bit/s.
    pub bitrate_bps: u32,
    /// In-band FEC on.
    pub fec: bool,
    /// The loss the encoder should expect, percent.
    pub expected_loss_pct: u8,
    /// Packet duration, ms (20 or 60).
    pub frame_ms: u32,
}

/// Lowest Opus bitrate used (speech stays intelligible in wideband).
pub const MIN_BPS: u32 = 12_000;
/// Highest Opus bitrate used.
pub const MAX_BPS: u32 = 48_000;
/// Share of the estimate audio may take while video is on (48 kb/s from 400 kb/s up).
const SHARE: f64 = 0.12;
/// Under this estimate (kbit/s), audio-only calls use 60 ms packets ...
pub const LONG_FRAMES_BELOW_KBPS: f64 = 80.0;
/// ... and at most this bitrate (good wideband speech): on such a link an estimate that drifts
/// up while the sender is application-limited would let audio fill the link, and then anything
/// else (a probe, a retransmission, another application) queues the voice behind it.
pub const THIN_LINK_MAX_BPS: u32 = 24_000;
/// Loss (fraction) from which FEC is switched on.
const FEC_FROM_LOSS: f64 = 0.01;

/// The Opus settings for an estimate (kbit/s), a loss fraction (0..1) and whether video is off.
pub fn settings(estimate_kbps: f64, loss: f64, audio_only: bool) -> AudioSettings {
    let loss = loss.clamp(0.0, 1.0);
    let fec = loss >= FEC_FROM_LOSS;
    // FEC costs bits: libopus spends them from the same budget, so give it a little more.
    let share = if audio_only { 0.6 } else { SHARE };
    let wanted = estimate_kbps * 1000.0 * share * if fec { 1.2 } else { 1.0 };
    let bitrate_bps = (wanted as u32).clamp(MIN_BPS, MAX_BPS);
    // Round to 2 kb/s so small estimate wobbles do not reconfigure the encoder every tick.
    let bitrate_bps = bitrate_bps / 2000 * 2000;
    let expected_loss_pct = if fec { ((loss * 100.0).ceil() as u8).min(30) } else { 0 };
    let thin = audio_only && estimate_kbps < LONG_FRAMES_BELOW_KBPS;
    let frame_ms = if thin { 60 } else { 20 };
    let bitrate_bps = if thin { bitrate_bps.min(THIN_LINK_MAX_BPS) } else { bitrate_bps };
    AudioSettings { bitrate_bps, fec, expected_loss_pct, frame_ms }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrate_follows_the_link_between_12_and_48_kbps() {
        assert_eq!(settings(3000.0, 0.0, false).bitrate_bps, MAX_BPS);
        assert_eq!(settings(20.0, 0.0, true).bitrate_bps, MIN_BPS);
        let mid = settings(100.0, 0.0, false).bitrate_bps;
        assert!((MIN_BPS..MAX_BPS).contains(&mid), "{mid}");
    }

    #[test]
    fn a_thin_audio_only_link_is_never_filled_by_audio() {
        let thin = settings(75.0, 0.0, true);
        assert_eq!((thin.bitrate_bps, thin.frame_ms), (THIN_LINK_MAX_BPS, 60));
        // With video on, or on a better link, the share applies.
        assert_eq!(settings(75.0, 0.0, false).frame_ms, 20);
        assert!(settings(200.0, 0.0, true).bitrate_bps > THIN_LINK_MAX_BPS);
    }

    #[test]
    fn loss_turns_fec_on_with_the_expected_loss() {
        let clean = settings(500.0, 0.0, false);
        assert!(!clean.fec);
        assert_eq!(clean.expected_loss_pct, 0);
        let lossy = settings(500.0, 0.05, false);
        assert!(lossy.fec);
        assert_eq!(lossy.expected_loss_pct, 5);
    }

    #[test]
    fn long_frames_only_in_audio_only_mode_under_a_very_low_estimate() {
        assert_eq!(settings(48.0, 0.0, true).frame_ms, 60);
        assert_eq!(settings(48.0, 0.0, false).frame_ms, 20);
        assert_eq!(settings(300.0, 0.0, true).frame_ms, 20);
    }

    #[test]
    fn audio_fits_a_48_kbps_link_with_room_for_headers() {
        // 60 ms packets: ~17 packets/s x ~40 bytes of IP/UDP/SRTP/RTP overhead = ~5.4 kb/s.
        let s = settings(40.0, 0.05, true);
        assert!(s.bitrate_bps <= 30_000, "{s:?}");
    }
}
