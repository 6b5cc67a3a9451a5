//! Choosing and opening the media a call sends: the `synthetic`/`camera`/`file:`/`none` video
//! and `tone`/`mic`/`file:`/`none` audio specs shared by the `duet` CLI and the desktop app.
//! A missing camera or microphone is a notice and the call goes on without it; an unreadable
//! file or a bad synthetic size is an error. A microphone is sent through the audio processing
//! stage (noise suppression and gain control; nothing is played here, so there is no echo: the
//! desktop app's devices, which play, are in [`crate::devices`]). Partner audio is discarded.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use duet_media::{
    AudioSource, CameraConfig, CameraSource, FrameDuration, MediaClock, MicrophoneConfig, MicrophoneSource,
    NullAudioSink, ProcessedSource, ProcessingConfig, ProcessingControls, SyntheticAudioSource, SyntheticVideoSource,
    VideoSink, VideoSource, WavSource, Y4mSource,
};

use crate::call::CallMedia;

/// What video to send.
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
    /// A camera, by index (`/dev/videoN` on Linux).
    Camera(u32),
    /// A Y4M file, looped.
    File(PathBuf),
    /// Receive only.
    None,
}

impl FromStr for VideoSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "camera" => Ok(Self::Camera(0)),
            "none" => Ok(Self::None),
            "synthetic" => Ok(Self::Synthetic { width: 640, height: 360, fps: 30 }),
            _ => {
                if let Some(path) = s.strip_prefix("file:") {
                    return Ok(Self::File(PathBuf::from(path)));
                }
                if let Some(index) = s.strip_prefix("camera:") {
                    return index.parse().map(Self::Camera).map_err(|_| format!("{index:?} is not a camera index"));
                }
                let spec = s.strip_prefix("synthetic:").ok_or_else(|| {
                    format!("unknown video {s:?}: use synthetic[:WxH[@FPS]], camera[:INDEX], file:PATH or none")
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

/// What audio to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSpec {
    /// A tone with a detectable marker.
    Tone,
    /// A microphone: a device id from [`duet_media::list_devices`], or the default.
    Mic(Option<String>),
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
            "mic" => Ok(Self::Mic(None)),
            "none" => Ok(Self::None),
            _ => {
                if let Some(id) = s.strip_prefix("mic:") {
                    return Ok(Self::Mic(Some(id.to_string())));
                }
                s.strip_prefix("file:")
                    .map(|p| Self::File(PathBuf::from(p)))
                    .ok_or_else(|| format!("unknown audio {s:?}: use tone, mic[:ID], file:PATH or none"))
            }
        }
    }
}

/// Media opened for a call, and what the user should be told about it.
pub struct OpenedMedia {
    /// Ready to hand to [`crate::call::Call::start`].
    pub media: CallMedia,
    /// E.g. "no camera: receive-only".
    pub notices: Vec<String>,
}

/// Opens the sources. Decoded partner video goes to `video_sink`; partner audio is discarded.
pub fn open(video: &VideoSpec, audio: &AudioSpec, video_sink: Box<dyn VideoSink>) -> Result<OpenedMedia, String> {
    let clock = MediaClock::unix_aligned();
    let mut notices = Vec::new();
    let video: Option<(Box<dyn VideoSource>, bool)> = match video {
        VideoSpec::Synthetic { width, height, fps } => {
            let src = SyntheticVideoSource::new(*width, *height, *fps, clock).map_err(|e| format!("video: {e}"))?;
            Some((Box::new(src), true))
        }
        VideoSpec::Camera(index) => {
            match CameraSource::open(CameraConfig { index: *index, ..CameraConfig::default() }, clock) {
                Ok(cam) => Some((Box::new(cam), false)),
                Err(e) => {
                    notices.push(format!("{e}; continuing without sending video (receive-only)"));
                    None
                }
            }
        }
        VideoSpec::File(path) => {
            let src = Y4mSource::open(path, clock).map_err(|e| format!("video: {e}"))?.looping(true);
            Some((Box::new(src), true))
        }
        VideoSpec::None => None,
    };
    let audio: Option<(Box<dyn AudioSource>, bool)> = match audio {
        AudioSpec::Tone => {
            let src = SyntheticAudioSource::new(1, FrameDuration::Ms20, clock).map_err(|e| format!("audio: {e}"))?;
            Some((Box::new(src), true))
        }
        AudioSpec::Mic(device) => {
            match MicrophoneSource::open(
                MicrophoneConfig { device: device.clone(), ..MicrophoneConfig::default() },
                clock,
            ) {
                Ok(mic) => {
                    let controls = Arc::new(ProcessingControls::new(ProcessingConfig::default()));
                    let mic = ProcessedSource::new(Box::new(mic), controls, None)
                        .map_err(|e| format!("audio processing: {e}"))?;
                    Some((Box::new(mic), false))
                }
                Err(e) => {
                    notices.push(format!("{e}; continuing without sending audio"));
                    None
                }
            }
        }
        AudioSpec::File(path) => {
            let src =
                WavSource::open(path, FrameDuration::Ms20, clock).map_err(|e| format!("audio: {e}"))?.looping(true);
            Some((Box::new(src), true))
        }
        AudioSpec::None => None,
    };
    let audio_sink = Box::new(NullAudioSink::new());
    Ok(OpenedMedia { media: CallMedia { video, audio, video_sink, audio_sink, clock }, notices })
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
        assert_eq!("camera:2".parse(), Ok(VideoSpec::Camera(2)));
        assert!("synthetic:huge".parse::<VideoSpec>().is_err());
        assert!("webcam".parse::<VideoSpec>().is_err());
        assert!("camera:x".parse::<VideoSpec>().is_err());
    }

    #[test]
    fn parses_audio_specs() {
        assert_eq!("tone".parse(), Ok(AudioSpec::Tone));
        assert_eq!("mic:hw:1".parse(), Ok(AudioSpec::Mic(Some("hw:1".into()))));
        assert_eq!("file:x.wav".parse(), Ok(AudioSpec::File("x.wav".into())));
        assert!("trumpet".parse::<AudioSpec>().is_err());
    }

    #[test]
    fn a_missing_camera_or_microphone_is_a_notice_not_an_error() {
        // This machine (and CI) has neither; on a machine with them this still must not fail.
        let opened = open(
            &VideoSpec::Camera(97),
            &AudioSpec::Mic(Some("no-such-microphone".into())),
            Box::new(crate::media::DiscardVideoSink),
        )
        .unwrap();
        assert!(opened.media.video.is_none());
        assert!(opened.media.audio.is_none());
        assert_eq!(opened.notices.len(), 2, "{:?}", opened.notices);
        assert!(opened.notices[0].contains("receive-only"));
    }

    #[test]
    fn a_bad_file_is_an_error() {
        let err = open(
            &VideoSpec::File("/nonexistent/clip.y4m".into()),
            &AudioSpec::None,
            Box::new(crate::media::DiscardVideoSink),
        )
        .err()
        .unwrap();
        assert!(err.starts_with("video: "), "{err}");
    }
}
