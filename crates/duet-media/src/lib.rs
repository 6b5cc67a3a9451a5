//! Duet media: where call audio and video come from, how they are coded, and where they go.
//!
//! - Frames: [`VideoFrame`] (I420) and [`AudioFrame`] (interleaved 16-bit PCM), stamped in microseconds on a
//!   [`MediaClock`].
//! - Sources ([`VideoSource`], [`AudioSource`]): [`SyntheticVideoSource`] (test pattern with a
//!   machine-readable [`Marker`]), [`SyntheticAudioSource`] (tone with marker bursts found by
//!   [`AudioMarkerDetector`]), [`Y4mSource`], [`WavSource`], and with the default features `CameraSource`
//!   (nokhwa) and `MicrophoneSource` (cpal).
//! - Codecs: [`Vp8Encoder`] / [`Vp8Decoder`] (system libvpx, real-time settings), [`OpusEncoder`] /
//!   [`OpusDecoder`] (system libopus, FEC and concealment).
//! - Sinks ([`VideoSink`], [`AudioSink`]): [`MarkerCheckSink`] (counts frames, losses and latency),
//!   [`Y4mWriter`], [`WavWriter`], [`NullAudioSink`], and `SpeakerSink` (cpal, jitter buffer) chosen by
//!   `open_audio_sink`, which falls back to the null sink on machines without sound.
//! - Audio processing: [`AudioProcessor`] (echo cancellation, noise suppression, gain control; sonora) and
//!   [`process_wav_files`], the same offline.
//! - Helpers: [`scale_i420`], the [`convert`] module (camera pixel formats to I420), [`Resampler`].
//! - Devices: [`list_devices`]. A machine without a camera or microphone gets [`MediaError::NoCamera`] /
//!   [`MediaError::NoMicrophone`] (see [`MediaError::is_device_unavailable`]), never a panic.
//!
//! Features: `camera` (nokhwa; needs libclang and nasm to build) and `audio-device` (cpal; needs ALSA
//! headers on Linux), both on by default. Without them the crate still encodes, decodes and plays files and
//! synthetic media, which is all a headless bot needs.

mod apm;
mod clock;
pub mod codec;
pub mod convert;
pub mod device;
mod echo_reference;
mod error;
pub mod file;
mod frame;
mod marker;
mod processed;
mod resample;
mod scale;
mod sink;
mod source;
pub mod synthetic;

pub use apm::{
    AudioProcessor, PROCESSING_FRAME, ProcessingConfig, ProcessingReport, ProcessingStats, process_wav_files,
};
pub use clock::MediaClock;
pub use codec::opus::{EncodedAudio, OpusConfig, OpusDecoder, OpusEncoder};
pub use codec::vp8::{
    EncodedFrame, MAX_DECODE_PIXELS, Vp8Config, Vp8Decoder, Vp8Encoder, is_vp8_keyframe, vp8_keyframe_size,
};
#[cfg(feature = "camera")]
pub use device::camera::{CameraConfig, CameraSource};
#[cfg(feature = "audio-device")]
pub use device::microphone::{MicrophoneConfig, MicrophoneSource};
#[cfg(feature = "audio-device")]
pub use device::playout::PlayoutStats;
#[cfg(feature = "audio-device")]
pub use device::speaker::{SpeakerConfig, SpeakerSink, open_audio_sink};
pub use device::{DeviceInfo, Devices, list_devices};
pub use echo_reference::EchoReference;
pub use error::MediaError;
pub use file::wav::{WavSource, WavWriter};
pub use file::y4m::{Y4mSource, Y4mWriter};
pub use frame::{
    AUDIO_SAMPLE_RATE, AudioFormat, AudioFrame, FrameDuration, FrameRate, MAX_DIMENSION, VideoFormat, VideoFrame,
};
pub use marker::{MARKER_MIN_HEIGHT, MARKER_MIN_WIDTH, Marker, marker_height, read_marker, write_marker};
pub use processed::{ProcessedSource, ProcessingControls, SILENCE_DBFS, rms_dbfs};
pub use resample::Resampler;
pub use scale::scale_i420;
pub use sink::{AudioSink, LatencySummary, MarkerCheckSink, MarkerReport, NullAudioSink, VideoSink};
pub use source::{AudioSource, VideoSource};
pub use synthetic::audio::{AudioMarker, AudioMarkerDetector, SyntheticAudioSource};
pub use synthetic::video::SyntheticVideoSource;
