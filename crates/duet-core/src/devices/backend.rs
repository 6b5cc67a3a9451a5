//! Where devices come from: the system's (cpal, nokhwa) or, in tests, a scripted set.

use std::sync::Arc;

use duet_media::{
    AudioSink, AudioSource, CameraConfig, CameraSource, DeviceInfo, Devices, EchoReference, MediaClock, MediaError,
    MicrophoneConfig, MicrophoneSource, SpeakerConfig, SpeakerSink, VideoSource,
};

/// Lists and opens capture and playback devices.
pub trait DeviceBackend: Send + Sync {
    /// The devices present now.
    fn list(&self) -> Devices;
    /// Opens a camera (`None`: the first).
    fn open_camera(&self, device: Option<&DeviceInfo>, clock: MediaClock) -> Result<Box<dyn VideoSource>, MediaError>;
    /// Opens a microphone (`None`: the default); 48 kHz mono frames that pace themselves.
    fn open_microphone(
        &self,
        device: Option<&DeviceInfo>,
        clock: MediaClock,
    ) -> Result<Box<dyn AudioSource>, MediaError>;
    /// Opens a speaker (`None`: the default) that reports what it plays to `echo_reference`.
    fn open_speaker(
        &self,
        device: Option<&DeviceInfo>,
        echo_reference: Arc<EchoReference>,
    ) -> Result<Box<dyn AudioSink>, MediaError>;
}

/// The machine's own devices.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemDevices;

impl DeviceBackend for SystemDevices {
    fn list(&self) -> Devices {
        duet_media::list_devices()
    }

    fn open_camera(&self, device: Option<&DeviceInfo>, clock: MediaClock) -> Result<Box<dyn VideoSource>, MediaError> {
        let index = device.and_then(|d| d.id.parse().ok()).unwrap_or(0);
        Ok(Box::new(CameraSource::open(CameraConfig { index, ..CameraConfig::default() }, clock)?))
    }

    fn open_microphone(
        &self,
        device: Option<&DeviceInfo>,
        clock: MediaClock,
    ) -> Result<Box<dyn AudioSource>, MediaError> {
        let config = MicrophoneConfig { device: device.map(|d| d.id.clone()), ..MicrophoneConfig::default() };
        Ok(Box::new(MicrophoneSource::open(config, clock)?))
    }

    fn open_speaker(
        &self,
        device: Option<&DeviceInfo>,
        echo_reference: Arc<EchoReference>,
    ) -> Result<Box<dyn AudioSink>, MediaError> {
        let config = SpeakerConfig {
            device: device.map(|d| d.id.clone()),
            echo_reference: Some(echo_reference),
            ..SpeakerConfig::default()
        };
        Ok(Box::new(SpeakerSink::open(config)?))
    }
}
