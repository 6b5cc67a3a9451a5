//! Opening the media a `duet` command sends: parsing `--video`/`--audio` and falling back
//! from missing devices (with a notice) while refusing bad files (with an error).

use std::path::PathBuf;
use std::str::FromStr;

use duet_core::call::CallMedia;
use duet_core::media::DiscardVideoSink;
use duet_media::{
    AudioSource, CameraConfig, CameraSource, FrameDuration, MediaClock, MicrophoneConfig, MicrophoneSource,
    NullAudioSink, SpeakerConfig, SyntheticAudioSource, SyntheticVideoSource, VideoSource, WavSource, Y4mSource,
    open_audio_sink,
};

use crate::output::Printer;

/// `--video`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoSpec {
    /// Moving test pattern with a frame marker.
    Synthetic {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Frames per second.
        fps: u32,
    },
    /// The first camera.
    Camera,
    /// A Y4M file, looped.
    File(PathBuf),
    /// Receive only.
    None,
}

impl FromStr for VideoSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "camera" => Ok(Self::Camera),
            "none" => Ok(Self::None),
            "synthetic" => Ok(Self::Synthetic { width: 640, height: 360, fps: 30 }),
            _ => {
                if let Some(path) = s.strip_prefix("file:") {
                    return Ok(Self::File(PathBuf::from(path)));
                }
                let spec = s.strip_prefix("synthetic:").ok_or_else(|| {
                    format!("unknown video {s:?}: use synthetic[:WxH[@FPS]], camera, file:PATH or none")
                })?;
                let (size, fps) = spec.split_once('@').unwrap_or((spec, "30"));
                let (w, h) =
                    size.split_once('x').ok_or_else(|| format!("bad size {size:?}: use WxH, e.g. 1280x720"))?;
                let num = |v: &str| v.parse::<u32>().map_err(|_| format!("{v:?} is not a number"));
                Ok(Self::Synthetic { width: num(w)?, height: num(h)?, fps: num(fps)? })
            }
        }
    }
}

/// `--audio`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSpec {
    /// A tone with a detectable marker.
    Tone,
    /// The default microphone.
    Mic,
    /// A WAV file, looped.
    File(PathBuf),
    /// Listen only.
    None,
}

impl FromStr for AudioSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tone" => Ok(Self::Tone),
            "mic" => Ok(Self::Mic),
            "none" => Ok(Self::None),
            _ => s
                .strip_prefix("file:")
                .map(|p| Self::File(PathBuf::from(p)))
                .ok_or_else(|| format!("unknown audio {s:?}: use tone, mic, file:PATH or none")),
        }
    }
}

/// Opens the sources and sinks. A missing camera or microphone is a notice and the call goes
/// on without it; an unreadable file is an error.
pub fn open(video: &VideoSpec, audio: &AudioSpec, speaker: bool, out: &mut Printer) -> Result<CallMedia, String> {
    let clock = MediaClock::unix_aligned();
    let video: Option<(Box<dyn VideoSource>, bool)> = match video {
        VideoSpec::Synthetic { width, height, fps } => {
            let src = SyntheticVideoSource::new(*width, *height, *fps, clock).map_err(|e| format!("--video: {e}"))?;
            Some((Box::new(src), true))
        }
        VideoSpec::Camera => match CameraSource::open(CameraConfig::default(), clock) {
            Ok(cam) => Some((Box::new(cam), false)),
            Err(e) => {
                out.notice(&format!("{e}; continuing without sending video (receive-only)"));
                None
            }
        },
        VideoSpec::File(path) => {
            let src = Y4mSource::open(path, clock).map_err(|e| format!("--video: {e}"))?.looping(true);
            Some((Box::new(src), true))
        }
        VideoSpec::None => None,
    };
    let audio: Option<(Box<dyn AudioSource>, bool)> = match audio {
        AudioSpec::Tone => {
            let src = SyntheticAudioSource::new(1, FrameDuration::Ms20, clock).map_err(|e| format!("--audio: {e}"))?;
            Some((Box::new(src), true))
        }
        AudioSpec::Mic => match MicrophoneSource::open(MicrophoneConfig::default(), clock) {
            Ok(mic) => Some((Box::new(mic), false)),
            Err(e) => {
                out.notice(&format!("{e}; continuing without sending audio"));
                None
            }
        },
        AudioSpec::File(path) => {
            let src =
                WavSource::open(path, FrameDuration::Ms20, clock).map_err(|e| format!("--audio: {e}"))?.looping(true);
            Some((Box::new(src), true))
        }
        AudioSpec::None => None,
    };
    let audio_sink = if speaker { open_audio_sink(SpeakerConfig::default()) } else { Box::new(NullAudioSink::new()) };
    Ok(CallMedia { video, audio, video_sink: Box::new(DiscardVideoSink), audio_sink, clock })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_video_specs() {
        assert_eq!("synthetic".parse(), Ok(VideoSpec::Synthetic { width: 640, height: 360, fps: 30 }));
        assert_eq!("synthetic:1280x720@15".parse(), Ok(VideoSpec::Synthetic { width: 1280, height: 720, fps: 15 }));
        assert_eq!("synthetic:320x180".parse(), Ok(VideoSpec::Synthetic { width: 320, height: 180, fps: 30 }));
        assert_eq!("file:/tmp/a.y4m".parse(), Ok(VideoSpec::File("/tmp/a.y4m".into())));
        assert!("synthetic:huge".parse::<VideoSpec>().is_err());
        assert!("webcam".parse::<VideoSpec>().is_err());
    }

    #[test]
    fn parses_audio_specs() {
        assert_eq!("tone".parse(), Ok(AudioSpec::Tone));
        assert_eq!("file:x.wav".parse(), Ok(AudioSpec::File("x.wav".into())));
        assert!("trumpet".parse::<AudioSpec>().is_err());
    }
}
