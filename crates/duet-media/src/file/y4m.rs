//! YUV4MPEG2 (`.y4m`) video files: a looping source and a writer sink.
//!
//! Reads 8-bit 4:2:0 files (`C420jpeg`, `C420paldv`, `C420mpeg2`, `C420`, or no `C` tag, which means 4:2:0);
//! other colour spaces and bit depths are refused with [`MediaError::UnsupportedFile`]. Chroma siting
//! differences between the 4:2:0 variants are ignored. Interlaced files are read as progressive frames.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::{FrameRate, MediaClock, MediaError, VideoFormat, VideoFrame, VideoSink, VideoSource};

const FORMAT: &str = "Y4M";
const MAGIC: &str = "YUV4MPEG2";
/// Longest header or frame-header line accepted (real ones are well under 100 bytes).
const MAX_LINE: usize = 4096;

/// Plays a Y4M file as a [`VideoSource`], optionally looping. Caller-paced: frames are stamped with the
/// clock's reading when pulled.
#[derive(Debug)]
pub struct Y4mSource {
    path: PathBuf,
    reader: BufReader<File>,
    format: VideoFormat,
    frame_size: usize,
    data_start: u64,
    looping: bool,
    clock: MediaClock,
    frames_read: u64,
}

impl Y4mSource {
    /// Opens `path` and parses its header.
    pub fn open(path: impl AsRef<Path>, clock: MediaClock) -> Result<Self, MediaError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| MediaError::io(&path, e))?;
        let mut reader = BufReader::new(file);
        let line = read_line(&mut reader, &path)?
            .ok_or_else(|| invalid(&path, "empty file, expected a YUV4MPEG2 header".to_owned()))?;
        let format = parse_header(&line, &path)?;
        let data_start = reader.stream_position().map_err(|e| MediaError::io(&path, e))?;
        let frame_size = VideoFrame::buffer_size(format.width, format.height)?;
        info!(path = %path.display(), width = format.width, height = format.height, rate = %format.frame_rate, "Y4M source opened");
        Ok(Self { path, reader, format, frame_size, data_start, looping: false, clock, frames_read: 0 })
    }

    /// Starts again from the first frame at the end of the file instead of ending.
    #[must_use]
    pub fn looping(mut self, looping: bool) -> Self {
        self.looping = looping;
        self
    }

    fn read_frame(&mut self) -> Result<Option<Vec<u8>>, MediaError> {
        let Some(line) = read_line(&mut self.reader, &self.path)? else {
            return Ok(None);
        };
        if line != "FRAME" && !line.starts_with("FRAME ") {
            return Err(invalid(
                &self.path,
                format!("frame {}: expected FRAME, found {:?}", self.frames_read, truncate(&line)),
            ));
        }
        let mut data = vec![0; self.frame_size];
        self.reader.read_exact(&mut data).map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof => invalid(
                &self.path,
                format!(
                    "frame {} is truncated (a {}x{} frame has {} bytes)",
                    self.frames_read, self.format.width, self.format.height, self.frame_size
                ),
            ),
            _ => MediaError::io(&self.path, e),
        })?;
        self.frames_read += 1;
        Ok(Some(data))
    }
}

impl VideoSource for Y4mSource {
    fn format(&self) -> VideoFormat {
        self.format
    }

    fn next_frame(&mut self) -> Result<Option<VideoFrame>, MediaError> {
        let data = match self.read_frame()? {
            Some(data) => data,
            None if self.looping && self.frames_read > 0 => {
                self.reader.seek(SeekFrom::Start(self.data_start)).map_err(|e| MediaError::io(&self.path, e))?;
                self.frames_read = 0;
                match self.read_frame()? {
                    Some(data) => data,
                    None => return Ok(None),
                }
            }
            None => return Ok(None),
        };
        VideoFrame::new(self.format.width, self.format.height, self.clock.now_us(), data).map(Some)
    }
}

/// Reads a `\n`-terminated line; `None` at end of file. Lines must be ASCII and at most `MAX_LINE` bytes.
fn read_line(reader: &mut BufReader<File>, path: &Path) -> Result<Option<String>, MediaError> {
    let mut line = Vec::new();
    let read =
        reader.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).map_err(|e| MediaError::io(path, e))?;
    if read == 0 {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err(invalid(path, format!("unterminated or over-long header line ({} bytes)", line.len() + 1)));
    }
    String::from_utf8(line).map(Some).map_err(|_| invalid(path, "header line is not text".to_owned()))
}

fn parse_header(line: &str, path: &Path) -> Result<VideoFormat, MediaError> {
    let mut tokens = line.split(' ').filter(|t| !t.is_empty());
    if tokens.next() != Some(MAGIC) {
        return Err(invalid(path, format!("missing YUV4MPEG2 signature, header starts {:?}", truncate(line))));
    }
    let (mut width, mut height, mut frame_rate) = (None, None, None);
    for token in tokens {
        let mut chars = token.chars();
        let (tag, value) = (chars.next(), chars.as_str());
        match tag {
            Some('W') => width = Some(parse_number(value, "width", path)?),
            Some('H') => height = Some(parse_number(value, "height", path)?),
            Some('F') => {
                let (num, den) = value
                    .split_once(':')
                    .ok_or_else(|| invalid(path, format!("frame rate {value:?} is not NUM:DEN")))?;
                let rate = FrameRate {
                    num: parse_number(num, "frame rate", path)?,
                    den: parse_number(den, "frame rate", path)?,
                };
                if rate.num == 0 || rate.den == 0 {
                    return Err(invalid(path, format!("frame rate {value} is zero or undefined")));
                }
                frame_rate = Some(rate);
            }
            Some('C') if !matches!(value, "420jpeg" | "420paldv" | "420mpeg2" | "420") => {
                return Err(MediaError::UnsupportedFile {
                    path: path.to_path_buf(),
                    format: FORMAT,
                    reason: format!(
                        "colour space C{value}; only 8-bit 4:2:0 (C420, C420jpeg, C420mpeg2, C420paldv) is read"
                    ),
                });
            }
            Some('I') if !matches!(value, "p" | "?") => {
                warn!(path = %path.display(), interlacing = value, "interlaced Y4M read as progressive frames");
            }
            // Interlacing "p"/"?", aspect ratio (A), comments (X) and unknown tags do not change the frames.
            _ => {}
        }
    }
    let width = width.ok_or_else(|| invalid(path, "header has no width (W)".to_owned()))?;
    let height = height.ok_or_else(|| invalid(path, "header has no height (H)".to_owned()))?;
    let frame_rate = frame_rate.ok_or_else(|| invalid(path, "header has no frame rate (F)".to_owned()))?;
    VideoFrame::buffer_size(width, height)
        .map_err(|_| invalid(path, format!("frame size {width}x{height} out of range")))?;
    Ok(VideoFormat { width, height, frame_rate })
}

fn parse_number(text: &str, what: &str, path: &Path) -> Result<u32, MediaError> {
    text.parse().map_err(|_| invalid(path, format!("{what} {text:?} is not a number")))
}

fn invalid(path: &Path, reason: String) -> MediaError {
    MediaError::InvalidFile { path: path.to_path_buf(), format: FORMAT, reason }
}

fn truncate(text: &str) -> String {
    text.chars().take(40).collect()
}

/// Writes frames to a Y4M file (`C420jpeg`): a [`VideoSink`] for recording what a call received.
///
/// Call [`finish`](Y4mWriter::finish) to flush and see write errors; dropping the writer flushes too but
/// can only log a failure.
#[derive(Debug)]
pub struct Y4mWriter {
    path: PathBuf,
    writer: Option<BufWriter<File>>,
    width: u32,
    height: u32,
}

impl Y4mWriter {
    /// Creates (or truncates) `path` for `width` x `height` frames at `frame_rate`.
    pub fn create(path: impl AsRef<Path>, width: u32, height: u32, frame_rate: FrameRate) -> Result<Self, MediaError> {
        VideoFrame::buffer_size(width, height)?;
        if frame_rate.num == 0 || frame_rate.den == 0 {
            return Err(MediaError::InvalidArgument(format!(
                "frame rate {}/{} is invalid",
                frame_rate.num, frame_rate.den
            )));
        }
        let path = path.as_ref().to_path_buf();
        let mut writer = BufWriter::new(File::create(&path).map_err(|e| MediaError::io(&path, e))?);
        writeln!(writer, "{MAGIC} W{width} H{height} F{}:{} Ip A1:1 C420jpeg", frame_rate.num, frame_rate.den)
            .map_err(|e| MediaError::io(&path, e))?;
        Ok(Self { path, writer: Some(writer), width, height })
    }

    /// Flushes everything to disk.
    pub fn finish(mut self) -> Result<(), MediaError> {
        self.flush()
    }

    fn flush(&mut self) -> Result<(), MediaError> {
        match self.writer.take() {
            Some(mut writer) => writer.flush().map_err(|e| MediaError::io(&self.path, e)),
            None => Ok(()),
        }
    }
}

impl VideoSink for Y4mWriter {
    fn render(&mut self, frame: VideoFrame) -> Result<(), MediaError> {
        if (frame.width(), frame.height()) != (self.width, self.height) {
            return Err(MediaError::InvalidArgument(format!(
                "{}x{} frame for a {}x{} Y4M file",
                frame.width(),
                frame.height(),
                self.width,
                self.height
            )));
        }
        let writer =
            self.writer.as_mut().ok_or_else(|| MediaError::InvalidArgument("Y4M writer is finished".into()))?;
        writer
            .write_all(b"FRAME\n")
            .and_then(|()| writer.write_all(frame.data()))
            .map_err(|e| MediaError::io(&self.path, e))
    }
}

impl Drop for Y4mWriter {
    fn drop(&mut self) {
        if let Err(error) = self.flush() {
            warn!(%error, "Y4M writer could not flush on drop");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(line: &str) -> Result<VideoFormat, MediaError> {
        parse_header(line, Path::new("test.y4m"))
    }

    #[test]
    fn parses_the_usual_headers() {
        let format = header("YUV4MPEG2 W640 H360 F30000:1001 Ip A1:1 C420jpeg XYSCSS=420JPEG").unwrap();
        assert_eq!((format.width, format.height), (640, 360));
        assert_eq!(format.frame_rate, FrameRate { num: 30_000, den: 1001 });
        assert!(header("YUV4MPEG2 W2 H2 F25:1").is_ok());
        assert!(header("YUV4MPEG2 W2 H2 F25:1 C420mpeg2 It").is_ok());
        assert!(header("YUV4MPEG2  W2 H2 F25:1 C420").is_ok());
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            "YUV4MPEG W2 H2 F1:1",
            "YUV4MPEG2 H2 F1:1",
            "YUV4MPEG2 W2 F1:1",
            "YUV4MPEG2 W2 H2",
            "YUV4MPEG2 Wx H2 F1:1",
            "YUV4MPEG2 W2 H2 F1",
            "YUV4MPEG2 W2 H2 F0:1",
            "YUV4MPEG2 W0 H2 F1:1",
        ] {
            assert!(matches!(header(bad), Err(MediaError::InvalidFile { .. })), "{bad}");
        }
        for unsupported in ["C444", "C422", "Cmono", "C420p10"] {
            let error = header(&format!("YUV4MPEG2 W2 H2 F1:1 {unsupported}")).unwrap_err();
            assert!(matches!(error, MediaError::UnsupportedFile { .. }), "{unsupported}");
            assert!(error.to_string().contains("test.y4m"));
        }
    }
}
