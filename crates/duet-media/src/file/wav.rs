//! WAV (RIFF/WAVE) audio files: a looping source resampled to 48 kHz, and a writer sink.
//!
//! Reads 16-bit integer PCM (format tag 1, or WAVE_FORMAT_EXTENSIBLE with the PCM sub-format), mono or
//! stereo, at 8 to 192 kHz; other rates than 48 kHz go through the crate's windowed-sinc [`Resampler`].
//! Float, 8/24/32-bit, compressed and multichannel files are refused with [`MediaError::UnsupportedFile`].

use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::frame::samples_to_us;
use crate::{
    AUDIO_SAMPLE_RATE, AudioFormat, AudioFrame, AudioSink, AudioSource, FrameDuration, MediaClock, MediaError,
    Resampler,
};

const FORMAT: &str = "WAV";
const PCM: u16 = 1;
const FLOAT: u16 = 3;
const EXTENSIBLE: u16 = 0xFFFE;
/// Input bytes read per refill.
const READ_CHUNK: usize = 8192;

/// Plays a WAV file as an [`AudioSource`] of 48 kHz frames, optionally looping. Caller-paced; timestamps are
/// sample-accurate from the first pull. The last frame is padded with silence.
#[derive(Debug)]
pub struct WavSource {
    path: PathBuf,
    reader: BufReader<File>,
    data_start: u64,
    data_len: u64,
    data_read: u64,
    file_rate: u32,
    format: AudioFormat,
    resampler: Resampler,
    pending: Vec<i16>,
    looping: bool,
    clock: MediaClock,
    start_us: Option<u64>,
    samples_out: u64,
}

/// The parts of a `fmt ` chunk this reader uses.
#[derive(Debug)]
struct WavFormat {
    channels: u16,
    sample_rate: u32,
}

impl WavSource {
    /// Opens `path`, parses its header and prepares `frame_duration` frames at 48 kHz.
    pub fn open(path: impl AsRef<Path>, frame_duration: FrameDuration, clock: MediaClock) -> Result<Self, MediaError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| MediaError::io(&path, e))?;
        let file_len = file.metadata().map_err(|e| MediaError::io(&path, e))?.len();
        let mut reader = BufReader::new(file);
        let (wav, data_start, data_len) = parse_header(&mut reader, &path, file_len)?;
        let resampler = Resampler::new(wav.sample_rate, AUDIO_SAMPLE_RATE, wav.channels)?;
        info!(
            path = %path.display(),
            rate = wav.sample_rate,
            channels = wav.channels,
            seconds = data_len as f64 / f64::from(wav.sample_rate * u32::from(wav.channels) * 2),
            "WAV source opened"
        );
        Ok(Self {
            path,
            reader,
            data_start,
            data_len,
            data_read: 0,
            file_rate: wav.sample_rate,
            format: AudioFormat { sample_rate: AUDIO_SAMPLE_RATE, channels: wav.channels, frame_duration },
            resampler,
            pending: Vec::new(),
            looping: false,
            clock,
            start_us: None,
            samples_out: 0,
        })
    }

    /// Starts again from the beginning at the end of the file instead of ending.
    #[must_use]
    pub fn looping(mut self, looping: bool) -> Self {
        self.looping = looping;
        self
    }

    /// The file's own sample rate (frames come out at 48 kHz regardless).
    #[must_use]
    pub fn file_sample_rate(&self) -> u32 {
        self.file_rate
    }

    /// Reads and resamples the next chunk; false at the end of the data (after rewinding when looping).
    fn refill(&mut self) -> Result<bool, MediaError> {
        if self.data_read >= self.data_len {
            if !self.looping || self.data_len == 0 {
                return Ok(false);
            }
            self.reader.seek(SeekFrom::Start(self.data_start)).map_err(|e| MediaError::io(&self.path, e))?;
            self.data_read = 0;
        }
        let block = 2 * usize::from(self.format.channels);
        let want = (self.data_len - self.data_read).min(READ_CHUNK as u64) as usize / block * block;
        let mut bytes = vec![0; want];
        self.reader.read_exact(&mut bytes).map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof => invalid(&self.path, "data chunk is shorter than its header says".to_owned()),
            _ => MediaError::io(&self.path, e),
        })?;
        // A trailing partial sample frame (a malformed size) is skipped.
        self.data_read += if want == 0 { self.data_len - self.data_read } else { want as u64 };
        let samples: Vec<i16> = bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
        self.resampler.process(&samples, &mut self.pending);
        Ok(true)
    }
}

impl AudioSource for WavSource {
    fn format(&self) -> AudioFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<Option<AudioFrame>, MediaError> {
        let channels = usize::from(self.format.channels);
        let needed = self.format.frame_duration.samples_per_channel(AUDIO_SAMPLE_RATE) * channels;
        while self.pending.len() < needed {
            if !self.refill()? {
                if self.pending.is_empty() {
                    return Ok(None);
                }
                self.pending.resize(needed, 0);
            }
        }
        let samples: Vec<i16> = self.pending.drain(..needed).collect();
        let start = *self.start_us.get_or_insert_with(|| self.clock.now_us());
        let timestamp = start + samples_to_us(self.samples_out, AUDIO_SAMPLE_RATE);
        self.samples_out += (needed / channels) as u64;
        AudioFrame::new(samples, AUDIO_SAMPLE_RATE, self.format.channels, timestamp).map(Some)
    }
}

/// Parses the RIFF header up to the data chunk; returns the format, the data offset and its length.
fn parse_header(reader: &mut BufReader<File>, path: &Path, file_len: u64) -> Result<(WavFormat, u64, u64), MediaError> {
    let mut riff = [0u8; 12];
    read_exact(reader, &mut riff, path, "RIFF header")?;
    if &riff[..4] != b"RIFF" || &riff[8..] != b"WAVE" {
        return Err(invalid(path, "missing RIFF/WAVE signature".to_owned()));
    }
    let mut format = None;
    let mut position = 12u64;
    loop {
        let mut header = [0u8; 8];
        read_exact(reader, &mut header, path, "chunk header (no data chunk found)")?;
        position += 8;
        let size = u64::from(u32::from_le_bytes([header[4], header[5], header[6], header[7]]));
        match &header[..4] {
            b"fmt " => {
                if size < 16 {
                    return Err(invalid(path, format!("fmt chunk of {size} bytes, at least 16 expected")));
                }
                let mut body = vec![0u8; size.min(64) as usize];
                read_exact(reader, &mut body, path, "fmt chunk")?;
                skip(reader, path, size + (size & 1) - body.len() as u64)?;
                format = Some(parse_fmt(&body, path)?);
            }
            b"data" => {
                let format = format.ok_or_else(|| invalid(path, "data chunk before the fmt chunk".to_owned()))?;
                let available = file_len.saturating_sub(position);
                if size > available {
                    // Streaming writers leave 0xFFFFFFFF (or a stale size): use what the file holds.
                    warn!(path = %path.display(), declared = size, available, "WAV data size exceeds the file; reading to the end");
                }
                return Ok((format, position, size.min(available)));
            }
            _ => skip(reader, path, size + (size & 1))?,
        }
        position += size + (size & 1);
    }
}

fn parse_fmt(body: &[u8], path: &Path) -> Result<WavFormat, MediaError> {
    let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
    let tag = u16_at(0);
    let channels = u16_at(2);
    let sample_rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
    let block_align = u16_at(12);
    let bits = u16_at(14);
    let is_pcm = match tag {
        PCM => true,
        // WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts at byte 24 with the format tag.
        EXTENSIBLE => body.len() >= 26 && u16_at(24) == PCM,
        _ => false,
    };
    let unsupported = |reason: String| MediaError::UnsupportedFile { path: path.to_path_buf(), format: FORMAT, reason };
    if !is_pcm {
        let kind = if tag == FLOAT || (tag == EXTENSIBLE && body.len() >= 26 && u16_at(24) == FLOAT) {
            "floating-point samples".to_owned()
        } else {
            format!("format tag {tag:#06x}")
        };
        return Err(unsupported(format!("{kind}; only 16-bit integer PCM is read")));
    }
    if bits != 16 {
        return Err(unsupported(format!("{bits}-bit samples; only 16-bit PCM is read")));
    }
    if !(1..=2).contains(&channels) {
        return Err(unsupported(format!("{channels} channels; only mono and stereo are read")));
    }
    if !(8_000..=192_000).contains(&sample_rate) {
        return Err(invalid(path, format!("sample rate {sample_rate} Hz out of range (8000..=192000)")));
    }
    if block_align != channels * 2 {
        return Err(invalid(path, format!("block align {block_align} does not match {channels} x 16-bit")));
    }
    Ok(WavFormat { channels, sample_rate })
}

fn read_exact(reader: &mut BufReader<File>, buffer: &mut [u8], path: &Path, what: &str) -> Result<(), MediaError> {
    reader.read_exact(buffer).map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => invalid(path, format!("file ends inside the {what}")),
        _ => MediaError::io(path, e),
    })
}

fn skip(reader: &mut BufReader<File>, path: &Path, bytes: u64) -> Result<(), MediaError> {
    let offset = i64::try_from(bytes).map_err(|_| invalid(path, format!("chunk size {bytes} too large")))?;
    reader.seek_relative(offset).map_err(|e| MediaError::io(path, e))
}

fn invalid(path: &Path, reason: String) -> MediaError {
    MediaError::InvalidFile { path: path.to_path_buf(), format: FORMAT, reason }
}

/// Writes 16-bit PCM to a WAV file: an [`AudioSink`] for recording what a call received.
///
/// The sizes in the header are filled in by [`finish`](WavWriter::finish) (or, best effort, on drop).
#[derive(Debug)]
pub struct WavWriter {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
    sample_rate: u32,
    channels: u16,
    data_bytes: u64,
}

impl WavWriter {
    /// Creates (or truncates) `path` for `channels`-channel audio at `sample_rate` Hz.
    pub fn create(path: impl AsRef<Path>, sample_rate: u32, channels: u16) -> Result<Self, MediaError> {
        crate::frame::validate_audio_params(sample_rate, channels)?;
        let path = path.as_ref().to_path_buf();
        let mut writer = BufWriter::new(File::create(&path).map_err(|e| MediaError::io(&path, e))?);
        writer.write_all(&wav_header(sample_rate, channels, 0)).map_err(|e| MediaError::io(&path, e))?;
        Ok(Self { path, writer: Some(writer), sample_rate, channels, data_bytes: 0 })
    }

    /// Writes the final sizes into the header and flushes.
    pub fn finish(mut self) -> Result<(), MediaError> {
        self.close()
    }

    fn close(&mut self) -> Result<(), MediaError> {
        let Some(mut writer) = self.writer.take() else {
            return Ok(());
        };
        let data_bytes = u32::try_from(self.data_bytes).unwrap_or(u32::MAX);
        let header = wav_header(self.sample_rate, self.channels, data_bytes);
        writer
            .seek(SeekFrom::Start(0))
            .and_then(|_| writer.write_all(&header))
            .and_then(|()| writer.flush())
            .map_err(|e| MediaError::io(&self.path, e))
    }
}

impl AudioSink for WavWriter {
    fn play(&mut self, frame: &AudioFrame) -> Result<(), MediaError> {
        if frame.sample_rate() != self.sample_rate || frame.channels() != self.channels {
            return Err(MediaError::InvalidArgument(format!(
                "{} Hz {}-channel frame for a {} Hz {}-channel WAV file",
                frame.sample_rate(),
                frame.channels(),
                self.sample_rate,
                self.channels
            )));
        }
        let writer =
            self.writer.as_mut().ok_or_else(|| MediaError::InvalidArgument("WAV writer is finished".into()))?;
        let bytes: Vec<u8> = frame.samples().iter().flat_map(|s| s.to_le_bytes()).collect();
        writer.write_all(&bytes).map_err(|e| MediaError::io(&self.path, e))?;
        self.data_bytes += bytes.len() as u64;
        Ok(())
    }
}

impl Drop for WavWriter {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            warn!(%error, "WAV writer could not finish on drop");
        }
    }
}

/// A 44-byte canonical PCM header for `data_bytes` of 16-bit samples.
fn wav_header(sample_rate: u32, channels: u16, data_bytes: u32) -> [u8; 44] {
    let block_align = channels * 2;
    let mut header = [0u8; 44];
    let fields: [&[u8]; 13] = [
        b"RIFF",
        &data_bytes.saturating_add(36).to_le_bytes(),
        b"WAVEfmt ",
        &16u32.to_le_bytes(),
        &PCM.to_le_bytes(),
        &channels.to_le_bytes(),
        &sample_rate.to_le_bytes(),
        &(sample_rate * u32::from(block_align)).to_le_bytes(),
        &block_align.to_le_bytes(),
        &16u16.to_le_bytes(),
        b"data",
        &data_bytes.to_le_bytes(),
        &[],
    ];
    let mut offset = 0;
    for field in fields {
        header[offset..offset + field.len()].copy_from_slice(field);
        offset += field.len();
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt_body(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let align = channels * bits / 8;
        let mut body = Vec::new();
        for field in [
            &tag.to_le_bytes()[..],
            &channels.to_le_bytes(),
            &rate.to_le_bytes(),
            &(rate * u32::from(align)).to_le_bytes(),
            &align.to_le_bytes(),
            &bits.to_le_bytes(),
        ] {
            body.extend_from_slice(field);
        }
        body
    }

    #[test]
    fn fmt_chunk_checks() {
        let path = Path::new("x.wav");
        assert!(parse_fmt(&fmt_body(PCM, 2, 44_100, 16), path).is_ok());
        let cases = [
            (FLOAT, 1, 48_000, 32, "floating"),
            (PCM, 1, 48_000, 8, "8-bit"),
            (PCM, 6, 48_000, 16, "6 channels"),
            (0x0006, 1, 8000, 8, "0x0006"),
        ];
        for (tag, channels, rate, bits, text) in cases {
            let error = parse_fmt(&fmt_body(tag, channels, rate, bits), path).unwrap_err();
            assert!(matches!(error, MediaError::UnsupportedFile { .. }), "{error}");
            assert!(error.to_string().contains(text), "{error}");
        }
        let mut extensible = fmt_body(EXTENSIBLE, 1, 16_000, 16);
        extensible.extend_from_slice(&[22, 0, 16, 0, 4, 0, 0, 0, 1, 0]);
        assert!(parse_fmt(&extensible, path).is_ok());
        assert!(matches!(parse_fmt(&fmt_body(PCM, 1, 4_000, 16), path), Err(MediaError::InvalidFile { .. })));
    }

    #[test]
    fn header_layout() {
        let header = wav_header(48_000, 2, 1000);
        assert_eq!(&header[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(header[4..8].try_into().unwrap()), 1036);
        assert_eq!(&header[8..16], b"WAVEfmt ");
        assert_eq!(u32::from_le_bytes(header[28..32].try_into().unwrap()), 192_000);
        assert_eq!(&header[36..40], b"data");
        assert_eq!(u32::from_le_bytes(header[40..44].try_into().unwrap()), 1000);
    }
}
