//! Opus encoder and decoder (system libopus through the `opus` crate), 48 kHz, mono or stereo.

use tracing::debug;

use crate::{AUDIO_SAMPLE_RATE, AudioFrame, FrameDuration, MediaError};

const CODEC: &str = "Opus";
/// The largest packet libopus can produce for one frame of up to 120 ms (RFC 6716 recommends 4000 bytes).
const MAX_PACKET: usize = 4000;
/// The longest frame a packet can hold: 120 ms at 48 kHz.
const MAX_FRAME_SAMPLES: usize = 5760;

/// Settings of an [`OpusEncoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusConfig {
    /// 1 (mono, the default: voice) or 2.
    pub channels: u16,
    /// Target bitrate in bit/s, 6000..=510000 (default 32000).
    pub bitrate_bps: u32,
    /// Duration of each packet (default 20 ms; 60 ms saves header overhead in audio-only mode).
    pub frame_duration: FrameDuration,
    /// In-band forward error correction (default on): each packet carries a low-rate copy of the previous
    /// one, recovered with [`OpusDecoder::conceal`]. libopus only spends bits on it when
    /// [`expected_loss_pct`](OpusConfig::expected_loss_pct) is above 0.
    pub fec: bool,
    /// Expected packet loss in percent, 0..=100 (default 0; set it from RTCP receiver reports).
    pub expected_loss_pct: u8,
}

impl Default for OpusConfig {
    fn default() -> Self {
        Self { channels: 1, bitrate_bps: 32_000, frame_duration: FrameDuration::Ms20, fec: true, expected_loss_pct: 0 }
    }
}

/// One Opus packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedAudio {
    /// The Opus packet.
    pub data: Vec<u8>,
    /// Timestamp of its first sample (from the input frames).
    pub timestamp_us: u64,
    /// Audio duration it carries.
    pub duration: FrameDuration,
}

/// An Opus encoder in VoIP mode at 48 kHz.
///
/// It accepts 48 kHz frames of any length and re-frames them into packets of the configured duration, so
/// the packet duration can change on the fly (from the next packet) whatever the source's frame size.
pub struct OpusEncoder {
    encoder: opus::Encoder,
    config: OpusConfig,
    pending: Vec<i16>,
    pending_timestamp_us: u64,
    packet: Vec<u8>,
}

impl OpusEncoder {
    /// Creates an encoder with `config`.
    pub fn new(config: OpusConfig) -> Result<Self, MediaError> {
        let channels = opus_channels(config.channels)?;
        let encoder = opus::Encoder::new(AUDIO_SAMPLE_RATE, channels, opus::Application::Voip)
            .map_err(|e| codec_error("encoder init", &e))?;
        let mut this =
            Self { encoder, config, pending: Vec::new(), pending_timestamp_us: 0, packet: vec![0; MAX_PACKET] };
        this.set_bitrate(config.bitrate_bps)?;
        this.set_fec(config.fec)?;
        this.set_expected_loss(config.expected_loss_pct)?;
        Ok(this)
    }

    /// The current settings.
    #[must_use]
    pub fn config(&self) -> &OpusConfig {
        &self.config
    }

    /// Changes the target bitrate (bit/s, 6000..=510000) from the next packet on.
    pub fn set_bitrate(&mut self, bitrate_bps: u32) -> Result<(), MediaError> {
        let bits = i32::try_from(bitrate_bps)
            .ok()
            .filter(|b| (6_000..=510_000).contains(b))
            .ok_or_else(|| MediaError::InvalidArgument(format!("Opus bitrate {bitrate_bps} out of 6000..=510000")))?;
        self.encoder.set_bitrate(opus::Bitrate::Bits(bits)).map_err(|e| codec_error("set bitrate", &e))?;
        self.config.bitrate_bps = bitrate_bps;
        Ok(())
    }

    /// Changes the packet duration from the next packet on.
    pub fn set_frame_duration(&mut self, duration: FrameDuration) {
        self.config.frame_duration = duration;
    }

    /// Turns in-band FEC on or off.
    pub fn set_fec(&mut self, on: bool) -> Result<(), MediaError> {
        self.encoder.set_inband_fec(on).map_err(|e| codec_error("set FEC", &e))?;
        self.config.fec = on;
        Ok(())
    }

    /// Sets the expected packet loss (percent, 0..=100), which tunes FEC and the encoder's robustness.
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), MediaError> {
        if percent > 100 {
            return Err(MediaError::InvalidArgument(format!("packet loss {percent} % is over 100")));
        }
        self.encoder.set_packet_loss_perc(i32::from(percent)).map_err(|e| codec_error("set packet loss", &e))?;
        self.config.expected_loss_pct = percent;
        Ok(())
    }

    /// Adds a 48 kHz frame with the encoder's channel count; returns the packets completed by it (zero, one
    /// or more depending on the frame and packet durations).
    pub fn encode(&mut self, frame: &AudioFrame) -> Result<Vec<EncodedAudio>, MediaError> {
        if frame.sample_rate() != AUDIO_SAMPLE_RATE || frame.channels() != self.config.channels {
            return Err(MediaError::InvalidArgument(format!(
                "Opus encoder takes {} Hz {}-channel audio, got {} Hz {}-channel",
                AUDIO_SAMPLE_RATE,
                self.config.channels,
                frame.sample_rate(),
                frame.channels()
            )));
        }
        if self.pending.is_empty() {
            self.pending_timestamp_us = frame.timestamp_us();
        }
        self.pending.extend_from_slice(frame.samples());
        let mut packets = Vec::new();
        loop {
            let duration = self.config.frame_duration;
            let needed = duration.samples_per_channel(AUDIO_SAMPLE_RATE) * usize::from(self.config.channels);
            if self.pending.len() < needed {
                break;
            }
            let length = self
                .encoder
                .encode(&self.pending[..needed], &mut self.packet)
                .map_err(|e| codec_error("encode", &e))?;
            packets.push(EncodedAudio {
                data: self.packet[..length].to_vec(),
                timestamp_us: self.pending_timestamp_us,
                duration,
            });
            self.pending.drain(..needed);
            self.pending_timestamp_us += u64::from(duration.as_millis()) * 1000;
        }
        Ok(packets)
    }
}

/// An Opus decoder at 48 kHz with packet-loss concealment and FEC recovery.
pub struct OpusDecoder {
    decoder: opus::Decoder,
    channels: u16,
    buffer: Vec<i16>,
}

impl OpusDecoder {
    /// A decoder producing `channels` (1 or 2) channels, whatever the sender encoded.
    pub fn new(channels: u16) -> Result<Self, MediaError> {
        let decoder = opus::Decoder::new(AUDIO_SAMPLE_RATE, opus_channels(channels)?)
            .map_err(|e| codec_error("decoder init", &e))?;
        Ok(Self { decoder, channels, buffer: vec![0; MAX_FRAME_SAMPLES * usize::from(channels)] })
    }

    /// Decodes one packet into a frame stamped `timestamp_us`. A malformed packet gives
    /// [`MediaError::CorruptFrame`]; treat it as lost and [`conceal`](OpusDecoder::conceal) instead.
    pub fn decode(&mut self, packet: &[u8], timestamp_us: u64) -> Result<AudioFrame, MediaError> {
        if packet.is_empty() {
            return Err(MediaError::CorruptFrame { codec: CODEC, message: "empty packet".into() });
        }
        let samples = self
            .decoder
            .decode(packet, &mut self.buffer, false)
            .map_err(|e| MediaError::CorruptFrame { codec: CODEC, message: e.to_string() })?;
        self.frame(samples, timestamp_us)
    }

    /// Produces `duration` of audio for a lost packet. With the packet that followed it (`next`), the
    /// in-band FEC copy it carries is decoded; without one (or if it has no FEC data) libopus extrapolates
    /// (packet-loss concealment). Decode `next` itself normally afterwards.
    pub fn conceal(
        &mut self,
        duration: FrameDuration,
        next: Option<&[u8]>,
        timestamp_us: u64,
    ) -> Result<AudioFrame, MediaError> {
        let needed = duration.samples_per_channel(AUDIO_SAMPLE_RATE) * usize::from(self.channels);
        let output = &mut self.buffer[..needed];
        let (input, fec) = match next {
            Some(packet) if !packet.is_empty() => (packet, true),
            _ => (&[][..], false),
        };
        let samples = self.decoder.decode(input, output, fec).map_err(|e| {
            debug!(error = %e, fec, "Opus concealment failed");
            MediaError::CorruptFrame { codec: CODEC, message: e.to_string() }
        })?;
        self.frame(samples, timestamp_us)
    }

    fn frame(&self, samples_per_channel: usize, timestamp_us: u64) -> Result<AudioFrame, MediaError> {
        let samples = self.buffer[..samples_per_channel * usize::from(self.channels)].to_vec();
        AudioFrame::new(samples, AUDIO_SAMPLE_RATE, self.channels, timestamp_us)
    }
}

fn opus_channels(channels: u16) -> Result<opus::Channels, MediaError> {
    match channels {
        1 => Ok(opus::Channels::Mono),
        2 => Ok(opus::Channels::Stereo),
        other => Err(MediaError::InvalidArgument(format!("Opus takes 1 or 2 channels, not {other}"))),
    }
}

fn codec_error(operation: &'static str, error: &opus::Error) -> MediaError {
    MediaError::Codec { codec: CODEC, operation, message: error.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(samples_per_channel: usize, channels: u16, timestamp_us: u64) -> AudioFrame {
        let samples = (0..samples_per_channel)
            .flat_map(|i| {
                let v = ((i as f64 * std::f64::consts::TAU * 440.0 / 48_000.0).sin() * 10_000.0) as i16;
                std::iter::repeat_n(v, usize::from(channels))
            })
            .collect();
        AudioFrame::new(samples, 48_000, channels, timestamp_us).unwrap()
    }

    #[test]
    fn reframes_input_into_packets_of_the_configured_duration() {
        let mut encoder = OpusEncoder::new(OpusConfig::default()).unwrap();
        // 10 ms frames into 20 ms packets: one packet every second frame, stamped with its first sample.
        assert!(encoder.encode(&tone(480, 1, 1_000)).unwrap().is_empty());
        let packets = encoder.encode(&tone(480, 1, 11_000)).unwrap();
        assert_eq!(packets.len(), 1);
        assert_eq!((packets[0].timestamp_us, packets[0].duration), (1_000, FrameDuration::Ms20));
        encoder.set_frame_duration(FrameDuration::Ms60);
        let packets = encoder.encode(&tone(2880 * 2, 1, 21_000)).unwrap();
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[1].timestamp_us, 81_000);
        let mut decoder = OpusDecoder::new(1).unwrap();
        assert_eq!(decoder.decode(&packets[0].data, 5).unwrap().samples_per_channel(), 2880);
    }

    #[test]
    fn rejects_bad_settings_and_input() {
        assert!(OpusEncoder::new(OpusConfig { channels: 3, ..OpusConfig::default() }).is_err());
        assert!(OpusEncoder::new(OpusConfig { bitrate_bps: 1000, ..OpusConfig::default() }).is_err());
        let mut encoder = OpusEncoder::new(OpusConfig::default()).unwrap();
        assert!(encoder.set_expected_loss(101).is_err());
        assert!(encoder.encode(&tone(960, 2, 0)).is_err());
        assert!(encoder.encode(&AudioFrame::silence(16_000, 1, 320, 0).unwrap()).is_err());
        let mut decoder = OpusDecoder::new(1).unwrap();
        assert!(decoder.decode(&[], 0).unwrap_err().to_string().contains("empty"));
    }

    #[test]
    fn stereo_round_trip_and_concealment_lengths() {
        let config = OpusConfig { channels: 2, bitrate_bps: 64_000, expected_loss_pct: 20, ..OpusConfig::default() };
        let mut encoder = OpusEncoder::new(config).unwrap();
        let mut decoder = OpusDecoder::new(2).unwrap();
        let packets: Vec<_> = (0..10).flat_map(|n| encoder.encode(&tone(960, 2, n * 20_000)).unwrap()).collect();
        assert_eq!(packets.len(), 10);
        let frame = decoder.decode(&packets[0].data, 0).unwrap();
        assert_eq!((frame.channels(), frame.samples_per_channel()), (2, 960));
        let plc = decoder.conceal(FrameDuration::Ms20, None, 20_000).unwrap();
        assert_eq!(plc.samples_per_channel(), 960);
        let fec = decoder.conceal(FrameDuration::Ms20, Some(&packets[2].data), 40_000).unwrap();
        assert_eq!((fec.samples_per_channel(), fec.timestamp_us()), (960, 40_000));
        assert_eq!(decoder.decode(&packets[2].data, 60_000).unwrap().samples_per_channel(), 960);
    }
}
