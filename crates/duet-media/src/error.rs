//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in duet-media.
///
/// Device variants ([`MediaError::NoCamera`], [`MediaError::NoMicrophone`], [`MediaError::NoSpeaker`]) mean
/// "carry on without this device" (receive-only video, muted audio, silent playback); see
/// [`MediaError::is_device_unavailable`]. Decoder variants that need a keyframe from the sender (PLI) are
/// recognised by [`MediaError::needs_keyframe`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// No camera is present, or the requested one cannot be opened. The call can go on receive-only.
    #[error("no camera available: {reason}")]
    NoCamera {
        /// What was found, for the user and the logs.
        reason: String,
    },
    /// No microphone is present, or the one present cannot be used (no usable configuration, busy...).
    #[error("no usable microphone: {reason}")]
    NoMicrophone {
        /// What was found, for the user and the logs.
        reason: String,
    },
    /// No speaker/output device is present or usable.
    #[error("no usable speaker: {reason}")]
    NoSpeaker {
        /// What was found, for the user and the logs.
        reason: String,
    },
    /// A device that was working stopped delivering (unplugged, stream error, stalled).
    #[error("{device} stopped working: {reason}")]
    DeviceLost {
        /// "camera", "microphone" or "speaker", with the device name when known.
        device: String,
        /// What happened.
        reason: String,
    },
    /// A file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A media file is malformed (bad header, truncated data).
    #[error("{}: invalid {format} file: {reason}", path.display())]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// "Y4M" or "WAV".
        format: &'static str,
        /// What is wrong, with the offending value.
        reason: String,
    },
    /// A media file is well formed but uses a variant this crate does not read (e.g. 4:4:4 video, float audio).
    #[error("{}: unsupported {format} file: {reason}", path.display())]
    UnsupportedFile {
        /// The file.
        path: PathBuf,
        /// "Y4M" or "WAV".
        format: &'static str,
        /// What is unsupported and what is supported instead.
        reason: String,
    },
    /// A caller-supplied value is out of range or inconsistent (frame size, sample rate, bitrate...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A codec library call failed for a reason other than bad input data.
    #[error("{codec} {operation} failed: {message}")]
    Codec {
        /// "VP8" or "Opus".
        codec: &'static str,
        /// The operation, e.g. "encoder init".
        operation: &'static str,
        /// The library's message.
        message: String,
    },
    /// The decoder could not decode a frame (corrupt, truncated or garbage data). Request a keyframe.
    #[error("corrupt or undecodable {codec} frame: {message}")]
    CorruptFrame {
        /// "VP8" or "Opus".
        codec: &'static str,
        /// The library's message.
        message: String,
    },
    /// The VP8 decoder has no valid reference (start of stream or after an error) and dropped a delta frame.
    /// Request a keyframe.
    #[error("VP8 decoder is waiting for a keyframe; delta frame dropped")]
    KeyframeRequired,
    /// A VP8 keyframe declares a picture larger than [`crate::MAX_DECODE_PIXELS`]: refused before decoding,
    /// and delta frames after it too. Not a [`MediaError::needs_keyframe`] error: a keyframe of the same
    /// size would be refused again.
    #[error("VP8 keyframe of {width}x{height} refused (larger than the decoder accepts)")]
    FrameTooLarge {
        /// The declared width.
        width: u32,
        /// The declared height.
        height: u32,
    },
}

impl MediaError {
    /// True for "this device is absent or unusable": the caller should fall back (receive-only, muted, silent).
    #[must_use]
    pub fn is_device_unavailable(&self) -> bool {
        matches!(self, Self::NoCamera { .. } | Self::NoMicrophone { .. } | Self::NoSpeaker { .. })
    }

    /// True when the remote sender should be asked for a keyframe (RTCP PLI) before decoding can resume.
    #[must_use]
    pub fn needs_keyframe(&self) -> bool {
        matches!(self, Self::KeyframeRequired | Self::CorruptFrame { codec: "VP8", .. })
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}
